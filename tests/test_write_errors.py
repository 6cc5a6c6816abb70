"""What a user sees when something fails: every write a stage does names its path and cause on
a full disk (simulated: tests/full_disk.py) and keeps what was written before; a bad prompt file
fails in the pre-flight, before Prefect; a failed stage's last lines are its ``error:`` message,
without the torchvision warnings; a resumed run says so, in its log and as an MLflow tag."""

from __future__ import annotations

import builtins
import errno
import io
import logging
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import safetensors.torch
import torch
import transformers.modeling_utils

from pipelines.failures import is_transient, report_failure
from star.config import WorldClipConfig, load_config
from star.files import WriteError, atomic_file, write_text
from star.rl import checkpoint
from tests.conftest import GENEVAL_RECORDS, MICRO, REPO, BrightnessReward, micro_overrides, micro_pipeline
from tests.full_disk import full_open, full_safetensors, full_torch_save

TINY_CLIP = WorldClipConfig(width=16, layers=1, heads=2, patch_size=8, projection_dim=16, steps=4, batch_size=8,
                            dataset_size=64, eval_size=32)
TORCHVISION_WARNING = "requires torchvision (not installed); falling back to"


def no_space(path: Path, detail: str = "") -> str:
    """The message of a full disk at ``path``, as a regular expression."""
    return rf"^could not write {re.escape(str(path))}: \[Errno 28\] No space left on device{detail}; \d+ MiB free there"


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(folder, pattern)``: from now on writes there fail as on a full disk, native
    writers (safetensors, torch.save) everywhere."""

    def fill(folder: Path, pattern: str = "*") -> None:
        opener = full_open(folder, pattern)
        monkeypatch.setattr(builtins, "open", opener)
        monkeypatch.setattr(io, "open", opener)
        monkeypatch.setattr(safetensors.torch, "save_file", full_safetensors)  # diffusers' writer
        monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full_safetensors)
        monkeypatch.setattr(torch, "save", full_torch_save)

    return fill


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_figure_names_its_path_and_keeps_the_previous_png(tmp_path: Path, full_disk) -> None:
    from star.evaluation.figures import sample_grid

    path = tmp_path / "eval" / "geneval.png"
    sample_grid(torch.rand(2, 3, 16, 16), ["a red star", "two circles"], path)
    before = snapshot(tmp_path)
    full_disk(tmp_path)
    with pytest.raises(WriteError, match=no_space(path) + "; its previous version is kept$"):
        sample_grid(torch.rand(2, 3, 16, 16), ["a red star", "two circles"], path)
    assert snapshot(tmp_path) == before, "the previous PNG is kept, no temporary file is left"


@pytest.mark.parametrize("pattern", ["*.json", "*.csv"])
def test_the_training_metrics_name_their_path(tmp_path: Path, full_disk, pattern: str) -> None:
    from pipelines.train import write_outputs

    cfg = load_config(MICRO, {"paths": {"metrics": str(tmp_path)}})
    history = [{"iteration": 1.0, "reward_mean": 0.5, "reward_std": 0.1, "loss": 0.0}]
    write_outputs(cfg, "star-s0", history, 1.0)
    before = snapshot(tmp_path)
    full_disk(tmp_path, pattern)
    path = tmp_path / "train" / f"star-s0.{pattern[2:]}"
    with pytest.raises(WriteError, match=no_space(path)):
        write_outputs(cfg, "star-s0", history * 2, 2.0)
    after = snapshot(tmp_path)
    assert set(after) == set(before) and after[f"train/{path.name}"] == before[f"train/{path.name}"]


def test_a_table_written_by_pandas_names_its_path(tmp_path: Path, full_disk) -> None:
    """The evaluation's scores and the report's training curves."""
    path = tmp_path / "metrics" / "eval" / "base.scores.csv"
    full_disk(tmp_path)
    with pytest.raises(WriteError, match=no_space(path) + "$"):
        with atomic_file(path) as partial:
            pd.DataFrame([{"task": "geneval", "score": 1.0}] * 100).to_csv(partial, index=False)
    assert snapshot(tmp_path) == {}


@pytest.mark.parametrize("name", ["report.html", "table.md", "counts.json"])
def test_a_text_output_names_its_path(tmp_path: Path, full_disk, name: str) -> None:
    path = write_text(tmp_path / name, "the previous version")
    full_disk(tmp_path)
    with pytest.raises(WriteError, match=no_space(path) + "; its previous version is kept$"):
        write_text(path, "<html>" * 1000)
    assert snapshot(tmp_path) == {name: b"the previous version"}


def test_the_prompt_files_name_their_path(tmp_path: Path, full_disk) -> None:
    from star.data.task_prompts import materialise_prompt_sets
    from star.world.prompts import generate_prompt_sets

    cfg = load_config(MICRO)
    world = generate_prompt_sets(seed=cfg.seed, n_train=cfg.world.train_prompts, n_test=cfg.world.test_prompts)
    materialise_prompt_sets(cfg.prompt_sets, world, tmp_path)
    before = snapshot(tmp_path)
    full_disk(tmp_path)
    with pytest.raises(WriteError, match=no_space(tmp_path / "geneval" / "test_metadata.jsonl")):
        materialise_prompt_sets(cfg.prompt_sets, world, tmp_path)
    assert snapshot(tmp_path) == before


def test_the_trained_variant_names_its_folder_and_keeps_the_previous_one(tmp_path: Path, full_disk) -> None:
    from star.models.lora import add_lora
    from star.models.variants import save_variant

    pipe = micro_pipeline()
    add_lora(pipe.transformer, 4, 8, ["to_q", "to_v"], seed=0)
    out = tmp_path / "checkpoints" / "star-s0"
    save_variant(pipe, out, {"variant": "star-s0"})
    before = snapshot(tmp_path)
    full_disk(tmp_path)
    with pytest.raises(WriteError, match=no_space(out) + "; its previous version is kept$") as error:
        save_variant(pipe, out, {"variant": "star-s0"})
    assert error.value.errno == errno.ENOSPC and not is_transient(error.value)
    assert snapshot(tmp_path) == before, "the previous variant is kept, no .partial folder is left"


def test_the_base_model_names_its_folder(tmp_path: Path, full_disk) -> None:
    from pipelines.base import save_model

    out = tmp_path / "models" / "base"
    full_disk(tmp_path)
    with pytest.raises(WriteError, match=no_space(out) + "$"):
        save_model.fn(micro_pipeline(), out)
    assert snapshot(tmp_path) == {}


def test_the_world_clip_names_its_folder(tmp_path: Path, full_disk) -> None:
    from pipelines.base import save_model
    from star.world.clip import build_world_clip

    out = tmp_path / "models" / "rewards" / "world_clip"
    full_disk(tmp_path)
    with pytest.raises(WriteError, match=no_space(out) + "$"):
        save_model.fn(build_world_clip(TINY_CLIP, 32, seed=0), out)
    assert snapshot(tmp_path) == {}


def test_a_checkpoint_names_its_path(tmp_path: Path, full_disk) -> None:
    path = tmp_path / "state-rank0.ckpt"
    checkpoint.atomic_save({"iteration": 1}, path)
    full_disk(tmp_path)
    with pytest.raises(WriteError, match=no_space(path, r" \(torch: unexpected pos 576 vs 534\)")):
        checkpoint.atomic_save({"iteration": 2}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["state-rank0.ckpt"]


def test_a_write_error_is_the_stage_error_line_and_survives_pickling(tmp_path: Path, capsys) -> None:
    error = WriteError(errno.ENOSPC, f"could not write {tmp_path}/base.json: [Errno 28] No space left on device")
    assert report_failure(pickle.loads(pickle.dumps(error))) == 1
    first = capsys.readouterr().err.splitlines()[0]
    assert first == f"error: could not write {tmp_path}/base.json: [Errno 28] No space left on device"


def test_other_errors_inside_a_write_pass_unchanged(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a write failure"):
        with atomic_file(tmp_path / "x.json"):
            raise ValueError("not a write failure")
    assert not list(tmp_path.iterdir())


def _stage(*args: str, timeout: float, prelude: str = "") -> subprocess.CompletedProcess:
    """``python -m pipelines <args>`` after ``prelude``; stdout ends with whether Prefect was imported."""
    code = (f"import sys\n{prelude}\nfrom pipelines.cli import main\ntry:\n    main(sys.argv[1:])\nfinally:\n"
            "    print('imported prefect:', 'prefect' in sys.modules)")
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("case", ["malformed", "missing"])
def test_a_bad_prompt_file_is_named_by_the_preflight(tmp_path: Path, case: str) -> None:
    good, bad = tmp_path / "test.txt", tmp_path / "train.txt"
    good.write_text('a sign that says "K7"\n')
    if case == "malformed":
        bad.write_text('a sign that says "K7"\na sign without quotes\n')
    start = time.monotonic()
    done = _stage("prepare", "--params", str(MICRO), "-S", f"prompt_sets.ocr.train={bad}",
                  "-S", f"prompt_sets.ocr.test={good}", timeout=60)
    seconds = time.monotonic() - start
    expected = (f"error: prompt_sets.ocr.train: {bad}: 1 malformed line(s):\n  line 2: no pair of double quotes"
                if case == "malformed" else f"error: prompt sets not found (paths are relative to the working "
                f"directory):\n  prompt_sets.ocr.train = '{bad}': no such file")
    assert done.returncode == 2 and done.stderr.startswith(expected), done.stderr
    assert "imported prefect: False" in done.stdout, "named before Prefect is imported"
    assert seconds < 15, f"{seconds:.1f} s"


def test_a_failed_stage_ends_with_its_error_line_without_library_warnings(tmp_path: Path) -> None:
    """``base`` on a disk that is full under ``models/``: the pretrained model cannot be saved;
    the stage's last lines are its one ``error:`` message naming the folder, said once."""
    overrides = [f"-S=paths.{key}={value}" for key, value in micro_overrides(tmp_path)["paths"].items()]
    overrides += [f"-S=tracking.{key}={value}" for key, value in micro_overrides(tmp_path)["tracking"].items()]
    models = tmp_path / "models"
    done = _stage("base", "--params", str(MICRO), *overrides, timeout=600,
                  prelude=f"from tests.full_disk import fill; fill({str(models)!r})")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr[-3000:]
    assert re.match(no_space(models / "base") + "$", lines[-2].removeprefix("error: ")), lines[-3:]
    assert lines[-1] == "(the traceback: rerun with --debug or STAR_DEBUG=1)"
    assert [line for line in lines if "could not write" in line] == [lines[-2]], "said once"
    assert "Traceback" not in done.stderr and TORCHVISION_WARNING not in done.stderr, done.stderr[:3000]
    assert not models.exists() or not any(models.iterdir()), "no half-written model is left"


