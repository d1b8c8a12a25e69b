"""Retrieval, zero-shot and latent-R² evaluation; cross-checked against CLIP_benchmark's method."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from itertools import permutations
from math import comb
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from open_clip import factory as open_clip_factory
from PIL import Image

from smartclip import eval as sc_eval
from smartclip import retrieval
from smartclip.builtin import scenes_root
from smartclip.export import EXPORT_WEIGHTS_NAME, export_open_clip, export_run
from smartclip.hard_negatives import (
    SUGARCREPE_CATEGORIES,
    HardNegative,
    load_hard_negatives_csv,
    load_sugarcrepe,
)
from smartclip.model import TINY_CONFIG, TINY_MODEL, create_clip
from smartclip.results_table import weights_name
from smartclip.train_config import DEMO_STAGES
from synthetic.scenes import write_dataset


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch) -> None:
    """Every test runs in its own folder: the command line writes its JSON to the current one."""
    monkeypatch.chdir(tmp_path)


def benchmark_recall(images: torch.Tensor, texts: torch.Tensor, index: torch.Tensor, k: int):
    """CLIP_benchmark's zero-shot retrieval computation, written independently: a positive-pair
    matrix, top-k indices one-hot encoded, a query counts if any top-k item is positive."""

    def recall_at_k(scores, positive_pairs, k):
        n_queries, n_items = scores.shape
        top = torch.topk(scores, k, dim=1).indices
        onehot = torch.nn.functional.one_hot(top, num_classes=n_items)
        true_positive = (onehot * positive_pairs.view(n_queries, 1, n_items)).sum(dim=(1, 2))
        return true_positive / positive_pairs.sum(dim=1)

    scores = texts @ images.T
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(scores)), index] = True
    t2i = (recall_at_k(scores, positive, k) > 0).float().mean().item() * 100
    i2t = (recall_at_k(scores.T, positive.T, k) > 0).float().mean().item() * 100
    return t2i, i2t


def random_benchmark(seed: int, n_images: int = 40, dim: int = 16):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, 6, (n_images,), generator=g)  # 1-5 captions per image
    index = torch.repeat_interleave(torch.arange(n_images), counts)
    images = torch.nn.functional.normalize(torch.randn(n_images, dim, generator=g), dim=-1)
    noise = torch.randn(len(index), dim, generator=g)
    texts = torch.nn.functional.normalize(images[index] + 0.9 * noise, dim=-1)
    return images, texts, index


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_matches_clip_benchmark(seed):
    images, texts, index = random_benchmark(seed)
    ours = retrieval.retrieval_metrics(images, texts, index)
    for k in (1, 5, 10):
        t2i, i2t = benchmark_recall(images, texts, index, k)
        assert ours[f"t2i_r{k}"] == pytest.approx(t2i)
        assert ours[f"i2t_r{k}"] == pytest.approx(i2t)
    assert 0 < ours["t2i_r1"] < 100  # the data is neither trivial nor hopeless


def test_perfect_and_reversed_embeddings():
    images, _, index = random_benchmark(3)
    perfect = retrieval.retrieval_metrics(images, images[index], index)
    assert all(v == 100 for v in perfect.values())
    worst = retrieval.retrieval_metrics(images, -images[index], index, ks=(1,))
    assert worst["t2i_r1"] == 0 and worst["i2t_r1"] == 0


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.permutations(list(range(12))))
def test_recall_ignores_image_order_and_grows_with_k(seed, perm):
    images, texts, index = random_benchmark(seed, n_images=12, dim=6)
    perm = torch.tensor(perm)
    inverse = torch.argsort(perm)
    base = retrieval.retrieval_metrics(images, texts, index, ks=(1, 3, 12))
    shuffled = retrieval.retrieval_metrics(images[perm], texts, inverse[index], ks=(1, 3, 12))
    assert shuffled == pytest.approx(base)
    for name in ("t2i", "i2t"):
        assert base[f"{name}_r1"] <= base[f"{name}_r3"] <= base[f"{name}_r12"]
    assert base["t2i_r12"] == 100  # every image is in the top 12 of 12


def test_zeroshot_metrics_known_answer():
    classes = torch.eye(3)
    images = torch.tensor([[1.0, 0, 0], [0, 0.9, 0.1], [0.2, 0.1, 0.7], [0.6, 0.5, 0]])
    labels = torch.tensor([0, 1, 2, 1])
    got = retrieval.zeroshot_metrics(images, classes, labels)
    assert got == {"top1": 75.0, "top5": 100.0}


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> str:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / EXPORT_WEIGHTS_NAME
    torch.save(create_clip(TINY_MODEL, context_length=77).state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict:
    return write_dataset(tmp_path_factory.mktemp("scenes"), 40, ("csv", "coco", "karpathy"))


def test_eval_cli_on_generated_scenes_agrees_with_the_reference(tiny_weights, scenes, tmp_path):
    val = scenes["train"]  # more images than the val split; the weights never saw either
    out = tmp_path / "eval.json"
    args = ["--model", TINY_MODEL, "--pretrained", tiny_weights, "--data"]
    args += [val.annotations["csv"], "--csv-id-key", "image_id", "--latents", str(val.latents)]
    results = sc_eval.main([*args, "--output", str(out)])
    written = json.loads(out.read_text())["results"]
    assert written == json.loads(json.dumps(results))
    table = out.with_suffix(".md").read_text().splitlines()  # the same numbers as markdown
    assert table[0] == f"| metric | {weights_name(tiny_weights)} |"
    cells = dict(line.strip("|").split(" | ") for line in table[2:])
    assert cells[" retrieval.images"] == f"{results[0]['retrieval']['images']} "
    r2 = results[0]["latent_r2"]
    assert {k.removeprefix(" latent_r2.") for k in cells if "latent_r2." in k} == set(r2)
    for name, value in r2.items():
        assert float(cells[f" latent_r2.{name}"]) == pytest.approx(value, abs=5e-4)
    recall = results[0]["retrieval"]
    assert recall["images"] == len(val.images) and recall["captions"] > recall["images"]
    assert set(results[0]["latent_r2"]) == set(sc_eval.SCENE_ATTRIBUTES)

    # the same numbers from embeddings computed here and CLIP_benchmark's method
    clip = create_clip(TINY_MODEL, tiny_weights).eval()
    model = sc_eval.SmartCLIPModel(clip, with_mask=False).eval()
    eval_set = sc_eval.build_eval_set(val.annotations["csv"], id_key="image_id")
    cpu = torch.device("cpu")
    transform, autocast = sc_eval.preprocess(clip), sc_eval.autocast_context("fp32", cpu)
    images = retrieval.encode_images(model, eval_set, transform, cpu, autocast)
    tokenizer = sc_eval.open_clip.get_tokenizer(TINY_MODEL, context_length=clip.context_length)
    texts = retrieval.encode_texts(model, tokenizer, eval_set.captions, cpu, autocast)
    for k in (1, 5, 10):
        t2i, i2t = benchmark_recall(images, texts, eval_set.text_to_image, k)
        assert recall[f"t2i_r{k}"] == pytest.approx(t2i)
        assert recall[f"i2t_r{k}"] == pytest.approx(i2t)


def test_coco_layout_gives_the_same_retrieval_as_csv(tiny_weights, scenes):
    val = scenes["val"]
    base = ["--model", TINY_MODEL, "--pretrained", tiny_weights]
    from_csv = sc_eval.main([*base, "--data", val.annotations["csv"], "--csv-id-key", "image_id"])
    from_coco = sc_eval.main([*base, "--data", val.annotations["coco"]])
    keys = [f"{n}_r{k}" for n in ("t2i", "i2t") for k in (1, 5, 10)]
    a, b = from_csv[0]["retrieval"], from_coco[0]["retrieval"]
    assert (a["images"], a["captions"]) == (b["images"], b["captions"])
    assert [a[k] for k in keys] == pytest.approx([b[k] for k in keys])


def test_karpathy_split_selects_the_test_images(tiny_weights, scenes):
    base = ["--pretrained", tiny_weights, "--data", scenes["val"].annotations["karpathy"]]
    val = sc_eval.main([*base, "--split", "val"])[0]["retrieval"]
    both = sc_eval.main(base)[0]["retrieval"]
    assert val["images"] == len(scenes["val"].images) < both["images"]


COLOURS = ("red", "orange", "yellow", "green", "blue", "indigo", "violet")


class ScoreModel(torch.nn.Module):
    """A stand-in whose predictions are known: an image's embedding is the score vector written
    in its first pixel row, a prompt's embedding the one-hot of the colour it names."""

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, 0, : len(COLOURS)]

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(tokens[:, 0], len(COLOURS)).float()


