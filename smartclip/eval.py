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
Ties count as a random tie-break would: every recall and accuracy is its expectation over the
orders of tied items (`hit_probability`), as the hard negatives count a tie as half right, so a
model whose embeddings carry no information scores chance. NaN or infinite embeddings are an
error (`NonFiniteFeatures`), never a score. Each weights file is named in the results table by
its run (`RUN` for RUN/export/…) or else by its file name.
With no arguments it evaluates the latest no-argument training run (`python -m smartclip.train`:
the tiny CLIP and SmartCLIP exports) on the held-out scenes, side by side (with their
`hard_negatives.csv` when the scenes have one), and writes JSON and the table as markdown.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import open_clip
import torch

from identifiability.metrics import r2_scores
from smartclip.builtin import scenes_root
from smartclip.cli import ConfigError, parse_config, require
from smartclip.data import FORMATS, EvalSet, annotation_options, build_eval_set
from smartclip.distributed import resolve_device
from smartclip.export import EXPORT_CONFIG_NAME, EXPORT_WEIGHTS_NAME, export_model, export_run
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
from smartclip.results_table import markdown_table, print_table
from smartclip.retrieval import (
    NonFiniteFeatures,
    encode_images,
    encode_texts,
    evaluate_zeroshot,
    image_set,
    retrieval_metrics,
)
from smartclip.train_config import DEMO_STAGES
from synthetic.scenes import load_latents

PROG = "python -m smartclip.eval"
TEMPLATES = ("a photo of a {}.", "a {}.", "an image of a {}.", "a picture of a {}.")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# scene attributes whose R² is reported: continuous ones of the scene and of its first object
SCENE_ATTRIBUTES = ("n_objects", "bg_r", "bg_g", "bg_b", "obj0_r", "obj0_g", "obj0_b")
SCENE_ATTRIBUTES += ("obj0_size", "obj0_x", "obj0_y")
# latent R² fits on half the images with a 3-fold grid search (identifiability.metrics.r2_scores);
# below 2 held-out images per fold its R² is undefined, and 5 per fold is the least we accept
MIN_LATENT_IMAGES = 2 * 3 * 5
DEFAULT_OUTPUT = "eval_results.json"
# what a file flag expects, for the message when it names a folder
EXPECTED_FILES = {
    "data": "a caption file (CSV/TSV, ShareGPT4V, COCO or Karpathy JSON) or webdataset .tar shards",
    "latents": "the scenes' latents.npz",
    "hard_negatives": "a hard_negatives.csv",
}


@dataclass(frozen=True)
class EvalConfig:
    """Every field is a flag. `--pretrained` takes one or more local weights files."""

    model: str | None = field(
        default=None,
        metadata={
            "help": f"open_clip config name (None: for weights with the {EXPORT_CONFIG_NAME} of "
            f"`python -m smartclip.export` beside them, that config's model, else {TINY_MODEL})"
        },
    )
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
    threads: int | None = field(
        default=None, metadata={"help": "torch CPU threads (None: torch's own, every core)"}
    )
    runs: str = field(default="runs", metadata={"help": "where the no-argument run looks"})
    output: str = field(
        default=DEFAULT_OUTPUT,
        metadata={
            "help": "JSON results file, relative to the current folder, and beside it the "
            "table as markdown (.md) (the no-argument run writes RUNS/eval_scenes.json)"
        },
    )

    def __post_init__(self) -> None:
        require(
            self.model is None or open_clip.get_model_config(self.model) is not None,
            "model",
            f"unknown model {self.model!r}; see open_clip.list_models()",
        )
        for path in self.pretrained:
            require(Path(path).is_file(), "pretrained", f"no such local file {path!r}")
        require(self.dataset_type in ("auto", *FORMATS), "dataset_type", f"auto or {FORMATS}")
        for name, expected in EXPECTED_FILES.items():
            value = getattr(self, name)
            if value is None or ".tar" in value:
                continue
            require(not Path(value).is_dir(), name, f"{value!r} is a folder; expected {expected}")
            require(Path(value).is_file(), name, f"no such file {value!r}")
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
        require(self.threads is None or self.threads >= 1, "threads", "must be at least 1")
        require(self.precision in ("fp32", "amp", "amp_bf16"), "precision", "fp32/amp/amp_bf16")
        require(
            Path(self.output).suffix != ".md",
            "output",
            "the markdown table is written beside the JSON as OUTPUT with .md; name a .json file",
        )


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


