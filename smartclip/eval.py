"""Evaluate open_clip weights: `python -m smartclip.eval [--flag value ...]`.

- Retrieval on any caption file `smartclip.data` reads (CSV/TSV, ShareGPT4V JSON, COCO or
  Karpathy JSON, webdataset shards); several captions per image as COCO/Flickr benchmarks count
  them: text→image R@k = share of captions whose image ranks in the top k; image→text R@k =
  share of images with at least one of their captions in the top k.
- Zero-shot classification from a folder of class subfolders: classifier row c =
  normalise(mean_templates normalise(f_T(template(c)))); top-1 / top-5 accuracy.
- With `--latents` (the built-in scenes' `latents.npz`): held-out kernel-ridge R² of each ground-
  truth scene attribute from the image embedding, the pixel-level identifiability check.
- Hard negatives (`smartclip.hard_negatives`): SugarCrepe's seven categories (`--sugarcrepe`) and
  our `hard_negatives.csv` (`--hard-negatives`): percent of items where the image is closer to
  its caption than to the edited caption (text side) and, where an image of the edited caption
  exists, the caption closer to its image than to that one (image side); per category, per
  category and number of edits k, and the mean over categories.

Embeddings are the UNMASKED, normalised ones (a SmartCLIP mask network is a training device).
With no arguments it evaluates the latest no-argument training run (`python -m smartclip.train`:
the tiny CLIP and SmartCLIP exports) on the held-out scenes, side by side (with their
`hard_negatives.csv` when the scenes have one), and writes JSON.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import open_clip
import torch
from tqdm import tqdm

from identifiability.metrics import r2_scores
from smartclip.builtin import scenes_root
from smartclip.cli import ConfigError, parse_config, require
from smartclip.data import FORMATS, EvalSet, annotation_options, build_eval_set
from smartclip.distributed import resolve_device
from smartclip.export import EXPORT_WEIGHTS_NAME
from smartclip.hard_negatives import (
    SUGARCREPE_GROUPS,
    HardNegatives,
    hard_negative_report,
    load_hard_negatives_csv,
    load_sugarcrepe,
    wins,
)
from smartclip.model import (
    TINY_MODEL,
    SmartCLIPModel,
    autocast_context,
    create_clip,
    preprocess,
)
from smartclip.train_config import DEMO_STAGES
from synthetic.scenes import load_latents

PROG = "python -m smartclip.eval"
TEMPLATES = ("a photo of a {}.", "a {}.", "an image of a {}.", "a picture of a {}.")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# scene attributes whose R² is reported: continuous ones of the scene and of its first object
SCENE_ATTRIBUTES = ("n_objects", "bg_r", "bg_g", "bg_b", "obj0_r", "obj0_g", "obj0_b")
SCENE_ATTRIBUTES += ("obj0_size", "obj0_x", "obj0_y")
TASKS = ("retrieval", "zeroshot", "latent_r2", "sugarcrepe", "hard_negatives")  # result keys


@dataclass(frozen=True)
class EvalConfig:
    """Every field is a flag. `--pretrained` takes one or more local weights files."""

    model: str = field(default=TINY_MODEL, metadata={"help": "open_clip config name"})
    pretrained: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "local weights, open_clip state dicts or OpenAI TorchScript .pt files "
            "(comma-separated: evaluated side by side)"
        },
    )
    context_length: int | None = field(
        default=None, metadata={"help": "text context (None: the weights' own)"}
    )
    data: str | None = field(default=None, metadata={"help": "retrieval caption file or shards"})
    dataset_type: str = field(default="auto", metadata={"help": f"auto or one of {FORMATS}"})
    csv_img_key: str = "filepath"
    csv_caption_key: str = "title"
    csv_id_key: str | None = field(default=None, metadata={"help": "CSV column grouping captions"})
    image_root: str | None = field(default=None, metadata={"help": "root of relative image paths"})
    split: str | None = field(
        default=None, metadata={"help": "Karpathy-layout split to keep (COCO 5k / Flickr: test)"}
    )
    latents: str | None = field(default=None, metadata={"help": "scenes latents.npz for R²"})
    zeroshot_dir: str | None = field(default=None, metadata={"help": "folder of class folders"})
    templates: tuple[str, ...] = field(default=TEMPLATES, metadata={"help": "zero-shot prompts"})
    sugarcrepe: str | None = field(
        default=None, metadata={"help": "folder of SugarCrepe's <category>.json files"}
    )
    sugarcrepe_image_root: str | None = field(
        default=None,
        metadata={"help": "folder of SugarCrepe's COCO val2017 images (None: --image-root)"},
    )
    hard_negatives: str | None = field(
        default=None, metadata={"help": "hard_negatives.csv of the built-in scenes' format"}
    )
    batch_size: int = 128
    device: str = field(default="auto", metadata={"help": "auto: cuda if available"})
    precision: str = field(default="fp32", metadata={"help": "fp32, amp or amp_bf16"})
    runs: str = field(default="runs", metadata={"help": "where the no-argument run looks"})
    output: str | None = field(default=None, metadata={"help": "JSON file (None: beside runs)"})

    def __post_init__(self) -> None:
        require(
            open_clip.get_model_config(self.model) is not None,
            "model",
            f"unknown model {self.model!r}; see open_clip.list_models()",
        )
        for path in self.pretrained:
            require(Path(path).is_file(), "pretrained", f"no such local file {path!r}")
        require(self.dataset_type in ("auto", *FORMATS), "dataset_type", f"auto or {FORMATS}")
        for name in ("data", "latents", "hard_negatives"):
            value = getattr(self, name)
            ok = value is None or ".tar" in value or Path(value).is_file()
            require(ok, name, f"no such file {value!r}")
        for name in ("image_root", "zeroshot_dir", "sugarcrepe", "sugarcrepe_image_root"):
            value = getattr(self, name)
            require(value is None or Path(value).is_dir(), name, f"no such folder {value!r}")
        require(
            self.sugarcrepe is None or (self.sugarcrepe_image_root or self.image_root) is not None,
            "sugarcrepe_image_root",
            "--sugarcrepe needs the COCO val2017 image folder (or --image-root)",
        )
        require(self.latents is None or self.data is not None, "latents", "needs --data")
        require(all("{}" in t for t in self.templates), "templates", "each needs a {} slot")
        require(self.batch_size >= 1, "batch_size", "must be at least 1")
        require(self.precision in ("fp32", "amp", "amp_bf16"), "precision", "fp32/amp/amp_bf16")


def retrieval_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@k in percent for t2i and i2t from similarities S = T Iᵀ ([captions, images]).

    t2i rank of caption c = #{images i: S[c, i] > S[c, image(c)]}; i2t rank of image i =
    #{captions c: S[c, i] > max over i's captions c' of S[c', i]}. R@k = share with rank < k
    (ties count in the query's favour; with continuous features there are none).
    """
    sim = text_features.float() @ image_features.float().T
    target = text_to_image.to(sim.device)
    t2i_rank = (sim > sim.gather(1, target[:, None])).sum(1)
    own = torch.zeros_like(sim, dtype=torch.bool)
    own[torch.arange(len(target), device=sim.device), target] = True
    best_own = sim.masked_fill(~own, -torch.inf).max(0).values
    i2t_rank = (sim > best_own[None]).sum(0)
    return {
        f"{name}_r{k}": (rank < k).float().mean().item() * 100
        for name, rank in (("t2i", t2i_rank), ("i2t", i2t_rank))
        for k in ks
    }


