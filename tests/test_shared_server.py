"""``python -m pipelines.shared_server -- <command>``: one Prefect server for every stage of the
command, stopped on every exit path, the command's exit status passed through."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.shared_server import healthy
from star.config import load_config, write_params
from tests.conftest import MICRO, REPO, micro_overrides

pytestmark = pytest.mark.slow  # every test runs commands under a Prefect server of its own


def _launch(tmp_path: Path, *command: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "pipelines.shared_server", "--", *command], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _api_url(stderr: str) -> str:
    line = next(line for line in stderr.splitlines() if line.startswith("shared Prefect server at "))
    return line.split()[4]


def test_stages_share_one_server_that_stops_with_the_command(tmp_path: Path) -> None:
    params = write_params(load_config(MICRO, micro_overrides(tmp_path)), tmp_path / "params.yaml")
    stage = [sys.executable, "-m", "pipelines", "prepare", "--params", str(params)]
    # two stages, as dvc repro runs them: neither starts a temporary server of its own
    shell = f"{' '.join(stage)} && {' '.join(stage)} && python -c 'import os; print(os.environ[\"PREFECT_API_URL\"])'"
    process = _launch(tmp_path, "bash", "-c", shell)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    url = _api_url(stderr)
    assert stdout.strip().splitlines()[-1] == url
    assert "temporary server" not in stderr and stderr.count("Finished in state Completed()") >= 2
    assert (tmp_path / "data" / "prompts" / "counts.json").exists()
    assert not healthy(url), "the server stopped with the command"

    failing = _launch(tmp_path, sys.executable, "-c", "import sys; sys.exit(3)")
    _, stderr = failing.communicate(timeout=300)
    assert failing.returncode == 3 and not healthy(_api_url(stderr))


def test_sigterm_reaches_the_command_and_stops_the_server(tmp_path: Path) -> None:
    # a stage under a parent, as dvc runs one: the stage itself must get the signal; the parent
    # exits at once, as dvc does, while the stage takes 2 s to stop and still needs the server
    stage = ("import os, signal, sys, time\n"
             "from pipelines.shared_server import healthy\n"
             "def stop(*_):\n"
             "    time.sleep(2)\n"
             "    print('stage stopped, server up:', healthy(os.environ['PREFECT_API_URL']), flush=True)\n"
             "    sys.exit(143)\n"
             "signal.signal(signal.SIGTERM, stop)\n"
             "print('started', flush=True); time.sleep(120)")
    parent = ("import signal, subprocess, sys\n"
              "signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))\n"
              f"subprocess.Popen([sys.executable, '-c', {stage!r}]).wait()")
    process = _launch(tmp_path, sys.executable, "-c", parent)
    assert process.stdout.readline().strip() == "started"
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert "stage stopped, server up: True" in stdout, stderr[-2000:]
    assert process.returncode == 128 + signal.SIGTERM
    url = _api_url(stderr)
    time.sleep(0.5)
    assert not healthy(url)


def test_ui_serves_the_projects_prefect_home_until_interrupted(tmp_path: Path) -> None:
    from pipelines.shared_server import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "pipelines.shared_server", "--ui", str(port)], cwd=REPO,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not healthy(f"{url}/api"):
            assert process.poll() is None and time.monotonic() < deadline, "the UI server did not come up"
            time.sleep(0.5)
        import urllib.request
        with urllib.request.urlopen(url, timeout=10) as page:  # the UI itself, not only the API
            assert page.status == 200 and "<html" in page.read().decode().lower()
        assert (tmp_path / "prefect" / "shared-server.log").exists(), "the server runs on the given PREFECT_HOME"
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr[-2000:]
    assert f"Prefect UI on this project's flow runs: {url}" in stderr
    assert not healthy(f"{url}/api"), "Ctrl-C stops the server"
    bad = subprocess.run([sys.executable, "-m", "pipelines.shared_server", "--ui", "port"], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "usage:" in bad.stderr