def test_without_the_filter_the_stage_import_warns_about_torchvision() -> None:
    """The control of the test above: importing the stage alone does print the warning."""
    done = subprocess.run([sys.executable, "-c", "import pipelines.base"], cwd=REPO, capture_output=True, text=True,
                          env=os.environ | {"PYTHONPATH": str(REPO)}, timeout=300)
    assert TORCHVISION_WARNING in done.stderr


def test_a_resumed_training_logs_it_and_tags_its_run(tmp_path: Path, caplog) -> None:
    from pipelines.tracking import stage_run
    from star.rl.trainer import Trainer

    cfg = load_config(MICRO, micro_overrides(tmp_path) | {"train": {
        "iterations": 1, "prompts_per_iteration": 2, "group_size": 2, "steps": 3, "checkpoint_every": 1}})
    work_dir = tmp_path / "work"
    Trainer(cfg, micro_pipeline(), BrightnessReward(), GENEVAL_RECORDS, work_dir, progress=False).train()
    caplog.set_level(logging.INFO, logger="star")
    with stage_run(cfg, "train", ["train"]) as run:
        Trainer(cfg, micro_pipeline(), BrightnessReward(), GENEVAL_RECORDS, work_dir, progress=False)
    path = work_dir / "state-rank0.ckpt"
    assert f"resuming from checkpoint {path} at iteration 1" in caplog.messages
    tags = mlflow.MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["resumed_from"] == "1" and tags["resumed_checkpoint"] == str(path)


def test_a_resumed_pretraining_logs_it_and_tags_its_run(tmp_path: Path, caplog) -> None:
    """``base`` and ``reward_models`` resume through ``resume_progress``; a fresh run is not tagged."""
    from pipelines.tracking import stage_run

    cfg = load_config(MICRO, micro_overrides(tmp_path))
    model, path = torch.nn.Linear(2, 2), tmp_path / "transformer.ckpt"
    caplog.set_level(logging.INFO, logger="star")
    with stage_run(cfg, "base", ["base"]) as fresh:
        assert checkpoint.resume_progress(path, torch.Generator(), model=model) == 0
    checkpoint.save_progress(path, 40, torch.Generator(), model=model)
    with stage_run(cfg, "base", ["base"]) as resumed:
        assert checkpoint.resume_progress(path, torch.Generator(), model=model) == 40
    assert caplog.messages.count(f"resuming from checkpoint {path} at step 40") == 1
    client = mlflow.MlflowClient()
    assert "resumed_from" not in client.get_run(fresh.info.run_id).data.tags
    assert client.get_run(resumed.info.run_id).data.tags["resumed_from"] == "40"
