"""Faults a user meets, on the micro config: SIGTERM and kill -9 mid-training (resume, no
orphaned Prefect server, no MLflow run left RUNNING), a full disk, a diverging run, a stage
that fails deterministically (one attempt, one message), bad command lines, leftovers.
Bad image batches: tests/test_image_contract.py; resume after unrelated edits:
tests/test_trainer.py."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch

from pipelines.failures import is_transient, temporary_servers
from star.config import load_config, write_params
from star.files import WriteError, atomic_directory
from star.rl import checkpoint
from star.rl.trainer import Trainer, TrainingDiverged
from tests.conftest import GENEVAL_RECORDS, MICRO, REPO, BrightnessReward, micro_overrides, micro_pipeline


def _servers_of(pid: int) -> list[int]:
    """Prefect temporary servers started by the stage process ``pid`` that are still alive."""
    return [server for server, owner in temporary_servers() if owner.startswith(f"{pid}:")]


def _stage(params: Path, *args: str) -> subprocess.Popen:
    """``python -m pipelines <args>``; its output goes to files, not pipes (a server orphaned by
    kill -9 would hold a pipe open), read back by ``_finish``."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    logs = params.parent / f"stage-{time.monotonic_ns()}"
    process = subprocess.Popen([sys.executable, "-m", "pipelines", *args, "--params", str(params)], cwd=REPO, env=env,
                               stdout=open(f"{logs}.out", "w"), stderr=open(f"{logs}.err", "w"), start_new_session=True)
    process.stderr_path = Path(f"{logs}.err")  # type: ignore[attr-defined]
    return process


def _finish(process: subprocess.Popen, timeout: float) -> str:
    """Wait for the process; its stderr."""
    process.wait(timeout=timeout)
    return process.stderr_path.read_text()  # type: ignore[attr-defined]