@torch.no_grad()
def encode_images(
    model: SmartCLIPModel,
    eval_set: EvalSet,
    transform: Callable,
    device: torch.device,
    autocast: Callable,
    batch_size: int = 128,
    desc: str | None = None,
) -> torch.Tensor:
    """Normalised, unmasked image embeddings of every image of `eval_set`, in order."""
    loader = eval_set.image_loader(transform, batch_size)
    with autocast():
        parts = [
            model.encode_image(x.to(device)).float()
            for x in tqdm(loader, desc=desc, disable=desc is None, leave=False)
        ]
    return torch.cat(parts)


@torch.no_grad()
def encode_texts(
    model: SmartCLIPModel,
    tokenizer: Callable,
    texts: Sequence[str],
    device: torch.device,
    autocast: Callable,
    batch_size: int = 128,
) -> torch.Tensor:
    """Normalised, unmasked text embeddings."""
    with autocast():
        parts = [
            model.encode_text(tokenizer(list(texts[i : i + batch_size])).to(device)).float()
            for i in range(0, len(texts), batch_size)
        ]
    return torch.cat(parts)


def evaluate_retrieval(
    model: SmartCLIPModel,
    eval_set: EvalSet,
    tokenizer: Callable,
    transform: Callable,
    device: torch.device,
    autocast: Callable,
    batch_size: int = 128,
) -> dict[str, float]:
    """Recall@{1,5,10} of text→image and image→text retrieval with unmasked embeddings; the
    model is left in the mode it was in."""
    was_training = model.training
    model.eval()
    images = encode_images(model, eval_set, transform, device, autocast, batch_size)
    texts = encode_texts(model, tokenizer, eval_set.captions, device, autocast, batch_size)
    model.train(was_training)
    return retrieval_metrics(images, texts, eval_set.text_to_image)


