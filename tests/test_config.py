"""Config validation: unknown keys, wrong types and out-of-range values fail naming the key."""

from pathlib import Path

import pytest

from pipelines.cli import parse_overrides
from star.config import BaseConfig, Config, ConfigError, Variant, describe_knobs, fingerprint, load_config

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_repo_params_load_and_missing_keys_take_defaults(tmp_path: Path) -> None:
    cfg = load_config(REPO / "params.yaml")
    assert cfg == Config(), "params.yaml and the defaults in star/config.py drifted apart"
    partial = load_config(write(tmp_path, "seed: 3\nbase: {steps: 4700}\n"))
    assert partial.seed == 3 and partial.base.steps == 4700
    assert partial.base.lr == Config().base.lr


def test_unknown_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"base\.stepz = 5 \(from \S*params\.yaml\): Extra inputs are not permitted"):
        load_config(write(tmp_path, "base: {stepz: 5}\n"))


def test_wrong_type_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"world\.image_size = 'big'"):
        load_config(write(tmp_path, "world: {image_size: big}\n"))


def test_out_of_range_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"base\.caption_dropout = 1\.5 \(from \S*\): "
                                          r"Input should be less than or equal to 1"):
        load_config(write(tmp_path, "base: {caption_dropout: 1.5}\n"))
    with pytest.raises(ConfigError, match=r"train\.allocation = 'stars'"):
        load_config(write(tmp_path, "train: {allocation: stars}\n"))


def test_cross_field_rule_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="t5_width=64 must be >= 2 \\* text_width=128"):
        load_config(write(tmp_path, "model: {mini: {text_width: 64, t5_width: 64}}\n"))


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "a: [1,\n"))


def test_overrides_merge_and_validate(tmp_path: Path) -> None:
    path = write(tmp_path, "base: {steps: 7, lr: 0.1, low_res_steps: 0}\n")
    cfg = load_config(path, parse_overrides(["base.steps=9", "seed=4"]))
    assert (cfg.base.steps, cfg.base.lr, cfg.seed) == (9, 0.1, 4)
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_overrides(["base.steps"])
    with pytest.raises(ConfigError, match=r"base\.steps = -1"):
        load_config(path, parse_overrides(["base.steps=-1"]))


def test_overrides_speak_hydras_grammar(tmp_path: Path) -> None:
    """The grammar of `dvc exp run -S`: +key and ++key set, ~key falls back to the default,
    values are typed as Hydra types them."""
    path = write(tmp_path, "base: {steps: 7, lr: 0.1, low_res_steps: 0}\n")
    overrides = parse_overrides(["+base.steps=3", "++seed=2", "~base.lr", "train.capture_blocks=[0,1]",
                                 "tracking.experiment='5'", "model.revision=null"])
    cfg = load_config(path, overrides)
    assert (cfg.base.steps, cfg.seed, cfg.train.capture_blocks) == (3, 2, [0, 1])
    assert cfg.base.lr == BaseConfig().lr and cfg.tracking.experiment == "5" and cfg.model.revision is None


def test_a_bad_value_names_its_key_value_and_source(tmp_path: Path) -> None:
    path = write(tmp_path, "train: {gamma: -1}\n")
    with pytest.raises(ConfigError) as both:
        load_config(path, parse_overrides(["train.allocation=spatail"]))
    lines = str(both.value).splitlines()
    assert lines[0] == "invalid configuration:"
    assert any(line.startswith("  train.allocation = 'spatail' (from -S): Input should be 'none'") for line in lines)
    assert any(line.startswith(f"  train.gamma = -1 (from {path}):") for line in lines)
    with pytest.raises(ConfigError, match=r"^invalid configuration: train\.allocation = 'spatail' \(from -S\)"):
        load_config(write(tmp_path, "seed: 0\n"), parse_overrides(["train.allocation=spatail"]))


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_a_params_file_without_keys_is_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="has no keys; pass the defaults explicitly"):
        load_config(write(tmp_path, text))


def test_every_knob_has_a_description() -> None:
    rows = describe_knobs()
    assert len(rows) > 40
    assert all(description for _, _, _, description in rows), [r for r in rows if not r[3]]


def test_fingerprint_tracks_only_named_sections() -> None:
    a = Config()
    b = Config(train={"lr": 1.0})
    c = Config(base={"steps": 1, "low_res_steps": 0})
    assert fingerprint(a, ["base"]) == fingerprint(b, ["base"])
    assert fingerprint(a, ["base"]) != fingerprint(c, ["base"])