def _wait_for_checkpoint(root: Path, process: subprocess.Popen, iteration: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr_path.read_text()[-3000:]  # type: ignore[attr-defined]
        for path in (root / "outputs" / "train").rglob("state-rank0.ckpt"):
            try:
                if checkpoint.load(path)["iteration"] >= iteration:
                    return
            except RuntimeError:  # being replaced
                pass
        time.sleep(0.5)
    raise AssertionError("no checkpoint appeared")


def _runs(root: Path) -> list:
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlruns.db'}")
    return mlflow.search_runs(experiment_names=["star"], filter_string="tags.stage = 'train'", output_format="list")


LONG = 24
"""Iterations of the interrupted training: SIGTERM lands after checkpoint 2, kill -9 after 6."""


@pytest.fixture(scope="module")
def long_training(micro_run, tmp_path_factory) -> tuple[Path, Path]:
    """The micro project, with a params file whose training is long enough to interrupt."""
    root = micro_run[0]
    cfg = load_config(MICRO, micro_overrides(root) | {"train": {"iterations": LONG}})
    return root, write_params(cfg, tmp_path_factory.mktemp("params") / "params.yaml")


def test_sigterm_then_kill_then_resume(long_training) -> None:
    """SIGTERM: exit 143 with one line, the MLflow run KILLED, the Prefect server stopped.
    kill -9: the server survives its stage, and the next stage reaps it and marks the run
    KILLED. The third run resumes where the checkpoint left off, and train_seconds counts
    every attempt."""
    root, params = long_training
    first = _stage(params, "train", "--variant", "none")
    _wait_for_checkpoint(root, first, 2)
    assert _servers_of(first.pid), "the stage runs its temporary Prefect server"
    os.kill(first.pid, signal.SIGTERM)
    stderr = _finish(first, 120)
    assert first.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "stopped: interrupted by SIGTERM; the last checkpoint is kept" in stderr and "Traceback" not in stderr
    assert not _servers_of(first.pid), "SIGTERM stopped the server"
    assert [run.info.status for run in _runs(root)] == ["KILLED"]

    second = _stage(params, "train", "--variant", "none")
    _wait_for_checkpoint(root, second, 6)
    os.kill(second.pid, signal.SIGKILL)
    _finish(second, 60)
    orphans = _servers_of(second.pid)
    assert orphans, "kill -9 leaves the server running (what the next stage must clean up)"
    assert sorted(run.info.status for run in _runs(root)) == ["KILLED", "RUNNING"]

    third = _stage(params, "train", "--variant", "none")
    stderr = _finish(third, 900)
    assert third.returncode == 0, stderr[-3000:]
    time.sleep(1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in orphans), "the stale server was reaped"
    assert sorted(run.info.status for run in _runs(root)) == ["FINISHED", "KILLED", "KILLED"]
    resumed = re.search(r"resuming from checkpoint (\S+state-rank0\.ckpt) at iteration (\d+)", stderr)
    assert resumed and int(resumed[2]) >= 6, "the resumed run says so"
    tags = next(run for run in _runs(root) if run.info.status == "FINISHED").data.tags
    assert (tags["resumed_from"], tags["resumed_checkpoint"]) == (resumed[2], resumed[1])
    summary = json.loads((root / "metrics" / "train" / "none-s0.json").read_text())
    assert summary["iterations"] == LONG
    curve = (root / "metrics" / "train" / "none-s0.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in curve[1:]] == list(range(1, LONG + 1)), "no iteration lost or repeated"
    # train_seconds covers every kept iteration's own time, the killed attempts' included (a
    # wall-clock comparison with the last run's duration is flaky: loading and logging the model
    # are not training time). MLflow's `seconds` is each iteration's duration.
    client = mlflow.MlflowClient()
    per_step: dict[int, float] = {}
    for run in sorted(_runs(root), key=lambda run: run.info.start_time):  # a resumed step overwrites
        per_step |= {m.step: m.value for m in client.get_metric_history(run.info.run_id, "seconds")}
    # (kill -9 may land between a checkpoint and its step's log: that step can be missing)
    assert min(per_step) == 1 and max(per_step) == LONG and len(per_step) >= LONG - 2
    assert summary["train_seconds"] >= sum(per_step.values()) - 0.05, "the interrupted attempts' time is counted"
    assert not (root / "outputs" / "train" / "none-s0").exists(), "no empty work folder is left"


def test_two_variants_train_at_once_into_one_store(long_training) -> None:
    """Concurrent stages share the MLflow sqlite store and Prefect's home without a lock error."""
    root, params = long_training
    runs = [_stage(params, "train", "--variant", variant, "--seed", "3", "-S", "train.iterations=3")
            for variant in ("none", "star")]
    for process in runs:
        stderr = _finish(process, 600)
        assert process.returncode == 0, stderr[-3000:]
        assert "locked" not in stderr
    finished = {run.info.run_name for run in _runs(root) if run.info.status == "FINISHED"}
    assert {"train-none-s3", "train-star-s3"} <= finished


def test_a_bad_command_line_fails_at_once_with_one_message(long_training) -> None:
    _, params = long_training
    cases = {
        ("train", "--variant", "star", "-S", "train.allocation=spatail"):
            "error: invalid configuration: train.allocation = 'spatail' (from -S): Input should be 'none'",
        ("train", "--variant", "nope"): "error: unknown variant 'nope'",
        ("train", "--study", "tasks", "--variant", "star"):
            "error: unknown variant 'star'; this study's variants are ['ocr-star']",
        ("evaluate", "--checkpoint", "star-s7"): "error: checkpoint 'star-s7' not found at",
        ("train", "--variant", "star", "-S", "paths.base_model=/nonexistent/base"):
            "error: the embedded base model is not at /nonexistent/base (paths.base_model): "
            "build it with `dvc repro base`",
    }
    for args, message in cases.items():
        process = _stage(params, *args)
        stderr = _finish(process, 120)
        assert process.returncode == 2, (args, stderr)
        assert stderr.startswith(message) and "Traceback" not in stderr, (args, stderr)
        assert len(stderr.strip().splitlines()) == 1, stderr


def test_a_failing_stage_prints_its_error_once_without_a_traceback(long_training, tmp_path: Path) -> None:
    """A data error found inside the flow (a corrupted prompt file): one attempt, the message
    once, no traceback (Prefect's own failure logs are quiet unless --debug)."""
    import shutil

    root, params = long_training
    prompts = tmp_path / "prompts"
    shutil.copytree(root / "data" / "prompts", prompts)
    (prompts / "geneval" / "train_metadata.jsonl").write_text("{not json\n")
    cfg = load_config(params, {"paths": {"prompts": str(prompts)}})
    broken = write_params(cfg, tmp_path / "params.yaml")
    process = _stage(broken, "train", "--variant", "none")
    stderr = _finish(process, 300)
    assert process.returncode == 1, stderr[-3000:]
    assert "Traceback" not in stderr and "train_metadata.jsonl" in stderr
    errors = [line for line in stderr.splitlines() if "train_metadata.jsonl" in line]
    assert len(errors) == 1 and errors[0].startswith("error: "), stderr[-3000:]
    assert "rerun with --debug" in stderr
    assert not (root / "outputs" / "train" / "none-s0").exists(), "no empty work folder is left"


def test_a_failed_evaluation_leaves_no_empty_sample_folder(micro_run) -> None:
    from pipelines.evaluate import evaluate
    from rewards.hub import ModelLoadError

    root = micro_run[0]
    overrides = micro_overrides(root) | {"studies": {"default": {"eval_tasks": ["pickscore"]}},
                                         "paths": micro_overrides(root)["paths"]
                                         | {"reward_models": str(root / "none")}}
    with pytest.raises(ModelLoadError, match="dvc repro reward_models"):
        evaluate(checkpoint="base", params=str(MICRO), overrides=overrides)
    assert not (root / "eval" / "base").exists()


def test_a_diverging_run_stops_naming_the_iteration(tmp_path: Path) -> None:
    """lr 1e30: the first update sends the policy to inf, the next iteration's samples are not
    finite; the run stops there, naming it, and keeps the checkpoint written before."""
    cfg = load_config(MICRO, overrides={"train": {"lr": 1e30, "iterations": 4, "prompts_per_iteration": 2,
                                                  "group_size": 2, "steps": 3, "checkpoint_every": 1}})
    trainer = Trainer(cfg, micro_pipeline(), BrightnessReward(), GENEVAL_RECORDS, tmp_path, progress=False)
    with pytest.raises(TrainingDiverged,
                       match=r"training diverged at iteration [1-3]: the .* (is|are) not finite") as error:
        trainer.train()
    assert f"its last checkpoint ({tmp_path / 'state-rank0.ckpt'}) is kept" in str(error.value)
    assert checkpoint.load(tmp_path / "state-rank0.ckpt")["iteration"] == trainer.iteration


@pytest.mark.parametrize("failure, attempts", [(ValueError("bad data"), 1), (ConnectionResetError("flaky"), 2)],
                         ids=["deterministic-once", "transient-retried"])
def test_the_stage_retries_only_transient_failures(micro_run, monkeypatch, failure, attempts) -> None:
    import pipelines.train as stage

    calls = []

    def fail_always(*args: object, **kwargs: object) -> None:
        calls.append(1)
        raise failure

    monkeypatch.setattr(stage, "run_training", fail_always)
    with pytest.raises(type(failure)):
        stage.train(variant="none", seed=9, params=str(MICRO), overrides=micro_overrides(micro_run[0]))
    assert len(calls) == attempts


def test_a_full_disk_names_the_path_and_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "state.ckpt"
    checkpoint.atomic_save({"iteration": 1}, path)

    def full_disk(obj: object, target: str) -> None:
        Path(target).write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(WriteError, match=rf"could not write {path}: \[Errno 28\] No space left on device") as error:
        checkpoint.atomic_save({"iteration": 2}, path)
    assert error.value.errno == errno.ENOSPC and not is_transient(error.value)
    assert [p.name for p in tmp_path.iterdir()] == ["state.ckpt"], "no temporary file left"
    monkeypatch.undo()
    assert checkpoint.load(path) == {"iteration": 1}


def test_a_failed_model_write_leaves_no_partial_folder(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights").write_text("old")

    def write(staging: Path) -> None:
        staging.mkdir()
        (staging / "weights").write_text("half")
        raise OSError(errno.EROFS, "Read-only file system")

    with pytest.raises(WriteError, match=r"model: \[Errno 30\] Read-only file system"):
        atomic_directory(tmp_path / "model", write)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert (tmp_path / "model" / "weights").read_text() == "old"


def test_only_transient_errors_are_retried() -> None:
    import sqlite3

    assert is_transient(ConnectionResetError()) and is_transient(TimeoutError())
    assert is_transient(sqlite3.OperationalError("database is locked"))
    assert is_transient(OSError(errno.EBUSY, "busy"))
    wrapped = RuntimeError("upload failed")
    wrapped.__cause__ = ConnectionError()
    assert is_transient(wrapped)
    for error in (ValueError("bad"), FileNotFoundError(errno.ENOENT, "x"), OSError(errno.ENOSPC, "full"),
                  TrainingDiverged("nan"), KeyError("k")):
        assert not is_transient(error), error