def colour_tokenizer(prompts: list[str]) -> torch.Tensor:
    return torch.tensor([[next(i for i, c in enumerate(COLOURS) if c in p)] for p in prompts])


def score_image(path: Path, scores: dict[int, int]) -> Path:
    """A 16x1 PNG whose first pixel row holds `scores` ({position: 0-255}), zeros elsewhere:
    ScoreModel's embedding of it."""
    row = np.zeros((1, 16), np.uint8)
    for position, value in scores.items():
        row[0, position] = value
    Image.fromarray(np.repeat(row[:, :, None], 3, axis=2)).save(path)
    return path


@pytest.mark.parametrize("templates", [("a {}.",), ("a {}.", "a photo of a {}.")])
def test_zeroshot_on_a_class_folder_with_known_predictions(tmp_path, templates):
    """Seven classes; each image ranks its own class 1st, 2nd, 5th or 6th, so top-1 and top-5
    are known exactly (a folder walk, template ensemble or metric bug changes them)."""
    from torchvision.transforms import ToTensor

    ranks = {"red": [1, 2], "green": [1, 6], "violet": [5, 1, 1]}  # own-class rank per image
    for name in COLOURS:
        (tmp_path / name).mkdir()
    for name, image_ranks in ranks.items():
        own = COLOURS.index(name)
        for i, rank in enumerate(image_ranks):
            others = [c for c in range(len(COLOURS)) if c != own]
            order = others[: rank - 1] + [own] + others[rank - 1 :]  # best first
            scores = {c: 250 - 30 * place for place, c in enumerate(order)}
            score_image(tmp_path / name / f"{i}.png", scores)
    (tmp_path / "notes.txt").write_text("not a class")
    cpu = torch.device("cpu")
    got = retrieval.evaluate_zeroshot(
        ScoreModel(), colour_tokenizer, ToTensor(), tmp_path, templates, cpu, nullcontext
    )
    assert (got["classes"], got["images"]) == (7, 7)
    assert got["top1"] == pytest.approx(100 * 4 / 7)
    assert got["top5"] == pytest.approx(100 * 6 / 7)