def test_variants_override_train_and_are_validated(tmp_path: Path) -> None:
    from star.config import ConfigError, write_params

    cfg = load_config(REPO / "params.yaml")
    star = cfg.for_variant("nft-star", seed=7)
    assert (star.train.algorithm, star.train.allocation, star.seed) == ("nft", "star", 7)
    assert cfg.for_variant("nft-shuffled").train.allocation == "shuffled"
    with pytest.raises(ConfigError, match="unknown variant 'nope'"):
        cfg.for_variant("nope")
    with pytest.raises(ConfigError, match=r"variants\.bad\.gamma = -1"):
        load_config(REPO / "params.yaml", {"studies": {"default": {"variants": {"bad": {"gamma": -1}}}}})
    with pytest.raises(ConfigError, match=r"contrasts: \['nft', 'gone'\] names \['gone'\]"):
        load_config(REPO / "params.yaml", {"studies": {"default": {"contrasts": [["nft", "gone"]]}}})
    written = write_params(star, tmp_path / "params.yaml")
    assert load_config(written) == star


def test_a_variant_may_set_its_training_task_and_reward_mix() -> None:
    from star.evaluation.report import study_sections

    variants = {"none": {"allocation": "none"}, "star": {"allocation": "star"},
                "text-star": {"allocation": "star", "rewards": {"task": "ocr"}},
                "text-none": {"allocation": "none", "rewards": {"task": "ocr"}},
                "mix": {"allocation": "none", "rewards": {"weights": {"geneval": 1.0, "pickscore": 0.1}}}}
    cfg = load_config(REPO / "params.yaml", {"studies": {"default": {"variants": variants}}})
    ocr = cfg.for_variant("text-star", seed=3)
    assert (ocr.rewards.task, ocr.train.allocation, ocr.seed) == ("ocr", "star", 3)
    assert ocr.rewards.ocr_backend == cfg.rewards.ocr_backend, "the rest of `rewards` is kept"
    assert cfg.for_variant("mix").rewards.weights == {"geneval": 1.0, "pickscore": 0.1}
    scored = cfg.for_variant("mix").rewards.for_task("ocr")  # how evaluation scores a mix-trained model
    assert (scored.task, scored.weights, scored.ocr_backend) == ("ocr", None, cfg.rewards.ocr_backend)
    assert cfg.for_variant("star").rewards == cfg.rewards
    sections = [(s.task, s.variants, s.reference) for s in study_sections(cfg)]
    # the reward mix trains on GenEval prompts beside Flow-GRPO, but is not the reference
    # the overrides merge into the defaults
    geneval = list(dict.fromkeys([*Config().study.variants, "none", "star", "mix"]))
    assert sections == [("geneval", geneval, "none"), ("ocr", ["text-star", "text-none"], "text-none")]
    with pytest.raises(ConfigError, match=r"variants\.x\.rewards\.task = 'foo'"):
        load_config(REPO / "params.yaml", {"studies": {"default": {"variants": {"x": {"rewards": {"task": "foo"}}}}}})
    with pytest.raises(ConfigError, match=r"variants\.x\.rewards\.weight = "):
        variants = {"x": {"rewards": {"weight": {"ocr": 1}}}}
        load_config(REPO / "params.yaml", {"studies": {"default": {"variants": variants}}})


def test_each_study_has_its_variants_seeds_and_output_folder(tmp_path: Path) -> None:
    from star.evaluation.report import study_sections

    cfg = load_config(REPO / "params.yaml")
    tasks = cfg.for_study("tasks")
    assert cfg.for_study("default") == cfg and cfg.study == cfg.studies["default"]
    assert (tasks.study_name, tasks.study) == ("tasks", cfg.studies["tasks"])
    assert tasks.for_variant("ocr-star").study_name == "tasks", "a variant's config runs its own study"
    root = cfg.studies["tasks"].root
    assert (tasks.paths.checkpoints, tasks.paths.metrics, tasks.paths.eval_samples, tasks.paths.reports) == (
        root / "checkpoints", root / "metrics", root / "eval", root / "reports")
    shared = ("base_model", "prompts", "reward_models", "work")
    assert [getattr(tasks.paths, p) for p in shared] == [getattr(cfg.paths, p) for p in shared], "shared inputs"
    sections = [(s.task, s.reference) for s in study_sections(tasks)]
    assert sections == [("ocr", "ocr-none"), ("pickscore", "pick-none")]
    mix = tasks.for_variant("ocr-mix")
    assert (mix.rewards.task, mix.train.allocation) == ("ocr", "none")
    assert mix.rewards.weights == {"ocr": 1.0, "pickscore": 0.026}
    with pytest.raises(ConfigError, match="unknown study 'nope'"):
        cfg.for_study("nope")
    with pytest.raises(ConfigError, match=r"studies\.default and studies\.tasks share the variant names \['nft'\]"):
        load_config(REPO / "params.yaml", {"studies": {"tasks": {"variants": {"nft": {"allocation": "star"}}}}})
    with pytest.raises(ConfigError, match="studies write to the same folders"):
        load_config(REPO / "params.yaml", {"studies": {"tasks": {"root": None}}})
    with pytest.raises(ConfigError, match="studies has no 'default' study"):
        load_config(write(tmp_path, "studies: {tasks: {variants: {a: {}}, root: studies/tasks}}\n"))


