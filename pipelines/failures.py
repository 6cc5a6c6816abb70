"""How stages fail: signals unwind like errors, stale Prefect servers are reaped, only transient
errors are retried, and a failure prints one message (the traceback with ``--debug``).

Light on purpose (standard library only): the command line uses it before Prefect, MLflow or
torch is imported.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import re
import signal
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

STAGE_ENV = "STAR_STAGE_PROCESS"
"""``<pid>:<start time>`` of the stage process; its Prefect server inherits it, so a server whose
stage is gone can be told from one whose stage still runs."""

SERVER_MARK = "prefect.server.api.server:create_app"
"""In the command line of Prefect's temporary (ephemeral) API server."""

DEBUG_ENV = "STAR_DEBUG"


class StageInterrupted(BaseException):
    """SIGTERM or SIGINT: a BaseException, so ``except Exception`` blocks do not swallow it and
    every ``with`` block (MLflow run, Prefect flow, temporary server) unwinds."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise StageInterrupted(signum)


def interrupt_on_signals() -> None:
    """Turn SIGTERM/SIGINT into ``StageInterrupted`` (the default SIGTERM kills the process
    without running ``atexit``, which is what stops Prefect's temporary server)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _raise_interrupt)


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after "pid (comm)": [state, ppid, pgrp, …]; None if the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()  # comm may hold spaces and parentheses


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), or None."""
    fields = _stat_fields(pid)
    return fields[19] if fields else None


def this_process() -> str:
    """``<pid>:<start time>``: names this process even after its PID is reused."""
    return f"{os.getpid()}:{_start_time(os.getpid())}"


def process_alive(owner: str) -> bool:
    """Whether the process ``this_process`` returned as ``owner`` still runs."""
    pid, _, started = owner.partition(":")
    return pid.isdigit() and _start_time(int(pid)) == started


def process_group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs. Zombies do not count (an init that does
    not reap would keep them forever); without /proc, any member counts."""
    if not os.path.isdir("/proc"):
        try:
            os.killpg(pgid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False
    for entry in os.listdir("/proc"):
        fields = _stat_fields(int(entry)) if entry.isdigit() else None
        if fields and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def mark_stage_process() -> None:
    """Record this process in the environment its children (the Prefect server) inherit."""
    os.environ[STAGE_ENV] = this_process()


def _environment(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def temporary_servers(prefect_home: str | None = None) -> Iterator[tuple[int, str]]:
    """(PID, owner) of every Prefect temporary server a stage process started for this
    ``PREFECT_HOME``; owner is the ``STAGE_ENV`` value it inherited (``this_process`` of its stage)."""
    home = prefect_home or os.environ.get("PREFECT_HOME")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if SERVER_MARK not in command:
            continue
        env = _environment(int(entry.name))
        owner = env.get(STAGE_ENV)
        if owner is not None and (home is None or env.get("PREFECT_HOME") == home):
            yield int(entry.name), owner


def orphaned_servers(prefect_home: str | None = None) -> Iterator[int]:
    """PIDs of the ``temporary_servers`` whose stage process no longer exists (killed with
    SIGKILL, so it never stopped its server)."""
    return (pid for pid, owner in temporary_servers(prefect_home) if not process_alive(owner))


def reap_orphaned_servers() -> list[int]:
    """Terminate the temporary servers ``orphaned_servers`` finds; returns their PIDs."""
    reaped = []
    for pid in orphaned_servers():
        try:
            os.kill(pid, signal.SIGTERM)
            reaped.append(pid)
        except OSError:
            pass
    return reaped


TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT, errno.ECONNRESET,
                    errno.ECONNREFUSED, errno.EPIPE}


def is_transient(error: BaseException | None) -> bool:
    """Can the same call succeed if tried again? Network and busy-resource errors can;
    configuration, data, a missing file, a full or read-only disk cannot."""
    if error is None:
        return False
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    if isinstance(error, sqlite3.OperationalError) or type(error).__name__ == "OperationalError":
        return "locked" in str(error) or "busy" in str(error)
    if isinstance(error, OSError):
        return error.errno in TRANSIENT_ERRNOS
    return is_transient(error.__cause__) if error.__cause__ is not error else False


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed task only for a transient error."""
    try:
        state.result(raise_on_failure=True)
    except Exception as error:  # the task's own exception, re-raised by Prefect
        return is_transient(error)
    return False


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


class _WithoutTraceback(logging.Filter):
    """Drop what Prefect logs about a failed task or flow, tracebacks included: the command
    line prints the error once. ``--debug`` keeps everything."""

    FAILURE_MARKS = ("encountered an exception", "Encountered exception", "Finished in state Failed",
                     "Finished in state Crashed", "Crash detected", "Retries are exhausted")

    def filter(self, record: logging.LogRecord) -> bool:
        if debugging():
            return True
        record.exc_info, record.exc_text = None, None
        message = record.getMessage()
        final = record.levelno >= logging.ERROR and message.startswith("Task run failed with")  # not a retry's notice
        return not final and not any(mark in message for mark in self.FAILURE_MARKS)


def quiet_prefect_tracebacks() -> None:
    """Install ``_WithoutTraceback`` on the handlers of Prefect's loggers (call after importing Prefect)."""
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", ""):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(_WithoutTraceback())


QUIET_MESSAGES: dict[str, re.Pattern[str]] = {
    "transformers.utils.import_utils": re.compile(r"requires torchvision \(not installed\); falling back to"),
    "diffusers.loaders.lora_base": re.compile(r"^No LoRA keys associated to \w+ found with the prefix='text_encoder"),
}
"""Library warnings that tell a stage's user nothing, by the logger that writes them:
torchvision is left out on purpose (transformers then uses its PIL image processors), and a
trained variant adapts the transformer alone (its text encoders have no LoRA keys)."""


class _Quiet(logging.Filter):
    """Drop the records whose message matches ``pattern`` (``--debug`` keeps them)."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return debugging() or not self.pattern.search(record.getMessage())


def quiet_library_warnings() -> None:
    """Install ``_Quiet`` on the loggers of ``QUIET_MESSAGES`` (before the libraries are imported
    or after: a logger is the same object either way)."""
    for name, pattern in QUIET_MESSAGES.items():
        logging.getLogger(name).addFilter(_Quiet(pattern))


_held_back: list[str] | None = None
"""The messages ``report_failure`` leaves to the end of the process, once ``failures_last`` ran."""


def failures_last() -> None:
    """From now on ``report_failure``'s message comes last, after what Prefect prints while it
    shuts down. Call it before Prefect is imported: exit handlers run in reverse order of
    registration, so this one runs after Prefect's (which stop its temporary server)."""
    global _held_back
    if _held_back is None:
        _held_back = []
        atexit.register(_print_held_back)


def _print_held_back() -> None:
    """The exit handler of ``failures_last``: the held-back messages, in order."""
    for message in _held_back or []:
        print(message, file=sys.stderr, flush=True)


def _say(message: str) -> None:
    """Print ``message`` to stderr now, or at exit after ``failures_last``."""
    if _held_back is None:
        print(message, file=sys.stderr)
    else:
        _held_back.append(message)


def report_failure(error: BaseException) -> int:
    """Print one message for ``error`` (its traceback too when debugging); returns the exit code."""
    from star.config import ConfigError  # light: pydantic and yaml only
    from star.files import WriteError  # standard library only

    if debugging():
        import traceback

        traceback.print_exception(error)
    if isinstance(error, StageInterrupted):
        _say(f"stopped: {error}; the last checkpoint is kept and the next run resumes from it")
        return 128 + error.signum
    text = str(error) if isinstance(error, (ConfigError, WriteError)) else f"{type(error).__name__}: {error}"
    hint = ("" if debugging() or isinstance(error, ConfigError)
            else f"\n(the traceback: rerun with --debug or {DEBUG_ENV}=1)")
    _say(f"error: {text}{hint}")
    return 2 if isinstance(error, ConfigError) else 1
