"""The trainer's defaults are the released recipe, as the recipe table of docs/training.md states
it."""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
from pathlib import Path

import open_clip
import pytest

from smartclip.cli import parse_config
from smartclip.losses import build_objective
from smartclip.train_config import PRESETS, TrainConfig

TRAINING = Path(__file__).resolve().parents[2] / "docs" / "training.md"
RECIPE = (
    "model", "context_length", "keep_positions", "freeze_kept_positions", "beta1", "beta2", "eps",
    "lr", "wd", "wd_skip_gain_bias", "warmup", "mask_lr", "mask_wd", "mask_warmup", "objective",
    "loss_weights", "sparsity", "logit_scale", "batch_size", "global_batch", "accum_freq",
    "epochs", "precision", "sentence_sampling", "caption_fit", "mask_heads", "lock_image",
    "lock_text", "grad_clip_norm",
)  # fmt: skip


def recipe_flags() -> list[str]:
    """Every `--flag value` in the last column of the recipe table of docs/training.md."""
    text = TRAINING.read_text(encoding="utf-8")
    table = text.split("\n## The released recipe is the default\n", 1)[1].split("\n#", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`--" in line]
    flags = []
    for row in rows:
        for code in re.findall(r"`([^`]*)`", row.rsplit("|", 2)[-2]):
            flags += shlex.split(code)
    return flags


def test_the_readme_recipe_table_is_the_default_config() -> None:
    flags = recipe_flags()
    named = {f[2:].replace("-", "_").removeprefix("no_") for f in flags if f.startswith("--")}
    assert set(RECIPE) <= named, sorted(set(RECIPE) - named)
    assert parse_config(TrainConfig, flags) == TrainConfig()


def test_recipe_values_match_design_facts() -> None:
    cfg = TrainConfig()
    assert (cfg.beta1, cfg.beta2, cfg.eps) == (0.9, 0.999, 1e-8)
    assert (cfg.lr, cfg.wd, cfg.wd_skip_gain_bias) == (1e-6, 0.01, False)
    assert (cfg.mask_lr, cfg.mask_wd, cfg.mask_warmup, cfg.warmup) == (1e-3, 0.0, 0, 200)
    assert (cfg.freeze_kept_positions, cfg.keep_positions, cfg.context_length) == (True, 20, 248)
    assert (cfg.loss_weights, cfg.sparsity, cfg.logit_scale) == ((10.0, 10.0, 2.0), "abs", 100.0)
    assert cfg.accumulation(8) == 1 and cfg.accumulation(1) == 8  # 1,024 // (128 × GPUs)
    # the mask network is one standard CLIP residual attention block at the text width: as many
    # heads as ViT-B/16's text tower (512 wide, 8 heads)
    text = open_clip.get_model_config(cfg.model)["text_cfg"]
    assert cfg.mask_heads == text["heads"] == 8 and text["width"] == 512


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_configs(name: str) -> None:
    """A preset names real fields, each with a value unlike its default (no inert entry); --preset
    applies all of them over the defaults, explicit flags win over it, and the model it names
    exists with a text width the mask network's heads divide."""
    preset = PRESETS[name]
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert set(preset) <= set(defaults), sorted(set(preset) - set(defaults))
    assert all(value != defaults[key] for key, value in preset.items()), preset
    cfg = parse_config(TrainConfig, ["--preset", name], presets=PRESETS)
    assert cfg == dataclasses.replace(TrainConfig(), **preset)
    assert all(getattr(cfg, key) == value for key, value in preset.items())
    flagged = parse_config(TrainConfig, ["--preset", name, "--epochs", "7"], presets=PRESETS)
    assert flagged == dataclasses.replace(cfg, epochs=7)
    assert cfg.model in open_clip.list_models()
    assert open_clip.get_model_config(cfg.model)["text_cfg"]["width"] % cfg.mask_heads == 0


def test_the_longclip_release_preset_is_long_clips_recipe() -> None:
    """beichenzbc/Long-CLIP: 16 GPUs × 128 pairs (`train/train_slurm.sh`, `--batch-size`), 6
    epochs (`train/train.md`), log s learned from 4.6052 (`train/train.py`), lr 1e-6, wd 0.01,
    200 warm-up steps, AdamW 0.9/0.999/1e-8; its coarse term keeps 32 components, PCA'd per GPU
    before the gather, of the short caption before the first ". "."""
    cfg = parse_config(TrainConfig, ["--preset", "longclip-release"], presets=PRESETS)
    assert cfg.objective == "longclip" and cfg.learn_logit_scale
    assert math.log(cfg.logit_scale) == pytest.approx(4.6052, abs=1e-4)
    assert cfg.global_batch == 16 * cfg.batch_size == 2048 and cfg.accumulation(16) == 1
    assert (cfg.epochs, cfg.lr, cfg.wd, cfg.wd_skip_gain_bias, cfg.warmup) == (
        6, 1e-6, 0.01, False, 200,
    )  # fmt: skip
    assert (cfg.beta1, cfg.beta2, cfg.eps, cfg.precision) == (0.9, 0.999, 1e-8, "amp")
    assert (cfg.context_length, cfg.keep_positions, cfg.freeze_kept_positions) == (248, 20, True)
    objective = build_objective(cfg.objective, **cfg.objective_settings())
    assert (objective.components(512), objective.components(768)) == (32, 32)
    assert (objective.pca_scope, objective.label_smoothing) == ("rank", 0.1)
    assert objective.coarse_weight == objective.fine_weight == 1.0
    assert cfg.short_caption == "release"


def test_help_with_objective_longclip_names_the_release_values(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        parse_config(TrainConfig, ["--objective", "longclip", "--help"], presets=PRESETS)
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for said in (
        "--preset {longclip-release,",
        "for Long-CLIP's released recipe (2,048 pairs a step, 6 epochs, logit scale learned "
        "from 100) add --preset longclip-release",
        "the release's 32 at B/16 and L/14",
        "before the gather (rank; the release) or over the gathered batch (global) "
        "(default: 'rank')",
        "(text before the first '. ', Long-CLIP's)",
        "(a cap of ours; MulCLIP uses every sentence) (default: 8)",
    ):
        assert said in text, said
    assert text.count("(assumed") == 5  # MulCLIP's λ_W, λ_S, τ_a, τ_w and top-k


def test_objective_settings_reach_each_objective() -> None:
    defaults = TrainConfig().objective_settings()
    assert defaults["weights"] == (10.0, 10.0, 2.0)
    long = build_objective("longclip", **defaults)
    assert (long.pca_components, long.pca_scope) == (32, "rank")
    mul = build_objective("mulclip", **defaults)
    assert (mul.short_weight, mul.word_weight, mul.sub_weight, mul.sub_topk) == (1.0, 1.0, 1.0, 16)
    assert (mul.attn_temperature, mul.word_temperature) == (0.1, 0.1)
    flags = ["--pca-components", "none", "--pca-share", "0.25", "--pca-scope", "global"]
    flags += ["--short-weight", "0.5", "--sub-topk", "3", "--word-temperature", "0.2"]
    cfg = parse_config(TrainConfig, flags)
    long = build_objective("longclip", **cfg.objective_settings())
    assert (long.components(16), long.pca_scope) == (4, "global")
    mul = build_objective("mulclip", **cfg.objective_settings())
    assert (mul.short_weight, mul.sub_topk, mul.word_temperature) == (0.5, 3, 0.2)
    assert build_objective("smartclip", **cfg.objective_settings()).weights == (10.0, 10.0, 2.0)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--pca-components", "0"], "--pca-components"),
        (["--pca-share", "1.5"], "--pca-share"),
        (["--pca-scope", "node"], "--pca-scope"),
        (["--short-weight", "-1"], "--short-weight"),
        (["--word-temperature", "0"], "--word-temperature"),
        (["--sub-topk", "0"], "--sub-topk"),
        (["--calibration-share", "0"], "--calibration-share"),
        (["--max-sentences", "0"], "--max-sentences"),
        (["--short-caption", "first"], "--short-caption"),
    ],
)
def test_bad_long_caption_settings_exit_with_one_line(argv, flag, one_line_error) -> None:
    one_line_error(lambda a: parse_config(TrainConfig, a, presets=PRESETS), argv, flag)