def test_a_variant_is_train_knobs_with_rewards_knobs_under_rewards(tmp_path: Path) -> None:
    """params.yaml's spelling in and out; each knob checked on load, naming its full key."""
    spelled = {"allocation": "none", "rewards": {"task": "ocr", "weights": {"ocr": 1.0}}}
    variant = Variant.model_validate(spelled)
    assert (variant.train, variant.rewards) == ({"allocation": "none"}, {"task": "ocr", "weights": {"ocr": 1.0}})
    assert variant.model_dump() == spelled and Variant(train={"gamma": 2.0}) == Variant.model_validate({"gamma": 2.0})
    message = (r"^invalid configuration: studies\.tasks\.variants\.ocr-star\.rewards\.task = 'ocrr' \(from -S\): "
               r"Input should be 'geneval', 'ocr' or 'pickscore'$")
    with pytest.raises(ConfigError, match=message):
        load_config(REPO / "params.yaml", parse_overrides(["studies.tasks.variants.ocr-star.rewards.task=ocrr"]))
    with pytest.raises(ConfigError, match=r"studies\.default\.variants\.star\.gammma = 2 \(from -S\): Extra inputs"):
        load_config(REPO / "params.yaml", parse_overrides(["+studies.default.variants.star.gammma=2"]))
    with pytest.raises(ConfigError, match=r"studies\.default\.variants\.a b = 'a b' .* must be letters, digits"):
        load_config(REPO / "params.yaml", {"studies": {"default": {"variants": {"a b": {}}}}})
    # a knob is checked on its own; a check across knobs runs on the merged section
    cfg = load_config(write(tmp_path, "train: {steps: 10}\n"
                                      "studies: {default: {variants: {w: {sde_window: 6}, x: {sde_window: 11}}}}\n"))
    assert cfg.for_variant("w").train.sde_window == 6, "6 exceeds the default steps, not this config's"
    with pytest.raises(ConfigError, match="sde_window = 11 exceeds steps = 10"):
        cfg.for_variant("x")


def test_params_yaml_is_written_from_the_defaults(tmp_path: Path) -> None:
    """star/config.py holds every default; the committed params.yaml is what `python -m
    pipelines.knobs --write` writes from them (a default changed in one place only fails here)."""
    from pipelines.knobs import main

    main(["--write", str(tmp_path / "params.yaml")])
    assert (REPO / "params.yaml").read_text() == (tmp_path / "params.yaml").read_text(), (
        "params.yaml is not what star/config.py writes: `python -m pipelines.knobs --write params.yaml`")
    assert "# RL post-training\ntrain:\n" in (tmp_path / "params.yaml").read_text(), "sections under headers"


def test_layout_cell_must_leave_room_for_four_objects(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"layout_cell=20 must be 0 or 8\.\.image_size/3=13"):
        load_config(write(tmp_path, "world: {image_size: 40, layout_cell: 20}\n"
                                    "base: {low_res_size: 0, low_res_interleave: 0}\n"))
    free = ("world: {image_size: 40, layout_cell: 0, text_layout: free}\n"
            "base: {low_res_size: 0, low_res_interleave: 0}\n")
    assert load_config(write(tmp_path, free)).world.layout_cell == 0


def test_low_res_interleave_must_leave_full_size_steps_and_have_a_low_res_set(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"base\.low_res_interleave.*use 0 \(none\) or n >= 2"):
        load_config(write(tmp_path, "base: {low_res_interleave: 1}\n"))
    with pytest.raises(ConfigError, match=r"low_res_interleave 2 needs a low-resolution set: low_res_size is 0"):
        load_config(write(tmp_path, "base: {low_res_interleave: 2, low_res_size: 0, low_res_steps: 0}\n"))
    assert load_config(write(tmp_path, "base: {low_res_interleave: 4}\n")).base.low_res_interleave == 4


