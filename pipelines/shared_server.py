"""One Prefect API server for a whole command (``dvc repro``) instead of one temporary server per
stage: ``python -m pipelines.shared_server -- dvc repro``.

Every stage is a Prefect flow; without ``PREFECT_API_URL`` each stage process starts Prefect's
temporary server and waits for it (about 8–10 s of a light stage's 14–16 s on 2 cores,
``benchmarks/profile_study.py``). Here one ``prefect server start`` serves every stage of the
command, on a free local port and the project's ``PREFECT_HOME`` (the same database the temporary
servers use, so the runs appear in one UI), and is stopped on every exit path: the command's
end, its failure, SIGINT/SIGTERM, and only once no process of the command's group runs (a
stage outliving an interrupted dvc still reports to it). A ``PREFECT_API_URL`` already set is
used as it is. ``python -m pipelines.shared_server --ui`` serves the Prefect UI on the same
``PREFECT_HOME`` at http://127.0.0.1:4200 until stopped.

Standard library only: it runs before anything heavy is imported.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import pipelines  # noqa: F401  (Prefect's environment defaults: PREFECT_HOME, analytics off)
from pipelines.failures import process_group_alive

STARTUP_TIMEOUT_S = 180.0
"""As for the temporary server (``pipelines/__init__.py``): a loaded 2-core machine is slow."""

GROUP_GRACE_S = 120.0
"""How long the server outlives the command for processes of its group still running: on
SIGTERM dvc exits at once while its stage writes its checkpoint and reports its final state
to the server (without it the stage hung, retrying a server that was gone)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (the CLI and its uvicorn), SIGKILL after 10 s."""
    if server.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_for_group(pgid: int, timeout: float = GROUP_GRACE_S) -> None:
    """Wait until no process of group ``pgid`` runs; SIGKILL what is left after ``timeout``."""
    deadline = time.monotonic() + timeout
    while process_group_alive(pgid):
        if time.monotonic() > deadline:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        time.sleep(0.2)


@contextmanager
def prefect_server(port: int | None = None, timeout: float = STARTUP_TIMEOUT_S) -> Iterator[str]:
    """Start ``prefect server start`` and yield its API URL once it answers; stop it on exit."""
    port = port or free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    os.makedirs(os.environ["PREFECT_HOME"], exist_ok=True)
    log = open(os.path.join(os.environ["PREFECT_HOME"], "shared-server.log"), "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not healthy(api_url):
            if server.poll() is not None:
                raise RuntimeError(f"the Prefect server exited with {server.returncode} before answering at {api_url}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server did not answer at {api_url} within {timeout:.0f} s")
            time.sleep(0.25)
        yield api_url
    finally:
        _stop(server)
        log.close()


def run(command: Sequence[str]) -> int:
    """Run ``command`` with ``PREFECT_API_URL`` pointing at one shared server (the one already
    configured, else one started here); its exit status. SIGINT/SIGTERM reach the command's
    process group (its stages stop cleanly and keep their checkpoints), then the server stops."""
    if not command:
        raise SystemExit(USAGE)
    child: subprocess.Popen | None = None
    received: list[int] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        if child is not None:
            try:  # the whole group, as a terminal does: dvc ignores SIGINT and leaves it to its stage
                os.killpg(child.pid, signum)
            except ProcessLookupError:
                pass

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    configured = os.environ.get("PREFECT_API_URL")
    with nullcontext(configured) if configured else prefect_server() as api_url:
        if received:  # interrupted while the server started: the command never runs
            return 128 + received[0]
        print(f"shared Prefect server at {api_url} (PREFECT_HOME={os.environ['PREFECT_HOME']})", file=sys.stderr)
        # its own process group: a terminal's Ctrl-C reaches it once, through ``forward``
        child = subprocess.Popen(command, env=os.environ | {"PREFECT_API_URL": api_url}, process_group=0)
        status = child.wait()
        wait_for_group(child.pid)  # a stage that outlives dvc still reports to the server
        return 128 - status if status < 0 else status  # killed by a signal: the shell's 128 + N


UI_PORT = 4200
"""Prefect's own default port: the UI's address in Prefect's documentation."""


def serve_ui(port: int = UI_PORT) -> int:
    """Serve the Prefect UI on the project's runs (its ``PREFECT_HOME``) until SIGINT/SIGTERM."""
    stop: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda received, frame: stop.append(received))
    with prefect_server(port) as api_url:
        print(f"Prefect UI on this project's flow runs: {api_url.removesuffix('/api')}  "
              f"(PREFECT_HOME={os.environ['PREFECT_HOME']}; Ctrl-C stops it)", file=sys.stderr, flush=True)
        while not stop:
            time.sleep(0.5)
    return 0


USAGE = ("usage: python -m pipelines.shared_server -- <command> [args ...]\n"
         "       python -m pipelines.shared_server --ui [PORT]   (the Prefect UI on the project's runs, "
         f"default port {UI_PORT})")


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--ui"]:
        if len(args) > 2 or (len(args) == 2 and not args[1].isdigit()):
            raise SystemExit(USAGE)
        raise SystemExit(serve_ui(int(args[1]) if len(args) == 2 else UI_PORT))
    if args[:1] in (["-h"], ["--help"]):
        print(USAGE)
        raise SystemExit(0)
    raise SystemExit(run(args[1:] if args[:1] == ["--"] else args))


if __name__ == "__main__":
    main()
