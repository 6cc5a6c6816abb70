"""The prepare and base stages end to end on the micro config, with their MLflow runs, and the
RL diagnostic script on the stage's base model."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from star.data.prompt_sets import load_geneval_metadata
from star.models.sd3 import load_pipeline
from tests.conftest import MICRO, micro_overrides


def test_prepare_writes_world_prompt_sets(micro_base) -> None:
    root, counts, _ = micro_base
    prompts = root / "data" / "prompts"
    test_set = load_geneval_metadata(prompts / "geneval" / "test_metadata.jsonl")
    train_set = load_geneval_metadata(prompts / "geneval" / "train_metadata.jsonl")
    assert len(test_set) == counts["geneval_test"] == 6
    assert len(train_set) == counts["geneval_train"] == 12
    assert {r["prompt"] for r in test_set}.isdisjoint(r["prompt"] for r in train_set)
    for family in ("ocr", "pickscore"):
        assert (prompts / family / "test.txt").read_text().strip()
    assert json.loads((prompts / "counts.json").read_text()) == counts


def test_base_saves_a_loadable_model_and_metrics(micro_base) -> None:
    root, _, metrics = micro_base
    pipe = load_pipeline(root / "models" / "base")
    assert pipe.transformer.config.num_layers == 2
    # the VAE latents were calibrated to unit scale
    assert pipe.vae.config.scaling_factor != 1.0
    written = json.loads((root / "metrics" / "base.json").read_text())
    assert written == metrics
    assert written["embedded_pretraining"] == 1.0 and 0 < written["train_seconds"] <= written["wall_seconds"]
    assert not (root / "outputs" / "base").exists(), "spent checkpoints and their folder are removed"


def test_mlflow_holds_each_stage_run(micro_base) -> None:
    root, _, metrics = micro_base
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlruns.db'}")
    runs = mlflow.search_runs(experiment_names=["star"], output_format="list")
    by_stage = {run.data.tags["stage"]: run for run in runs}
    assert set(by_stage) == {"prepare", "base", "reward_models"}
    base_run = by_stage["base"]
    assert base_run.data.params["base.steps"] == "6"
    assert base_run.data.metrics["train_seconds"] == pytest.approx(metrics["train_seconds"])
    client = mlflow.MlflowClient()
    assert len(client.get_metric_history(base_run.info.run_id, "transformer/fm_loss")) >= 1
    shares = client.get_metric_history(base_run.info.run_id, "grounding/grounding_share")
    assert shares and all(0 <= m.value <= 1 for m in shares), "the grounding phase logs its share"


def test_diagnose_rl_prints_the_signal_to_noise_table(micro_run, capsys, tmp_path: Path) -> None:
    from scripts.diagnose_rl import main

    root, _, _ = micro_run
    paths = [f"paths.{key}={value}" for key, value in micro_overrides(root)["paths"].items()]
    main(["--params", str(MICRO), "--prompts", "2", "--batches", "1", "--estimates", "2",
          "--rows", "uniform_region", "star γ2", "oracle", "shuffled", "fdfo", "nft", "dgpo star",
          "--row", "sharp={allocation: star, gamma: 8}",
          "--json", str(tmp_path / "table.json"), "-S", "train.prompt_pool=3",  # a pool larger than --prompts
          "-S", "train.dgpo.trunc_steps=2", "-S", "train.dgpo.timesteps=2",  # the micro config samples 3 steps
          *[arg for path in paths for arg in ("-S", path)]])
    out = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ")]
    names = [row[0].strip() for row in rows[1:]]
    assert names == ["none", "uniform_region", "star γ2", "oracle", "shuffled", "fdfo", "nft", "dgpo star", "sharp"]
    for name, agreement, _, reference, _, _localisation, norm in rows[1:]:
        ode = name.strip() in ("nft", "dgpo star")  # ODE rollouts: no policy-gradient reference to compare with
        assert -1 <= float(agreement) <= 1 and float(norm) >= 0, name
        assert reference.strip() == "nan" if ode else -1 <= float(reference) <= 1, name
    assert float(rows[1][3]) in (0.0, 1.0)  # none against itself (0: the micro base scores no reward spread)
    saved = json.loads((tmp_path / "table.json").read_text())
    assert saved["rollouts_per_estimate"] == 2 * 2 and len(saved["results"]) == 9
    with pytest.raises(SystemExit):
        main(["--params", str(MICRO), "--rows", "nope"])
    with pytest.raises(SystemExit, match="core_segments"):  # the rows share rollouts and their captured maps
        main(["--params", str(MICRO), "--row", "t5={allocation: star, core_segments: t5}",
              "-S", "train.dgpo.trunc_steps=2", "-S", "train.dgpo.timesteps=2"])


def test_profile_training_times_each_phase(micro_run, capsys) -> None:
    from scripts.profile_training import PHASES, main

    root, _, _ = micro_run
    paths = [f"paths.{key}={value}" for key, value in micro_overrides(root)["paths"].items()]
    main(["--params", str(MICRO), "--variant", "star", "--iterations", "1", "--top", "5",
          *[arg for path in paths for arg in ("-S", path)]])
    out = capsys.readouterr().out
    assert out.startswith("star: ") and "s per iteration" in out
    shares = [float(line.split("(")[1].rstrip("%)")) for line in out.splitlines()[1:len(PHASES) + 1]]
    assert [line.split()[0] for line in out.splitlines()[1:len(PHASES) + 1]] == PHASES
    assert 50 < sum(shares) <= 100.5  # the phases cover most of an iteration, never more than all of it


def test_diagnose_grounding_measures_the_base_and_each_grounding_phase(micro_run, capsys, tmp_path: Path) -> None:
    from scripts.diagnose_grounding import main

    root, _, _ = micro_run
    paths = [f"paths.{key}={value}" for key, value in micro_overrides(root)["paths"].items()]
    main(["--params", str(MICRO), "--weights", "0", "0.1", "--steps", "2", "--images", "64",
          "--save", str(tmp_path / "grounded"), *[arg for path in paths for arg in ("-S", path)]])
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("| model |"))
    assert header.rstrip(" |").endswith("all: A / m / reward")
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in lines
            if line.startswith("| ") and not line.startswith("| model")}
    assert list(rows) == ["base", "weight 0", "weight 0.1"]
    for cells in rows.values():
        assert len(cells) == len(header.split("|")) - 3
        reward = float(cells[-1].split("/")[2])  # A and m are nan where the detector finds nothing at 32 px
        assert 0 <= reward <= 1
    assert load_pipeline(tmp_path / "grounded").transformer.config.num_layers == 2


def test_diagnose_base_prints_the_vae_ceiling_per_colour(micro_run, capsys, tmp_path: Path) -> None:
    from scripts.diagnose_base import main
    from star.config import load_config, write_params
    from star.world.vocab import COLORS

    root, _, _ = micro_run
    cfg = load_config(MICRO, micro_overrides(root))
    main(["--model", str(cfg.paths.base_model), "--params", str(write_params(cfg, tmp_path / "params.yaml")),
          "--per-shape", "1"])
    rows = {line.split("|")[1].strip(): line.split("|")[2:4] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| one ") or "GenEval training prompts" in line}
    assert len(rows) == len(COLORS) + 1
    drawn = [float(d) for d, _ in rows.values()]
    assert all(0 <= float(r) <= 1 for _, r in rows.values())
    assert sum(drawn) / len(drawn) >= 0.8  # the detector reads its own renders (most of them at the micro 32 px)


def test_diagnose_maps_prints_localisation_per_setting(micro_run, capsys) -> None:
    from scripts.diagnose_maps import main

    root, _, _ = micro_run
    paths = [f"paths.{key}={value}" for key, value in micro_overrides(root)["paths"].items()]
    main(["--params", str(MICRO), "--prompts", "2", "--per-prompt", "2",
          *[arg for path in paths for arg in ("-S", path)]])
    out = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "step" not in line]
    assert len(rows) >= 6 and any("T5 segment only" in row[0] for row in rows)


def test_diagnose_sampler_prints_one_row_per_setting(micro_run, capsys) -> None:
    from scripts.diagnose_sampler import main

    root, _, _ = micro_run
    paths = [f"paths.{key}={value}" for key, value in micro_overrides(root)["paths"].items()]
    main(["--params", str(MICRO), "--settings", "4.5:2", "7:3", "--per-tag", "1", "--seeds", "1", "2",
          *[arg for path in paths for arg in ("-S", path)]])
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert [(float(r[0]), int(r[1])) for r in rows] == [(4.5, 2), (7.0, 3)]
    for row in rows:
        seeds = [float(v) for v in row[2:4]]
        assert all(0 <= v <= 1 for v in seeds) and float(row[4]) == pytest.approx(sum(seeds) / 2, abs=1e-3)
    with pytest.raises(SystemExit):
        main(["--params", str(MICRO), "--settings", "seven"])
    # --task ocr: exact match / edit distance per seed, and their means
    main(["--params", str(MICRO), "--settings", "4.5:2", "--per-tag", "2", "--seeds", "1", "2", "--task", "ocr",
          *[arg for path in paths for arg in ("-S", path)]])
    out = capsys.readouterr().out
    assert "OCR exact match" in out and "on 2 training prompts" in out
    row = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ")][1]
    pairs = [tuple(float(v) for v in cell.split(" / ")) for cell in row[2:5]]
    assert all(0 <= exact <= 1 and 0 <= distance <= 1 for exact, distance in pairs)
    assert pairs[2][1] == pytest.approx((pairs[0][1] + pairs[1][1]) / 2, abs=1e-3)
    # --pool: the prompts a training run of that seed draws (train.prompt_pool of them)
    main(["--params", str(MICRO), "--settings", "4.5:2", "--seeds", "1", "--task", "ocr", "--pool",
          "-S", "train.prompt_pool=3", *[arg for path in paths for arg in ("-S", path)]])
    assert "on 3 training prompts" in capsys.readouterr().out


def test_profile_prints_each_phase_share(micro_run, capsys, tmp_path: Path) -> None:
    from benchmarks.profile_study import main
    from star.config import load_config, write_params

    params = write_params(load_config(MICRO, micro_overrides(micro_run[0])), tmp_path / "params.yaml")
    main(["--params", str(params), "--iterations", "1", "--skip-startup"])
    out = capsys.readouterr().out
    phases = {line.split("|")[1].strip(): float(line.split("|")[3].strip(" %")) for line in out.splitlines()
              if line.startswith("| ") and line.split("|")[3].strip().endswith("%")}
    for phase in ("sample", "score", "update", "advantages (+ maps)", "sampling (ODE, CFG)",
                  "scoring (detector + rules)"):
        assert phase in phases, out
    assert all(0 <= share <= 100 for share in phases.values())


def test_objective_cost_prints_each_algorithm_side_by_side(micro_run, capsys, tmp_path: Path) -> None:
    from benchmarks.objective_cost import main
    from star.config import load_config, write_params

    params = write_params(load_config(MICRO, micro_overrides(micro_run[0])), tmp_path / "params.yaml")
    main(["--params", str(params), "--iterations", "1", "--passes", "1",
          "--rows", "none (Flow-GRPO)", "nft", "dgpo star",
          "-S", "train.dgpo.trunc_steps=2", "-S", "train.dgpo.timesteps=2"])
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [row[0].strip() for row in rows[1:]] == ["none (Flow-GRPO)", "nft", "dgpo star"]
    assert rows[1][-1].strip() == "1.00x" and all(float(row[5]) > 0 for row in rows[1:])


def test_learning_curves_trains_a_row_on_the_training_prompts(micro_run, capsys, tmp_path: Path) -> None:
    import pandas as pd

    from scripts.learning_curves import train_one
    from star.config import load_config, write_params

    params = write_params(load_config(MICRO, micro_overrides(micro_run[0])), tmp_path / "params.yaml")
    row = {"algorithm": "nft", "allocation": "none"}
    train_one(str(params), ["train.iterations=2"], row, 1, tmp_path / "nft-s1.csv")
    curve = pd.read_csv(tmp_path / "nft-s1.csv")
    assert curve["iteration"].tolist() == [1.0, 2.0] and curve["rollouts_per_iteration"].nunique() == 1
    assert "iteration 2/2: reward" in capsys.readouterr().out
    pool = pd.read_csv(tmp_path / "nft-s1.pool.csv")  # the training pool before and after, same noises
    before, after = (pool[pool.when == when] for when in ("before", "after"))
    assert len(before) == len(after) > 0 and before.prompt_index.tolist() == after.prompt_index.tolist()
    assert pool.reward.notna().all() and set(pool.columns) >= {"correct", "noise", "tag"}


def test_reward_spread_prints_each_task_and_the_mix_weight(micro_run, capsys, tmp_path: Path) -> None:
    from benchmarks.reward_spread import main
    from star.config import load_config, write_params

    cfg = load_config(MICRO, micro_overrides(micro_run[0]))
    main(["--params", str(write_params(cfg, tmp_path / "params.yaml")), "--prompts", "2", "--tasks", "ocr", "geneval"])
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [float(v) for v in line.split("|")[2:-1]] for line in out.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip() in ("ocr", "geneval")}
    assert set(rows) == {"ocr", "geneval"}, out
    for prompts, noises, mean, std in rows.values():
        assert (prompts, noises) == (2, cfg.eval.noises) and 0 <= mean <= 1 and 0 <= std <= 1
    ratio = out.split("weight of geneval for equal spread with ocr at weight 1: ")[1].strip()
    if rows["geneval"][3] > 0:
        assert float(ratio) == pytest.approx(rows["ocr"][3] / rows["geneval"][3], rel=1e-3)
    else:
        assert ratio.startswith("undefined")


@pytest.mark.slow
def test_register_checkpoint_finds_the_training_runs_model(tmp_path: Path) -> None:
    """The model named like its checkpoint; the only model of a run logged before models were
    named so; none when a run logged several others or no training run finished."""
    from pipelines.tracking import experiment_id, register_checkpoint
    from star.config import load_config

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):  # noqa: ANN001, ANN201
            return model_input

    cfg = load_config(MICRO, {"tracking": {"uri": f"sqlite:///{tmp_path / 'mlruns.db'}",
                                           "artifacts": str(tmp_path / "artifacts")}})
    experiment = experiment_id(cfg)
    for seed, models in ((0, ["star-s0"]), (1, ["model"]), (2, ["a", "b"])):
        with mlflow.start_run(experiment_id=experiment,
                              tags={"stage": "train", "variant": "star", "seed": str(seed)}):
            for name in models:
                mlflow.pyfunc.log_model(name=name, python_model=Echo())
    assert register_checkpoint(cfg, "star", 0, "best", {}) == "1"
    assert register_checkpoint(cfg, "star", 1, "best", {"note": "old run"}) == "2"
    assert register_checkpoint(cfg, "star", 2, "best", {}) is None
    assert register_checkpoint(cfg, "star", 3, "best", {}) is None  # no such training run
    version = mlflow.MlflowClient().get_model_version("best", "2")
    assert version.tags["checkpoint"] == "star-s1" and version.tags["note"] == "old run"