def test_sde_window_must_fit_the_steps(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train.*sde_window = 11 exceeds steps = 10"):
        load_config(write(tmp_path, "train: {steps: 10, sde_window: 11}\n"))


def test_unquoted_no_of_mixed_precision_survives_a_yaml_rewrite(tmp_path: Path) -> None:
    """`dvc exp run -S` rewrites params.yaml and drops the quotes of 'no' (YAML 1.1: false)."""
    assert load_config(write(tmp_path, "train: {mixed_precision: no}\n")).train.mixed_precision == "no"
    with pytest.raises(ConfigError, match="train.mixed_precision = True"):
        load_config(write(tmp_path, "train: {mixed_precision: yes}\n"))


def test_transformer_token_must_be_as_wide_as_a_latent_patch(tmp_path: Path) -> None:
    """A token narrower than its patch cannot carry the noise out: samples keep a share of ε."""
    text = "model: {mini: {latent_channels: 8, patch_size: 5, heads: 4, head_dim: 32}}\n"
    with pytest.raises(ConfigError, match=r"heads \* head_dim = 128 is narrower than a latent patch .* = 200"):
        load_config(write(tmp_path, text))
    assert load_config(write(tmp_path, text.replace("heads: 4", "heads: 8"))).model.mini.heads == 8


def test_train_fraction_must_train_a_step(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train_fraction = 0\.2 trains floor\(0\.2 \* 4\) = 0 of the 4 steps"):
        load_config(write(tmp_path, "train: {steps: 4, train_fraction: 0.2}\n"))
    assert load_config(write(tmp_path, "train: {steps: 4, train_fraction: 0.25}\n")).train.train_fraction == 0.25



def test_relative_tracking_paths_resolve_to_the_project_also_from_a_dvc_temp_workspace(tmp_path: Path) -> None:
    """`dvc exp run --temp` runs the stages in <project>/.dvc/tmp/exps/…; their MLflow store is
    the project's, not the temporary copy's (deleted afterwards)."""
    from pipelines.tracking import artifact_location, project_root, tracking_uri

    temp = tmp_path / ".dvc" / "tmp" / "exps" / "run" / "tmpabc123"
    temp.mkdir(parents=True)
    assert project_root(temp) == tmp_path.resolve() and project_root(tmp_path) == tmp_path.resolve()
    assert tracking_uri("sqlite:///mlruns.db", temp) == f"sqlite:///{tmp_path.resolve()}/mlruns.db"
    assert tracking_uri("sqlite:////abs/m.db", temp) == "sqlite:////abs/m.db"
    assert tracking_uri("http://server:5000", temp) == "http://server:5000"
    assert artifact_location("mlartifacts", temp) == (tmp_path.resolve() / "mlartifacts").as_uri()
    assert artifact_location("s3://bucket/a", temp) == "s3://bucket/a"


def test_world_text_and_mixture_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"world.text_charset = 'AB\?'"):
        load_config(REPO / "params.yaml", {"world": {"text_charset": "AB?"}})
    with pytest.raises(ConfigError, match=r"4-character texts \(text_lengths\): "
                                          r"4 characters of 2x3 cells of 10 px do not fit a 80 px image"):
        load_config(REPO / "params.yaml", {"world": {"text_lengths": {4: 1}}})
    with pytest.raises(ConfigError, match=r"3-character texts .* do not fit a 70 px image"):  # 7 cells: no margin left
        load_config(REPO / "params.yaml", {"world": {"image_size": 70, "text_layout": "cells", "text_lengths": {3: 1}}})
    with pytest.raises(ConfigError, match=r"text_layout='cells' .* needs layout_cell > 0"):
        load_config(REPO / "params.yaml", {"world": {"layout_cell": 0, "text_layout": "cells", "text_lengths": {2: 1}}})
    cells = load_config(REPO / "params.yaml", {"world": {"text_layout": "cells", "text_lengths": {2: 1, 3: 1}}})
    assert cells.world.text_lengths == {2: 1.0, 3: 1.0}
    with pytest.raises(ConfigError, match=r"base.mixture.*unknown: \['shapes'\]"):
        load_config(REPO / "params.yaml", {"base": {"mixture": {"shapes": 1.0}}})
    with pytest.raises(ConfigError, match=r"base.full_size_mixture.*unknown: \['sign'\]"):
        load_config(REPO / "params.yaml", {"base": {"full_size_mixture": {"sign": 1.0}}})


def test_the_order_of_mixture_and_length_keys_does_not_change_the_run() -> None:
    """Draws follow key order while Config equality and `fingerprint` ignore it: the config puts
    the families and sign lengths in one order, so a reordered params.yaml renders the same set."""
    import numpy as np

    from star.config import config_from_dict
    from star.world.prompts import sample_training_scene, world_text

    cfg = load_config(REPO / "params.yaml")
    data = cfg.model_dump()
    data["base"]["mixture"] = dict(reversed(cfg.base.mixture.items()))
    data["world"]["text_lengths"] = {3: 0.5, 2: 0.5}
    other = config_from_dict(data, "reordered")
    assert list(other.base.mixture) == list(cfg.base.mixture) and list(other.world.text_lengths) == [2, 3]

    def prompts(c: Config) -> list[str]:
        rng = np.random.default_rng(0)
        return [sample_training_scene(rng, 32, text=world_text(c.world), mixture=c.base.mixture)[1]
                for _ in range(40)]

    assert prompts(other) == prompts(cfg)


def test_params_with_another_algorithm_train_every_variant_with_it(tmp_path: Path) -> None:
    """``dvc exp run -S train.algorithm=nft`` rewrites params.yaml; every study variant then trains
    with that objective (and its allocation), and its MLflow run says so in its name."""
    from pipelines.tracking import run_name
    from star.rl.dgpo import DgpoObjective
    from star.rl.nft import NftObjective
    from star.rl.trainer import build_objective

    for algorithm, kind in (("nft", NftObjective), ("dgpo", DgpoObjective)):
        overridden = load_config(REPO / "params.yaml", parse_overrides([f"train.algorithm={algorithm}"]))
        cfg = overridden.for_study("ablations")
        for variant in ("grpo-none", "grpo-star", "grpo-oracle"):
            train = cfg.for_variant(variant).train
            objective = build_objective(train, 2)
            assert isinstance(objective, kind) and objective.mode == train.allocation
        tags = {"variant": "none", "seed": "0", "algorithm": algorithm}
        assert run_name("train", tags) == f"train-{algorithm}-none-s0"
    assert run_name("train", {"variant": "nft-star", "seed": "1", "algorithm": "nft"}) == "train-nft-star-s1"
    assert run_name("train", {"variant": "star", "seed": "1", "algorithm": "grpo"}) == "train-star-s1"
    with pytest.raises(ConfigError, match="dgpo.timesteps"):
        load_config(REPO / "params.yaml", parse_overrides(["train.algorithm=dgpo", "train.dgpo.timesteps=9"]))


def test_runs_name_their_study_experiment_and_their_stage_command() -> None:
    """One MLflow experiment per study, and each run's source is the command that ran its stage
    (MLflow alone would record ``__main__.py``)."""
    from pipelines.tracking import experiment_name, stage_command

    cfg = load_config(REPO / "params.yaml")
    assert [experiment_name(cfg.for_study(s)) for s in ("default", "tasks", "ablations")] == [
        "star", "star-tasks", "star-ablations"]
    assert stage_command(["/p/pipelines/__main__.py", "train", "--variant", "star", "--seed", "0"]) == (
        "python -m pipelines train --variant star --seed 0")
    assert stage_command(["/p/pipelines/report.py", "--study", "tasks"]) == "python -m pipelines.report --study tasks"
    assert stage_command(["/usr/bin/pytest", "-x"]) is None


def test_the_report_calls_a_reference_flow_grpo_only_when_it_is_one() -> None:
    from pipelines.report import reference_description
    from star.config import config_from_dict
    from star.evaluation.report import study_sections

    def described(variants: dict) -> list[tuple[str, str]]:
        data = load_config(REPO / "params.yaml").model_dump()
        data["studies"]["default"] |= {"variants": variants, "contrasts": []}  # replaced, not merged
        cfg = config_from_dict(data, "test")
        return [(s.reference, reference_description(s)) for s in study_sections(cfg)]

    first = "the first variant: this task has no Flow-GRPO variant"
    grpo_star = {"algorithm": "grpo", "allocation": "star"}
    grpo_none = {"algorithm": "grpo", "allocation": "none"}
    assert described({"nft": {"algorithm": "nft", "allocation": "none"}}) == [("nft", first)]
    # GRPO with STAR's allocation is not Flow-GRPO, though it is the same algorithm
    assert described({"g-star": grpo_star}) == [("g-star", first)]
    assert described({"g-star": grpo_star, "g-none": grpo_none}) == [
        ("g-none", "Flow-GRPO on this task's reward")]