def test_zeroshot_cli_on_real_weights_counts_classes_and_images(tiny_weights, tmp_path):
    rng = np.random.default_rng(0)
    for name, colour in (("red_square", (220, 30, 30)), ("blue_square", (30, 30, 220))):
        (tmp_path / name).mkdir()
        for i in range(3):
            pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (32, 32, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / name / f"{i}.png")
    results = sc_eval.main(
        ["--pretrained", tiny_weights, "--zeroshot-dir", str(tmp_path), "--templates", "a {}."]
    )
    assert (results[0]["zeroshot"]["classes"], results[0]["zeroshot"]["images"]) == (2, 6)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--data", "/no/such.csv"], "--data"),
        (["--pretrained", "/no/weights.bin"], "--pretrained"),
        (["--templates", "a photo"], "--templates"),
        (["--latents", "x.npz"], "--latents"),
        (["--batch-size", "0"], "--batch-size"),
        (["--image-root", "/no/such/folder"], "--image-root"),
        (["--sugarcrepe", "/no/such/folder"], "--sugarcrepe"),
        (["--sugarcrepe", "."], "--sugarcrepe-image-root"),  # where are the COCO images?
        (["--sugarcrepe", ".", "--sugarcrepe-image-root", "/no/such"], "--sugarcrepe-image-root"),
        (["--hard-negatives", "/no/hard_negatives.csv"], "--hard-negatives"),
    ],
)
def test_bad_flags_exit_with_one_line(argv, flag, one_line_error):
    one_line_error(sc_eval.main, argv, flag)


def test_unusable_weights_end_as_one_line(tmp_path):
    weights = tmp_path / "ViT-B-16.pt"
    weights.write_bytes(b"<html>not found</html>")
    with pytest.raises(SystemExit) as info:
        sc_eval.main(["--model", TINY_MODEL, "--pretrained", str(weights)])
    message = str(info.value.code)
    assert message.startswith(f"smartclip.eval: error: {weights}: neither"), message
    assert "\n" not in message


def test_no_argument_run_without_training_runs_says_what_to_do(tmp_path):
    with pytest.raises(SystemExit) as info:
        sc_eval.demo_config(tmp_path)
    assert "python -m smartclip.train" in str(info.value.code)


def test_demo_config_finds_the_newest_runs(tmp_path):
    for stamp in ("2026_01_01", "2026_02_02"):
        for stage in ("tiny-clip", *DEMO_STAGES):
            export = tmp_path / f"{stamp}-{stage}" / "export" / EXPORT_WEIGHTS_NAME
            export.parent.mkdir(parents=True)
            export.write_bytes(b"")
            config = {"model": TINY_MODEL, "scenes_dir": str(tmp_path), "scenes_images": 20}
            (export.parent.parent / "config.json").write_text(json.dumps(config))
    found = sc_eval.latest_demo(tmp_path)
    assert [export_run(p).name for p in found.values()] == [
        f"2026_02_02-{stage}" for stage in ("tiny-clip", *DEMO_STAGES)
    ]


def test_same_numbers_as_the_clip_benchmark_package(tiny_weights, scenes):
    """The installed CLIP_benchmark's own `evaluate` on the same model and data (CI installs it)."""
    reference = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")
    val = scenes["train"]
    ours = sc_eval.main(
        ["--pretrained", tiny_weights, "--data", val.annotations["csv"], "--csv-id-key", "image_id"]
    )[0]["retrieval"]
    clip = create_clip(TINY_MODEL, tiny_weights).eval()
    model = sc_eval.SmartCLIPModel(clip, with_mask=False).eval()
    eval_set = sc_eval.build_eval_set(val.annotations["csv"], id_key="image_id")
    images = list(eval_set.image_loader(sc_eval.preprocess(clip), batch_size=len(eval_set.images)))
    texts = [[eval_set.captions[t] for t in ts] for ts in eval_set.image_to_texts()]
    loader = [(images[0][i : i + 8], texts[i : i + 8]) for i in range(0, len(texts), 8)]
    tokenizer = sc_eval.open_clip.get_tokenizer(TINY_MODEL, context_length=clip.context_length)
    theirs = reference.evaluate(model, loader, tokenizer, "cpu", False, recall_k_list=[1, 5, 10])
    for k in (1, 5, 10):
        assert ours[f"t2i_r{k}"] == pytest.approx(100 * theirs[f"image_retrieval_recall@{k}"])
        assert ours[f"i2t_r{k}"] == pytest.approx(100 * theirs[f"text_retrieval_recall@{k}"])


