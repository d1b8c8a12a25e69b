"""The trainer's defaults are the released recipe, as the recipe table of docs/training.md states
it."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import open_clip
import pytest

from smartclip.cli import parse_config
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
