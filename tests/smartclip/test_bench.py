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


@pytest.mark.parametrize("context", [77, 248])
def test_calibration_flops_match_counted_projections_and_aggregations(context):
    """MulCLIP's calibration, counted on the tiny model: the patch and token states projected to
    the joint space, then aggregated; forward, and forward + backward (3 ×) with inputs that
    carry gradients, as the towers' states do in training."""
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, None, context, with_mask=False, with_calibration=True)
    config = open_clip.get_model_config(TINY_MODEL)
    v, t, d = config["vision_cfg"], config["text_cfg"], config["embed_dim"]
    patches = (v["image_size"] // v["patch_size"]) ** 2
    batch = 3
    patch_states = torch.randn(batch, patches, v["width"], requires_grad=True)
    token_states = torch.randn(batch, context, t["width"], requires_grad=True)
    real = torch.arange(context)[None, :] < torch.tensor([[5], [context], [9]])

    def forward():
        joint = patch_states @ model.clip.visual.proj, model._project_tokens(token_states)
        return model.calibration(*joint, real)

    analytic = bench.calibration_flops(config, context)
    with torch.no_grad():
        assert counted(forward) / batch == pytest.approx(sum(analytic.values()), rel=1e-6)
    assert model.calibration.tokens_out == 12  # ⌊0.2 · 64⌋ of the tiny towers' patches
    hidden = int(0.2 * d)
    by_hand = 2 * (patches + context) * (d * hidden + hidden * 12 + 12 * d)
    assert analytic["aggregation"] == by_hand
    trained = counted(lambda: sum(x.sum() for x in forward()).backward()) / batch
    assert trained == pytest.approx(3 * sum(analytic.values()), rel=1e-6)


def test_mulclip_step_adds_its_text_passes_and_calibration():
    config = open_clip.get_model_config("ViT-B-16")
    parts = bench.training_flops(config, 248, with_mask=False)
    clip = bench.step_flops_per_sample(config, 248, "clip", 128)
    mulclip = bench.step_flops_per_sample(config, 248, "mulclip", 128)
    calibration = 3 * sum(bench.calibration_flops(config, 248).values())
    loss = 3 * 2 * 2 * 128 * 512
    assert mulclip - clip == pytest.approx((1 + 8) * parts["text"] + loss / 2 + calibration)
    # ViT-B/16: 196 patches → 39 tokens; the calibration is under 1 % of the step
    assert bench.calibration_flops(config, 248)["aggregation"] == pytest.approx(
        2 * (196 + 248) * (512 * 102 + 102 * 39 + 39 * 512)
    )
    assert calibration < 0.01 * clip