# ---------------------------------------------------------------------------- hard negatives


def long_captions(captions_csv: str | Path) -> dict[str, str]:
    """{image path as written: its long caption} of a scenes captions.csv."""
    with open(captions_csv, newline="") as fh:
        return {r["filepath"]: r["title"] for r in csv.DictReader(fh) if r["level"] == "long"}


def write_csv(path: Path, rows: list[tuple]) -> Path:
    """A hard_negatives.csv of `rows`, quoted as needed."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filepath", "caption", "negative", "category", "k", "negative_filepath"])
        writer.writerows(rows)
    return path


def test_sugarcrepe_reader_counts_malformed_entries_and_leaves_out_missing_categories(
    tmp_path, caplog
):
    coco = tmp_path / "val2017"
    coco.mkdir()
    for name in ("000000000001.jpg", "000000000002.jpg"):
        Image.new("RGB", (4, 4), "red").save(coco / name, format="PNG")  # a name is just a name
    good = {"filename": "000000000001.jpg", "caption": "a cat on a mat", "negative_caption": "x"}
    folder = tmp_path / "sugar_crepe"
    folder.mkdir()
    add_obj = {
        "0": good,
        "1": {"filename": "000000000002.jpg", "caption": "a dog"},  # no negative caption
        "2": "not an entry",
        "3": {**good, "caption": "  "},  # empty caption
        "4": {**good, "filename": "000000000009.jpg"},  # no such image
    }
    swap_att = {"0": {**good, "filename": "000000000002.jpg", "negative_caption": "a mat on a cat"}}
    (folder / "add_obj.json").write_text(json.dumps(add_obj))
    (folder / "swap_att.json").write_text(json.dumps(swap_att))

    got = load_sugarcrepe(folder, coco)
    assert got.items == (
        HardNegative(coco / "000000000001.jpg", "a cat on a mat", "x", "add_obj"),
        HardNegative(coco / "000000000002.jpg", "a cat on a mat", "a mat on a cat", "swap_att"),
    )
    assert (got.n_malformed, got.n_bad_images) == (3, 1)
    missing = set(SUGARCREPE_CATEGORIES) - {"add_obj", "swap_att"}
    assert all(f"no {c}.json" in caplog.text for c in missing)

    only = load_sugarcrepe(folder, coco, categories=("swap_att",))
    assert [x.category for x in only.items] == ["swap_att"] and only.n_malformed == 0
    with pytest.raises(ValueError, match="unknown SugarCrepe categories"):
        load_sugarcrepe(folder, coco, categories=("swap_obj", "count"))
    with pytest.raises(ValueError, match="none of SugarCrepe's files"):
        load_sugarcrepe(folder, coco, categories=("replace_rel",))
    (folder / "swap_att.json").write_text(json.dumps([good]))
    with pytest.raises(ValueError, match="swap_att.json: SugarCrepe files are JSON objects"):
        load_sugarcrepe(folder, coco)


class CountingScoreModel(ScoreModel):
    """ScoreModel that counts the images and texts it encodes."""

    def __init__(self) -> None:
        super().__init__()
        self.images = self.texts = 0

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        self.images += len(x)
        return super().encode_image(x)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        self.texts += len(tokens)
        return super().encode_text(tokens)


def test_hard_negative_accuracy_with_known_embeddings(tmp_path):
    """ScoreModel embeds red/blue/green captions as one-hots and each image as the scores in its
    first row, so every comparison is known: the four images below are R (red), B (blue),
    RB (red = blue: a tie between them) and G (green). Text side: cos(image, caption) vs
    cos(image, negative); image side: cos(caption, image) vs cos(caption, negative image)."""
    from torchvision.transforms import ToTensor

    red, green, blue = (COLOURS.index(c) for c in ("red", "green", "blue"))
    for name, scores in {"R": {red: 200}, "B": {blue: 200}, "RB": {red: 200, blue: 200}}.items():
        score_image(tmp_path / f"{name}.png", scores)
    score_image(tmp_path / "G.png", {green: 200})
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows = [  # text side, image side
        ("R.png", "a red square", "a blue square", "swap_att", 1, "B.png"),  # right, right
        ("RB.png", "a red square", "a blue square", "swap_att", 1, ""),  # tie, -
        ("B.png", "a red square", "a blue square", "swap_att", 2, "R.png"),  # wrong, wrong
        ("RB.png", "a red square", "a green square", "swap_att", 2, "R.png"),  # right, wrong
        ("G.png", "a green square", "a green thing", "replace_obj", 1, "G.png"),  # tie, tie
        ("G.png", "a green square", "a red square", "replace_obj", 3, ""),  # right, -
        ("R.png", "a red square", "a blue square", "swap_att", 0, ""),  # malformed k
        ("R.png", "a red square", "a blue square", "swap_att", "two", ""),  # malformed k
        ("R.png", "", "a blue square", "swap_att", 1, ""),  # empty caption
        ("missing.png", "a red square", "a blue square", "swap_att", 1, ""),  # no image
        ("R.png", "a red square", "a blue square", "swap_att", 1, "broken.png"),  # bad negative
    ]
    benchmark = load_hard_negatives_csv(write_csv(tmp_path / "hard_negatives.csv", rows))
    assert (len(benchmark.items), benchmark.n_malformed, benchmark.n_bad_images) == (6, 3, 2)
    assert benchmark.items[0].negative_image == tmp_path / "B.png"
    assert benchmark.items[1].negative_image is None

    model, cpu = CountingScoreModel(), torch.device("cpu")
    got = sc_eval.evaluate_hard_negatives(
        model, colour_tokenizer, ToTensor(), benchmark, cpu, nullcontext, batch_size=3
    )
    assert (model.images, model.texts) == (4, 4)  # each distinct image and text once
    expected = {
        "swap_att": {"text": 62.5, "items": 4, "image": 100 / 3, "image_items": 3},
        "swap_att@k1": {"text": 75.0, "items": 2, "image": 100.0, "image_items": 1},
        "swap_att@k2": {"text": 50.0, "items": 2, "image": 0.0, "image_items": 2},
        "replace_obj": {"text": 75.0, "items": 2, "image": 50.0, "image_items": 1},
        "replace_obj@k1": {"text": 50.0, "items": 1, "image": 50.0, "image_items": 1},
        "replace_obj@k3": {"text": 100.0, "items": 1},
        "mean": {
            "text": (62.5 + 75) / 2,
            "categories": 2,
            "image": (100 / 3 + 50) / 2,
            "image_categories": 2,
        },
        "skipped": 5,
    }
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key


def test_unusable_benchmark_files_exit_with_one_line(tmp_path, one_line_error):
    path = tmp_path / "hard_negatives.csv"
    path.write_text("filepath,caption,negative,k\nimages/0.png,a,b,1\n")
    with pytest.raises(ValueError, match="missing columns \\['category'\\]"):
        load_hard_negatives_csv(path)
    one_line_error(sc_eval.main, ["--hard-negatives", str(path)], "--hard-negatives: ")
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["--sugarcrepe", str(empty), "--image-root", str(tmp_path)]
    one_line_error(sc_eval.main, argv, "--sugarcrepe: ")


def test_hard_negative_cli_agrees_across_formats_and_with_the_model(tiny_weights, scenes, tmp_path):
    """The same items as SugarCrepe files and as our CSV give the same text-side accuracy, which
    is the share of items the weights themselves, one item at a time, score right."""
    train = scenes["train"]
    found = long_captions(train.annotations["csv"])
    images, captions = [str(train.root / i) for i in found], list(found.values())
    categories = ("add_obj", "add_att", "swap_att")
    items = [  # image, caption, negative (another image's caption), category, negative image
        (images[n], captions[n], captions[n + 1], categories[n % 3], images[n + 1])
        for n in range(9)
    ]
    folder = tmp_path / "sugar_crepe"
    folder.mkdir()
    for category in categories:
        entries = {
            str(n): {"filename": Path(i).name, "caption": c, "negative_caption": neg}
            for n, (i, c, neg, cat, _) in enumerate(items)
            if cat == category
        }
        (folder / f"{category}.json").write_text(json.dumps(entries))
    rows = [(i, c, neg, cat, 1 + n % 2, ni) for n, (i, c, neg, cat, ni) in enumerate(items)]
    hard_csv = write_csv(tmp_path / "hard_negatives.csv", rows)  # absolute paths
    out = tmp_path / "eval.json"
    argv = ["--pretrained", tiny_weights, "--data", train.annotations["csv"]]
    argv += ["--sugarcrepe", str(folder), "--sugarcrepe-image-root", str(train.root / "images")]
    argv += ["--hard-negatives", str(hard_csv), "--output", str(out)]
    results = sc_eval.main(argv)
    assert json.loads(out.read_text())["results"] == json.loads(json.dumps(results))
    result = results[0]
    sugar, ours = result["sugarcrepe"], result["hard_negatives"]
    assert "retrieval" in result and sugar["skipped"] == ours["skipped"] == 0

    clip = create_clip(TINY_MODEL, tiny_weights).eval()
    transform = sc_eval.preprocess(clip)
    tokenizer = sc_eval.open_clip.get_tokenizer(TINY_MODEL, context_length=clip.context_length)

    def cos(image: str, text: str) -> float:
        pixels = transform(Image.open(image).convert("RGB"))[None]
        with torch.no_grad():
            a, b = clip.encode_image(pixels), clip.encode_text(tokenizer([text]))
        return torch.nn.functional.cosine_similarity(a, b).item()

    def right(positive: float, negative: float) -> float:
        return float(positive > negative) + 0.5 * float(positive == negative)

    for category in categories:
        mine = [it for it in items if it[3] == category]
        text_right = [right(cos(i, c), cos(i, neg)) for i, c, neg, _, _ in mine]
        image_right = [right(cos(i, c), cos(ni, c)) for i, c, _, _, ni in mine]
        assert sugar[category]["items"] == ours[category]["items"] == len(mine)
        assert sugar[category]["text"] == pytest.approx(100 * np.mean(text_right))
        assert ours[category]["text"] == pytest.approx(100 * np.mean(text_right))
        assert ours[category]["image"] == pytest.approx(100 * np.mean(image_right))
        assert "image" not in sugar[category]  # SugarCrepe has no negative images
        assert {f"{category}@k1", f"{category}@k2"} <= set(ours)
    assert sugar["mean_add"]["text"] == pytest.approx(
        (sugar["add_obj"]["text"] + sugar["add_att"]["text"]) / 2
    )
    assert sugar["mean_swap"]["text"] == pytest.approx(sugar["swap_att"]["text"])
    assert "mean_replace" not in sugar and "mean_add" not in ours


def test_no_argument_run_evaluates_the_scenes_hard_negatives_when_they_exist(
    tiny_weights, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    # a quarter held out: the latent R² needs at least MIN_LATENT_IMAGES images
    val = write_dataset(scenes_root("scenes", 120), 120, ("csv",), val_fraction=0.25)["val"]
    for stage in ("tiny-clip", *DEMO_STAGES):
        export = Path(sc_eval.EvalConfig.runs, f"2026_01_01-{stage}", "export")
        export.mkdir(parents=True)
        (export / EXPORT_WEIGHTS_NAME).write_bytes(Path(tiny_weights).read_bytes())
        config = {"model": TINY_MODEL, "scenes_dir": "scenes", "scenes_images": 120}
        (export.parent / "config.json").write_text(json.dumps(config))

    without = sc_eval.main([])
    assert all("hard_negatives" not in r and "retrieval" in r for r in without)
    (image, caption), (negative_image, negative) = list(
        long_captions(val.annotations["csv"]).items()
    )[:2]
    rows = [(image, caption, negative, "swap_att", 2, negative_image)]
    write_csv(val.root / "hard_negatives.csv", rows)
    with_file = sc_eval.main([])
    assert [r["hard_negatives"]["swap_att@k2"]["items"] for r in with_file] == [1] * 4
    assert "hard_negatives.swap_att.image_items" in capsys.readouterr().out


def test_an_empty_evaluation_set_is_one_line_and_a_failing_exit(tmp_path, capsys):
    data = tmp_path / "c.csv"
    data.write_text("filepath,title\nnope.png,a red circle\n")
    with pytest.raises(SystemExit) as info:
        sc_eval.main(["--data", str(data)])
    message = str(info.value.code)
    assert message.startswith("smartclip.eval: error:") and "evaluation set is empty" in message
    assert "\n" not in message


# ------------------------------------------- models without information, broken and misplaced


def random_png(path: Path, seed: int) -> Path:
    """A 32x32 PNG of random colours at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def caption_set(folder: Path, captions_per_image: Sequence[int]) -> Path:
    """A captions.csv (filepath, title, image_id) over `random_png` images, image i with
    `captions_per_image[i]` distinct captions."""
    rows = []
    for i, count in enumerate(captions_per_image):
        random_png(folder / f"{i}.png", seed=i)
        rows += [(f"{i}.png", f"picture {i} told in words number {c}", i) for c in range(count)]
    with (folder / "captions.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filepath", "title", "image_id"])
        writer.writerows(rows)
    return folder / "captions.csv"


