"""Parameter groups, per-group cosine schedules, the frozen positional rows, and the optimizer
the trainer builds from its flags."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch

from smartclip import train
from smartclip.checkpoint import load_checkpoint
from smartclip.model import TINY_MODEL, build_model, text_positional_embedding
from smartclip.optim import cosine_lr, cosine_schedules, param_groups, pin_rows
from synthetic.scenes import write_dataset


def names_by_group(model, groups):
    names = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: {names[id(p)] for p in g["params"]} for g in groups}


def test_release_groups_decay_every_backbone_parameter() -> None:
    model = build_model(TINY_MODEL, context_length=77, mask_heads=4)
    groups = param_groups(model, lr=1e-6, wd=0.01, mask_lr=1e-3, mask_wd=0.0)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"backbone", "mask"}
    assert (by_name["backbone"]["lr"], by_name["backbone"]["weight_decay"]) == (1e-6, 0.01)
    assert (by_name["mask"]["lr"], by_name["mask"]["weight_decay"]) == (1e-3, 0.0)
    members = names_by_group(model, groups)
    assert members["mask"] == {n for n, _ in model.named_parameters() if n.startswith("masknet.")}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert members["backbone"] == trainable - members["mask"]
    assert {"clip.positional_embedding", "clip.ln_final.bias"} <= members["backbone"]
    assert "clip.logit_scale" not in trainable  # a fixed scale


def test_skipping_gains_and_biases_is_a_flag() -> None:
    model = build_model(TINY_MODEL, context_length=77, mask_heads=4)
    groups = param_groups(model, 1e-2, 0.1, 3e-3, 0.0, wd_skip_gain_bias=True)
    members = names_by_group(model, groups)
    no_wd = members["backbone_no_wd"]
    assert {"clip.positional_embedding", "clip.token_embedding.weight"} <= no_wd
    assert {"clip.visual.class_embedding", "clip.ln_final.weight", "clip.ln_final.bias"} <= no_wd
    assert "clip.text_projection" in members["backbone"]
    assert {g["name"]: g["weight_decay"] for g in groups}["backbone_no_wd"] == 0.0


def test_mask_network_has_its_own_schedule_without_warmup() -> None:
    model = build_model(TINY_MODEL, context_length=77, mask_heads=4)
    optimizer = torch.optim.AdamW(param_groups(model, 1e-2, 0.0, 1e-1, 0.0))
    schedule = cosine_schedules(optimizer, total=100, warmup=10, mask_warmup=0)
    lrs = []
    for _ in range(100):
        lrs.append({g["name"]: g["lr"] for g in optimizer.param_groups})
        optimizer.step()
        schedule.step()
    assert lrs[0]["mask"] == pytest.approx(1e-1) and lrs[0]["backbone"] == pytest.approx(1e-3)
    assert lrs[9]["backbone"] == pytest.approx(1e-2)
    assert lrs[50]["mask"] == pytest.approx(1e-1 * cosine_lr(50, 100, 0))
    assert lrs[50]["backbone"] == pytest.approx(1e-2 * cosine_lr(50, 100, 10))


def test_pinned_rows_stay_bitwise_fixed_under_weight_decay() -> None:
    """The kept positions are frozen although every backbone parameter is decayed (a zeroed
    gradient alone would still let AdamW's decoupled decay shrink them)."""
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, context_length=248, mask_heads=4)
    optimizer = torch.optim.AdamW(param_groups(model, 1e-2, 0.1, 1e-3, 0.0))
    pos = text_positional_embedding(model.clip)
    pin_rows(optimizer, pos, 20)
    before = pos.detach().clone()
    text = open_clip.get_tokenizer(TINY_MODEL, context_length=248)(["word " * 40])
    for _ in range(3):
        optimizer.zero_grad()
        out = model(torch.randn(1, 3, 64, 64), text)
        (out.u.sum() + out.t.sum()).backward()
        optimizer.step()
    assert torch.equal(pos[:20], before[:20])
    assert (pos[20:40] != before[20:40]).any(dim=1).all()
    assert (pos[200:] != before[200:]).any(dim=1).all()  # unused rows: decay alone moves them


def test_modules_trained_from_scratch_take_the_mask_rate():
    model = build_model(TINY_MODEL, context_length=77, with_mask=False, with_calibration=True)
    members = names_by_group(model, param_groups(model, 1e-6, 0.01, 1e-3, 0.0))
    calibration = {n for n, _ in model.named_parameters() if n.startswith("calibration.")}
    assert calibration and members["mask"] == calibration


def test_the_trainer_builds_adamw_from_its_flags(tmp_path: Path) -> None:
    """A one-step tiny run through the command line: the optimizer state in its checkpoint has
    --beta1/--beta2/--eps in every group, and the backbone and mask network groups each their own
    weight decay and base rate (values unlike any default, so a swap or a default shows)."""
    files = write_dataset(tmp_path / "data", 10, ("csv",), val_fraction=0.0)
    train.main([
        "--preset", "tiny-smartclip", "--train-data", str(files["train"].annotations["csv"]),
        "--batch-size", "8", "--context-length", "77", "--steps", "1", "--workers", "0",
        "--logs", str(tmp_path / "runs"), "--name", "adamw",
        "--beta1", "0.8", "--beta2", "0.95", "--eps", "1e-7",
        "--lr", "3e-4", "--wd", "0.03", "--mask-lr", "2e-3", "--mask-wd", "0.002",
    ])  # fmt: skip
    ckpt = load_checkpoint(tmp_path / "runs" / "adamw" / "checkpoints" / "latest.pt")
    groups = {g["name"]: g for g in ckpt["optimizer"]["param_groups"]}
    assert set(groups) == {"backbone", "mask"}
    for group in groups.values():
        assert (tuple(group["betas"]), group["eps"]) == ((0.8, 0.95), 1e-7)
    assert (groups["backbone"]["weight_decay"], groups["backbone"]["initial_lr"]) == (0.03, 3e-4)
    assert (groups["mask"]["weight_decay"], groups["mask"]["initial_lr"]) == (0.002, 2e-3)
    masknet = [k for k in ckpt["model"] if k.startswith("masknet.")]
    assert len(groups["mask"]["params"]) == len(masknet)
