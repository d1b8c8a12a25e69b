"""The throughput benchmark: analytic FLOPs against counted ones, and the CLI on the tiny model."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from smartclip import bench
from smartclip.model import TINY_MODEL, build_model


def counted(fn, *args) -> int:
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


@pytest.mark.parametrize("context", [77, 248])
def test_analytic_forward_flops_match_counted_matmuls(context):
    """The counter sees matmuls and convolutions but not CPU flash attention, so the dense part
    is compared here and the attention term below; neither counts norms or activations."""
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, None, context)
    config = open_clip.get_model_config(TINY_MODEL)
    analytic = bench.forward_flops(config, context, with_mask=True, attention=False)
    batch = 3
    images = torch.randn(batch, 3, 64, 64)
    tokens = torch.randint(1, 1000, (batch, context))
    with torch.no_grad():
        image = counted(model.clip.encode_image, images) / batch
        text = counted(model.clip.encode_text, tokens) / batch
        states = model.text_features(tokens)[1]
        mask = counted(model.masknet, states) / batch
    assert analytic["image"] == pytest.approx(image, rel=0.01)
    assert analytic["text"] == pytest.approx(text, rel=0.01)
    assert analytic["mask"] == pytest.approx(mask, rel=0.01)


def test_attention_term_matches_counted_explicit_attention():
    tokens, width, heads = 50, 96, 3
    q, k, v = (torch.randn(heads, tokens, width // heads) for _ in range(3))
    flops = counted(lambda: torch.softmax(q @ k.transpose(1, 2), -1) @ v)
    dense = bench.layer_flops(tokens, width, attention=False)
    assert bench.layer_flops(tokens, width) - dense == flops


@pytest.mark.parametrize("context", [77, 248])
def test_training_flops_match_counted_forward_and_backward(context):
    """Backward multipliers: every part costs 3 × its forward except the patch embedding (pixels
    need no gradient); the mask network too, although its input is detached (its first
    LayerNorm's parameters need the first projection's input gradient)."""
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, None, context)
    config = open_clip.get_model_config(TINY_MODEL)
    analytic = bench.training_flops(config, context, with_mask=True, attention=False)
    forward = bench.forward_flops(config, context, with_mask=True, attention=False)
    batch = 3
    images = torch.randn(batch, 3, 64, 64)
    tokens = torch.randint(1, 1000, (batch, context))
    states = model.text_features(tokens)[1].detach()
    image = counted(lambda: model.clip.encode_image(images).sum().backward()) / batch
    text = counted(lambda: model.clip.encode_text(tokens).sum().backward()) / batch
    mask = counted(lambda: model.masknet(states).sum().backward()) / batch
    assert analytic["image"] == pytest.approx(image, rel=0.01)
    assert analytic["text"] == pytest.approx(text, rel=0.01)
    assert analytic["mask"] == pytest.approx(mask, rel=0.01)
    assert mask == pytest.approx(3 * forward["mask"], rel=0.01)  # not 2 ×


def test_step_flops_add_the_loss_and_the_mask_network():
    config = open_clip.get_model_config("ViT-B-16")
    parts = bench.training_flops(config, 248, with_mask=True)
    clip = bench.step_flops_per_sample(config, 248, "clip", 1024)
    smart = bench.step_flops_per_sample(config, 248, "smartclip", 1024)
    assert clip == pytest.approx(parts["image"] + parts["text"] + 3 * 4 * 1024 * 512)
    assert smart - clip == pytest.approx(parts["mask"])
    # ViT-B/16 at 224 px: the 17.6 G multiply-adds per image that ViT/DeiT tables list as "FLOPs"
    assert bench.forward_flops(config, 77, False)["image"] == pytest.approx(2 * 17.6e9, rel=0.02)


def test_cli_times_every_objective_beside_clip_on_cpu(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["--models", TINY_MODEL, "--context-length", "77", "--steps", "2", "--rounds", "2"]
    rows = bench.main([*args, "--warmup-steps", "1", "--batch-size", "4", "--output", str(out)])
    assert [r["objective"] for r in rows] == list(bench.OBJECTIVES)
    saved = json.loads(out.read_text())
    assert saved["device"] == "cpu" and len(saved["results"]) == len(bench.OBJECTIVES)
    for r in saved["results"]:
        assert r["samples_per_s"] > 0 and r["mfu"] is None and r["peak_memory_gib"] > 0
        assert r["rounds"] == 2 and r["over_clip"] > 0
    clip = next(r for r in rows if r["objective"] == "clip")
    assert clip["over_clip"] == 1.0
    assert capsys.readouterr().out.count("step / CLIP step") == len(bench.OBJECTIVES)


def test_flops_only_reports_the_analytic_ratio_without_running_a_step(tmp_path, capsys):
    out = tmp_path / "flops.json"
    rows = bench.main(["--flops-only", "--models", "ViT-B-16", "--output", str(out)])
    config = open_clip.get_model_config("ViT-B-16")
    by = {r["objective"]: r for r in rows}
    assert set(by) == set(bench.OBJECTIVES) and by["clip"]["over_clip"] == 1.0
    clip = bench.step_flops_per_sample(config, 248, "clip", 128)
    smart = bench.step_flops_per_sample(config, 248, "smartclip", 128)
    assert by["smartclip"]["over_clip"] == pytest.approx(smart / clip)
    # the mask network is one text layer of twelve plus a projection: a few percent, not more
    assert 1.01 < by["smartclip"]["over_clip"] < 1.06
    # MulCLIP runs the text tower on the short caption and every sub-caption slot besides
    assert by["mulclip"]["over_clip"] > by["longclip"]["over_clip"] > by["smartclip"]["over_clip"]
    assert json.loads(out.read_text())["analytic"] == rows
    assert "samples/s" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--models", "ViT-Z-99"], "--models"),
        (["--steps", "0"], "--steps"),
        (["--objectives", "siglip"], "--objectives"),
        (["--precision", "fp8"], "--precision"),
    ],
)
def test_bad_flags_exit_with_one_line(argv, flag, one_line_error):
    one_line_error(bench.main, argv, flag)