def write_weights(path: Path, edit: Callable[[dict], object] | None = None) -> str:
    """A tiny CLIP's state dict (seed 0), changed in place by `edit`, saved at `path`."""
    torch.manual_seed(0)
    state = create_clip(TINY_MODEL, context_length=77).state_dict()
    if edit is not None:
        edit(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return str(path)


def write_export(run: Path, name: str, context_length: int) -> str:
    """`python -m smartclip.export`'s export (weights and open_clip_config.json) of a random
    `name` model at `context_length`, in run/export/."""
    torch.manual_seed(0)
    clip = create_clip(name, context_length=context_length)
    checkpoint = run / "checkpoints" / "latest.pt"
    checkpoint.parent.mkdir(parents=True)
    state = {f"clip.{k}": v for k, v in clip.state_dict().items()}
    model = {"model": state, "model_name": name, "context_length": context_length}
    torch.save(model, checkpoint)
    return str(export_open_clip(checkpoint, run / "export"))


def i2t_chance(captions_per_image: Sequence[int], k: int) -> float:
    """Percent of images with one of their captions in a uniformly random top k of all
    captions: 1 − C(n − m, k) / C(n, k) for an image with m of the n captions."""
    n = sum(captions_per_image)
    return 100 * float(np.mean([1 - comb(n - m, k) / comb(n, k) for m in captions_per_image]))


def one_line_exit(argv: Sequence[str]) -> str:
    """The message `sc_eval.main(argv)` exits with, checked to be one line."""
    with pytest.raises(SystemExit) as info:
        sc_eval.main(list(argv))
    message = str(info.value.code)
    assert message.startswith("smartclip.eval: error: ") and "\n" not in message, message
    return message


def test_hit_probability_is_the_share_of_random_tie_breaks_that_hit():
    """Integer scores in {0, 1, 2} over six items (ties everywhere), one to three own items per
    query: the formula equals the share of all 720 orders of the items, used as tie-breaks, that
    put an own item in the top k."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 3, (12, 6), generator=g).float()
    own = torch.zeros(12, 6, dtype=torch.bool)
    for row in range(12):
        own[row, torch.randperm(6, generator=g)[: 1 + row % 3]] = True
    ks = (1, 2, 3, 4, 6)
    got = retrieval.hit_probability(scores, own, ks)
    for row in range(12):
        hits = np.zeros(len(ks))
        for order in permutations(range(6)):  # the tie-break: earlier in `order` ranks higher
            ranked = sorted(range(6), key=lambda i: (-scores[row, i].item(), order.index(i)))
            first_own = min(rank for rank, i in enumerate(ranked) if own[row, i])
            hits += [first_own < k for k in ks]
        assert got[row].tolist() == pytest.approx(hits / 720), row


def test_constant_features_score_chance_in_the_metrics():
    labels = torch.zeros(6, dtype=torch.long)  # all class 0, which a first-index tie-break picks
    got = retrieval.zeroshot_metrics(torch.ones(6, 4), torch.ones(7, 4), labels)
    assert got == pytest.approx({"top1": 100 / 7, "top5": 500 / 7})
    counts = (2, 1, 3)
    index = torch.repeat_interleave(torch.arange(3), torch.tensor(counts))
    got = retrieval.retrieval_metrics(torch.ones(3, 4), torch.ones(6, 4), index, ks=(1, 2))
    assert got == pytest.approx(
        {"t2i_r1": 100 / 3, "t2i_r2": 200 / 3, "i2t_r1": i2t_chance(counts, 1)}
        | {"i2t_r2": i2t_chance(counts, 2)}
    )


def test_an_export_with_a_zeroed_text_projection_scores_chance_recall(tmp_path):
    counts = (1, 2, 3, 2, 1, 2, 3, 2)  # 8 images, 16 captions
    data = caption_set(tmp_path / "data", counts)
    export = tmp_path / "runs" / "zeroed" / "export" / EXPORT_WEIGHTS_NAME
    weights = write_weights(export, lambda state: state["text_projection"].zero_())
    argv = ["--pretrained", weights, "--data", str(data), "--csv-id-key", "image_id"]
    got = sc_eval.main(argv)[0]["retrieval"]
    assert (got["images"], got["captions"]) == (8, 16)
    for k in (1, 5, 10):
        assert got[f"t2i_r{k}"] == pytest.approx(100 * min(k, 8) / 8)
        assert got[f"i2t_r{k}"] == pytest.approx(i2t_chance(counts, k))


def test_constant_image_and_text_embeddings_score_chance_on_hard_negatives_and_zeroshot(
    tmp_path,
):
    def constant(state: dict) -> None:
        state["visual.proj"].zero_()
        state["text_projection"].zero_()

    weights = write_weights(tmp_path / "constant.bin", constant)
    images = [  # one or two images per class
        str(random_png(tmp_path / "classes" / colour / f"{i}.png", seed=10 * n + i))
        for n, colour in enumerate(COLOURS)
        for i in range(1 + n % 2)
    ]
    rows = [
        (images[n], f"a {c} square", f"a {d} square", category, 1, images[n + 1])
        for n, (c, d, category) in enumerate(
            [("red", "blue", "swap_att"), ("green", "red", "swap_att"), ("big", "small", "x")]
        )
    ]
    hard = write_csv(tmp_path / "hard_negatives.csv", rows)
    argv = ["--pretrained", weights, "--zeroshot-dir", str(tmp_path / "classes")]
    got = sc_eval.main([*argv, "--hard-negatives", str(hard)])[0]
    assert got["zeroshot"]["classes"] == len(COLOURS)
    assert got["zeroshot"]["top1"] == pytest.approx(100 / len(COLOURS))
    assert got["zeroshot"]["top5"] == pytest.approx(500 / len(COLOURS))
    for category in ("swap_att", "x", "mean"):
        assert got["hard_negatives"][category]["text"] == 50.0
        assert got["hard_negatives"][category]["image"] == 50.0


def test_nan_embeddings_end_in_one_line_a_failing_status_and_no_json(tmp_path):
    data = caption_set(tmp_path / "data", (1, 2, 1))
    weights = write_weights(tmp_path / "diverged.bin", lambda s: s["visual.proj"].fill_(np.nan))
    out = tmp_path / "eval.json"
    cmd = [sys.executable, "-m", "smartclip.eval", "--pretrained", weights, "--data", str(data)]
    proc = subprocess.run(
        [*cmd, "--output", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0] == (
        f"smartclip.eval: error: {weights} ({TINY_MODEL}): "
        "3 of 3 image embeddings are NaN or infinite"
    )
    assert not out.exists()


def test_nan_text_embeddings_name_the_weights_and_stop_validation_too(tmp_path):
    data = caption_set(tmp_path / "data", (1, 2, 1))
    weights = write_weights(tmp_path / "w.bin", lambda s: s["text_projection"][0].fill_(np.inf))
    message = one_line_exit(["--pretrained", weights, "--data", str(data)])
    assert message.endswith(f"{weights} ({TINY_MODEL}): 4 of 4 text embeddings are NaN or infinite")
    assert not (tmp_path / sc_eval.DEFAULT_OUTPUT).exists()
    clip = create_clip(TINY_MODEL, weights)  # the trainer's validation raises the same class
    model = sc_eval.SmartCLIPModel(clip, with_mask=False)
    eval_set = sc_eval.build_eval_set(str(data), id_key="image_id")
    tokenizer = sc_eval.open_clip.get_tokenizer(TINY_MODEL)
    cpu, transform = torch.device("cpu"), sc_eval.preprocess(clip)
    with pytest.raises(retrieval.NonFiniteFeatures, match="4 of 4 text embeddings"):
        retrieval.evaluate_retrieval(model, eval_set, tokenizer, transform, cpu, nullcontext)
    images = torch.eye(3).index_fill(0, torch.tensor([1]), np.nan)
    with pytest.raises(retrieval.NonFiniteFeatures, match="1 of 3 image embeddings"):
        retrieval.retrieval_metrics(images, torch.eye(3), torch.arange(3))


def test_weights_of_another_model_end_in_one_line_naming_the_file_and_the_mismatch(tiny_weights):
    message = one_line_exit(["--model", "ViT-B-16", "--pretrained", tiny_weights])
    assert f"{tiny_weights} does not fit open_clip model 'ViT-B-16'" in message
    assert "positional_embedding [77, 64] vs [77, 512]" in message


def test_an_export_is_evaluated_as_the_model_of_its_config(tmp_path, monkeypatch):
    wide = {**TINY_CONFIG, "text_cfg": {**TINY_CONFIG["text_cfg"], "width": 128}}
    monkeypatch.setitem(open_clip_factory._MODEL_CONFIGS, "test-wide", wide)
    weights = write_export(tmp_path / "runs" / "wide", "test-wide", context_length=248)
    got = sc_eval.main(["--pretrained", weights])[0]
    assert (got["model"], got["context_length"]) == ("test-wide", 248)
    message = one_line_exit(["--model", TINY_MODEL, "--pretrained", weights])
    assert f"{weights} does not fit open_clip model '{TINY_MODEL}'" in message
    monkeypatch.delitem(open_clip_factory._MODEL_CONFIGS, "test-wide")
    message = one_line_exit(["--pretrained", weights])
    assert message.endswith("no registered open_clip model has this config; pass --model")


def test_weights_are_named_by_their_run_or_their_file_wherever_they_sit(tmp_path, capsys):
    paths = ["model.bin", "sub/model.bin", f"runs/mine/export/{EXPORT_WEIGHTS_NAME}"]
    paths.append(f"runs/mine/export-epoch_2/{EXPORT_WEIGHTS_NAME}")
    for path in paths:
        write_weights(tmp_path / path)
    results = sc_eval.main(["--pretrained", ",".join(paths)])
    assert [r["weights"] for r in results] == paths
    header = capsys.readouterr().out.splitlines()[0]
    assert re.split(r"\s{2,}", header.strip()) == [
        "model.bin #1",
        "model.bin #2",
        "mine",
        "mine-epoch_2",
    ]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--data", "."], "--data: '.' is a folder; expected a caption file"),
        (["--data", "s.tar", "--latents", "."], "--latents: '.' is a folder; expected"),
        (["--hard-negatives", "."], "--hard-negatives: '.' is a folder; expected a hard_neg"),
        (["--threads", "0"], "--threads: must be at least 1"),
    ],
)
def test_folders_for_files_and_no_threads_exit_with_one_line(argv, says, one_line_error):
    one_line_error(sc_eval.main, argv, says)


def test_too_few_images_for_the_latent_fit_is_one_line_and_no_json(tiny_weights, scenes):
    val = scenes["val"]
    argv = ["--pretrained", tiny_weights, "--data", val.annotations["csv"]]
    argv += ["--csv-id-key", "image_id", "--latents", str(val.latents)]
    message = one_line_exit(argv)
    assert message.endswith(
        f"--latents: the latent R² fit needs at least {sc_eval.MIN_LATENT_IMAGES} images; "
        f"{val.annotations['csv']} has {len(val.images)}"
    )
    assert len(val.images) < sc_eval.MIN_LATENT_IMAGES
    assert not Path(sc_eval.DEFAULT_OUTPUT).exists()


def test_threads_and_the_default_output_work_as_the_help_says(tiny_weights, capsys):
    try:
        results = sc_eval.main(["--pretrained", tiny_weights, "--threads", "2"])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    written = Path.cwd() / sc_eval.DEFAULT_OUTPUT
    assert json.loads(written.read_text())["results"] == json.loads(json.dumps(results))
    assert f"written: {written}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        sc_eval.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert (
        f"table as markdown (.md) (the no-argument run writes RUNS/eval_scenes.json) (default: "
        f"'{sc_eval.DEFAULT_OUTPUT}')" in help_text
    )
    assert "--threads" in help_text
    with pytest.raises(SystemExit) as refused:  # the table would overwrite the JSON
        sc_eval.main(["--pretrained", tiny_weights, "--output", "results.md"])
    assert refused.value.code == 2
    assert "name a .json file" in capsys.readouterr().err