def model_name(cfg: EvalConfig, weights: str | None) -> str:
    """--model if given, else the model of the export config beside `weights`, else TINY_MODEL."""
    return cfg.model or (weights and export_model(weights)) or TINY_MODEL


def read_eval_set(cfg: EvalConfig) -> EvalSet:
    """The retrieval set of --data; ValueError for an unusable file, an empty set or, with
    --latents, fewer than MIN_LATENT_IMAGES images."""
    fmt, options = annotation_options(
        cfg.data,
        cfg.dataset_type,
        img_key=cfg.csv_img_key,
        caption_key=cfg.csv_caption_key,
        id_key=cfg.csv_id_key,
        image_root=cfg.image_root,
        split=cfg.split,
    )
    eval_set = build_eval_set(cfg.data, fmt, **options)
    if cfg.latents is not None and len(eval_set.images) < MIN_LATENT_IMAGES:
        raise ValueError(
            f"--latents: the latent R² fit needs at least {MIN_LATENT_IMAGES} images; "
            f"{cfg.data} has {len(eval_set.images)}"
        )
    return eval_set


def evaluate_weights(
    cfg: EvalConfig,
    weights: str | None,
    device: torch.device,
    benchmarks: Mapping[str, HardNegatives],
) -> dict:
    """Every task the config names, for one weights file (None: random init) of `model_name`;
    `benchmarks` are the config's hard-negative sets as `hard_negative_sets` reads them.
    Weights that do not load and unusable data exit with one line; NonFiniteFeatures names the
    weights."""
    try:
        name = model_name(cfg, weights)
        clip = create_clip(name, weights, cfg.context_length).to(device)
        eval_set = read_eval_set(cfg) if cfg.data is not None else None
    except ValueError as err:  # no weights, weights not of the model, an unusable set: one line
        raise SystemExit(f"smartclip.eval: error: {err}") from None
    model = SmartCLIPModel(clip, with_mask=False).eval()
    tokenizer = open_clip.get_tokenizer(name, context_length=clip.context_length)
    transform, autocast = preprocess(clip), autocast_context(cfg.precision, device)
    out: dict = {"weights": weights, "model": name, "context_length": clip.context_length}
    try:
        if eval_set is not None:
            images = encode_images(
                model, eval_set, transform, device, autocast, cfg.batch_size, desc="images"
            )
            texts = encode_texts(
                model, tokenizer, eval_set.captions, device, autocast, cfg.batch_size
            )
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
        for task, benchmark in benchmarks.items():
            out[task] = evaluate_hard_negatives(
                model,
                tokenizer,
                transform,
                benchmark,
                device,
                autocast,
                cfg.batch_size,
                SUGARCREPE_GROUPS if task == "sugarcrepe" else None,
            )
    except NonFiniteFeatures as err:
        raise NonFiniteFeatures(f"{weights or 'random init'} ({name}): {err}") from None
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
    run_config = json.loads((export_run(exports["tiny-smartclip"]) / "config.json").read_text())
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


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Parse `argv` (none: the no-argument demo), evaluate every weights file, print the table
    and write the JSON to --output and the table beside it as markdown (OUTPUT with `.md`);
    errors end in one line, NaN embeddings with status 1 and no JSON."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv:
        cfg = parse_config(EvalConfig, argv, prog=PROG, description=__doc__.split("\n")[0])
    else:
        cfg = demo_config(EvalConfig.runs)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        benchmarks = hard_negative_sets(cfg)
    except ConfigError as err:  # a file that is no benchmark: one line, as for a bad flag
        print(f"{PROG}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    device = resolve_device(cfg.device)
    try:
        results = [
            evaluate_weights(cfg, w, device, benchmarks) for w in (cfg.pretrained or (None,))
        ]
    except NonFiniteFeatures as err:
        raise SystemExit(f"smartclip.eval: error: {err}") from None
    print_table(results)
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"config": asdict(cfg), "results": results}, indent=1) + "\n")
    table = output.with_suffix(".md")
    table.write_text(markdown_table(results))
    print(f"written: {output.absolute()} and {table.name} (the table as markdown)")
    return results


if __name__ == "__main__":
    main()