def image_set(images: Sequence[Path], labels: Sequence[int] = ()) -> EvalSet:
    """An EvalSet of images alone, for `encode_images` (class labels, if any, in
    `text_to_image`'s place)."""
    return EvalSet(
        images=tuple(images),
        image_ids=tuple(str(p) for p in images),
        captions=(),
        text_to_image=torch.tensor(labels, dtype=torch.long),
        n_malformed=0,
        n_bad_images=0,
    )


def zeroshot_set(folder: str | Path) -> tuple[EvalSet, list[str]]:
    """Images of `folder/<class>/*` as an EvalSet (labels in `text_to_image`'s place) and the
    class names (folder names, underscores as spaces), sorted."""
    folder = Path(folder)
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    images, labels = [], []
    for label, path in enumerate(classes):
        files = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        images += files
        labels += [label] * len(files)
    if not images:
        raise ConfigError("zeroshot_dir", f"no class folders with images in {folder}")
    return image_set(images, labels), [p.name.replace("_", " ") for p in classes]


def zeroshot_metrics(
    image_features: torch.Tensor, class_embeddings: torch.Tensor, labels: torch.Tensor
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (percent) of argmax_c ⟨image, class_c⟩."""
    logits = image_features @ class_embeddings.T
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
    hits = top == labels[:, None].to(top.device)
    return {
        "top1": hits[:, 0].float().mean().item() * 100,
        "top5": hits.any(1).float().mean().item() * 100,
    }


def evaluate_zeroshot(
    model: SmartCLIPModel,
    tokenizer: Callable,
    transform: Callable,
    folder: str | Path,
    templates: Sequence[str],
    device: torch.device,
    autocast: Callable,
    batch_size: int = 128,
) -> dict[str, float]:
    """Zero-shot top-1/top-5 accuracy on `folder/<class>/*` with a prompt-ensemble classifier:
    row c = normalise(mean over templates of f_T(template(c)))."""
    eval_set, classes = zeroshot_set(folder)
    images = encode_images(model, eval_set, transform, device, autocast, batch_size)
    prompts = [t.format(c) for c in classes for t in templates]
    per_prompt = encode_texts(model, tokenizer, prompts, device, autocast, batch_size)
    classifier = per_prompt.view(len(classes), len(templates), -1).mean(1)
    classifier = torch.nn.functional.normalize(classifier, dim=-1)
    return {
        **zeroshot_metrics(images, classifier, eval_set.text_to_image),
        "classes": len(classes),
        "images": len(eval_set.images),
    }


def evaluate_hard_negatives(
    model: SmartCLIPModel,
    tokenizer: Callable,
    transform: Callable,
    benchmark: HardNegatives,
    device: torch.device,
    autocast: Callable,
    batch_size: int = 128,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> dict:
    """Text-side and image-side accuracy of `benchmark` as `hard_negative_report` gives it
    (per category, per category@k, means over categories and `groups`), with `"skipped"` the
    malformed entries and items with unreadable images; each distinct image and text is encoded
    once."""
    items = benchmark.items
    images = list(
        dict.fromkeys(p for x in items for p in (x.image, x.negative_image) if p is not None)
    )
    texts = list(dict.fromkeys(t for x in items for t in (x.caption, x.negative)))
    image_features = encode_images(
        model, image_set(images), transform, device, autocast, batch_size
    )
    text_features = encode_texts(model, tokenizer, texts, device, autocast, batch_size)
    image_row = {p: n for n, p in enumerate(images)}
    text_row = {t: n for n, t in enumerate(texts)}
    image = image_features[[image_row[x.image] for x in items]]
    caption = text_features[[text_row[x.caption] for x in items]]
    negative = text_features[[text_row[x.negative] for x in items]]
    text_wins = wins(image, caption, negative)
    image_wins = torch.full_like(text_wins, torch.nan)
    paired = [n for n, x in enumerate(items) if x.negative_image is not None]
    if paired:
        negative_image = image_features[[image_row[items[n].negative_image] for n in paired]]
        image_wins[paired] = wins(caption[paired], image[paired], negative_image)
    return {
        **hard_negative_report(items, text_wins, image_wins, groups),
        "skipped": benchmark.n_malformed + benchmark.n_bad_images,
    }


def hard_negative_sets(cfg: EvalConfig) -> dict[str, HardNegatives]:
    """The hard-negative benchmarks the config names, read once for every weights file, keyed
    by their field; a file that cannot be used raises ConfigError naming its flag."""
    readers = {
        "sugarcrepe": lambda: load_sugarcrepe(
            cfg.sugarcrepe, cfg.sugarcrepe_image_root or cfg.image_root
        ),
        "hard_negatives": lambda: load_hard_negatives_csv(cfg.hard_negatives),
    }
    sets = {}
    for name, read in readers.items():
        if getattr(cfg, name) is not None:
            try:
                sets[name] = read()
            except ValueError as err:
                raise ConfigError(name, str(err)) from None
    return sets


def latent_r2(
    image_features: torch.Tensor, image_ids: Sequence[str], latents_path: str | Path
) -> dict[str, float]:
    """Held-out kernel-ridge R² of each scene attribute in SCENE_ATTRIBUTES from the image
    embedding; `image_ids` are matched to the latents' integer ids."""
    ids, latents, columns = load_latents(latents_path)
    row = {int(i): n for n, i in enumerate(ids)}
    order = [row[int(i)] for i in image_ids]
    targets = {c: latents[order, columns.index(c)] for c in SCENE_ATTRIBUTES}
    return r2_scores(image_features.cpu().numpy(), targets)


def evaluate_weights(
    cfg: EvalConfig,
    weights: str | None,
    device: torch.device,
    benchmarks: Mapping[str, HardNegatives],
) -> dict:
    """Every task the config names, for one weights file (None: random init); `benchmarks` are
    the config's hard-negative sets as `hard_negative_sets` reads them."""
    try:
        clip = create_clip(cfg.model, weights, cfg.context_length).to(device)
    except ValueError as err:  # weights that are no weights or do not fit --model: one line
        raise SystemExit(f"smartclip.eval: error: {err}") from None
    model = SmartCLIPModel(clip, with_mask=False).eval()
    tokenizer = open_clip.get_tokenizer(cfg.model, context_length=clip.context_length)
    transform, autocast = preprocess(clip), autocast_context(cfg.precision, device)
    out: dict = {"weights": weights, "context_length": clip.context_length}
    if cfg.data is not None:
        fmt, options = annotation_options(
            cfg.data,
            cfg.dataset_type,
            img_key=cfg.csv_img_key,
            caption_key=cfg.csv_caption_key,
            id_key=cfg.csv_id_key,
            image_root=cfg.image_root,
            split=cfg.split,
        )
        try:
            eval_set = build_eval_set(cfg.data, fmt, **options)
        except ValueError as err:  # an unusable file or an empty set: one line
            raise SystemExit(f"smartclip.eval: error: {err}") from None
        images = encode_images(
            model, eval_set, transform, device, autocast, cfg.batch_size, desc="images"
        )
        texts = encode_texts(model, tokenizer, eval_set.captions, device, autocast, cfg.batch_size)
        out["retrieval"] = {
            **retrieval_metrics(images, texts, eval_set.text_to_image),
            "images": len(eval_set.images),
            "captions": len(eval_set.captions),
            "skipped": eval_set.n_malformed + eval_set.n_bad_images,
        }
        if cfg.latents is not None:
            out["latent_r2"] = latent_r2(images, eval_set.image_ids, cfg.latents)
    if cfg.zeroshot_dir is not None:
        out["zeroshot"] = evaluate_zeroshot(
            model,
            tokenizer,
            transform,
            cfg.zeroshot_dir,
            cfg.templates,
            device,
            autocast,
            cfg.batch_size,
        )
    for name, benchmark in benchmarks.items():
        out[name] = evaluate_hard_negatives(
            model,
            tokenizer,
            transform,
            benchmark,
            device,
            autocast,
            cfg.batch_size,
            SUGARCREPE_GROUPS if name == "sugarcrepe" else None,
        )
    return out


def latest_demo(runs: str | Path) -> dict[str, Path]:
    """{stage: export} of the newest no-argument training run in `runs`, for the pre-trained
    "tiny-clip" and each of DEMO_STAGES."""
    found = {}
    for stage in ("tiny-clip", *DEMO_STAGES):
        exports = sorted(Path(runs).glob(f"*-{stage}/export/{EXPORT_WEIGHTS_NAME}"))
        if exports:
            found[stage] = exports[-1]
    if len(found) < 1 + len(DEMO_STAGES):
        raise SystemExit(
            f"smartclip.eval: no finished no-argument training run in {runs}/; "
            "run `python -m smartclip.train` first (or pass --pretrained and --data)"
        )
    return found


def demo_config(runs: str | Path) -> EvalConfig:
    """The no-argument evaluation: every demo export on the held-out scenes, with latent R² and,
    if the scenes have a `hard_negatives.csv`, its hard negatives."""
    exports = latest_demo(runs)
    run_config = json.loads((exports["tiny-smartclip"].parents[1] / "config.json").read_text())
    val = scenes_root(run_config["scenes_dir"], run_config["scenes_images"]) / "val"
    hard_negatives = val / "hard_negatives.csv"
    return EvalConfig(
        model=run_config["model"],
        pretrained=tuple(str(p) for p in exports.values()),
        data=str(val / "captions.csv"),
        csv_id_key="image_id",
        latents=str(val / "latents.npz"),
        hard_negatives=str(hard_negatives) if hard_negatives.is_file() else None,
        runs=str(runs),
        output=str(Path(runs) / "eval_scenes.json"),
    )


def _cells(name: str, value: int | float | dict) -> Iterator[tuple[str, str]]:
    """(row name, printed value) of one result; nested dicts give dotted row names."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _cells(f"{name}.{key}", inner)
    else:
        yield name, str(value) if isinstance(value, int) else f"{value:.3f}"


def print_table(results: list[dict]) -> None:
    """One column per weights file, one row per metric."""
    names = [Path(r["weights"]).parents[1].name if r["weights"] else "random" for r in results]
    rows: dict[str, list[str]] = {}
    for n, r in enumerate(results):
        for task in TASKS:
            for key, cell in _cells(task, r.get(task, {})):
                rows.setdefault(key, [""] * len(results))[n] = cell
    width = max(map(len, rows), default=10)
    print(" " * width + "  " + "  ".join(f"{n:>28}" for n in names))
    for key, cells in rows.items():
        print(f"{key:<{width}}  " + "  ".join(f"{c:>28}" for c in cells))


def main(argv: Sequence[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv:
        cfg = parse_config(EvalConfig, argv, prog=PROG, description=__doc__.split("\n")[0])
    else:
        cfg = demo_config(EvalConfig.runs)
    try:
        benchmarks = hard_negative_sets(cfg)
    except ConfigError as err:  # a file that is no benchmark: one line, as for a bad flag
        print(f"{PROG}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    device = resolve_device(cfg.device)
    results = [evaluate_weights(cfg, w, device, benchmarks) for w in (cfg.pretrained or (None,))]
    print_table(results)
    output = Path(cfg.output) if cfg.output else None
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps({"config": asdict(cfg), "results": results}, indent=1) + "\n")
        print(f"written: {output}")
    return results


if __name__ == "__main__":
    main()
