"""Train SmartCLIP (or CLIP) on open_clip towers: `python -m smartclip.train [--flag value ...]`.

    min_θ  10·(L_sidm + L_dism) + 2·mean(m)    (`losses.objective_loss`; --objective clip: InfoNCE)

The defaults are the released recipe (add --pretrained CLIP.pt and --train-data): OpenAI
ViT-B/16 with its text context stretched 77 → 248 (model.py), AdamW with backbone lr 1e-6 /
wd 0.01 and mask-net lr 1e-3 / wd 0, cosine schedule after 200 warm-up steps, fp16 AMP, fixed
logit scale 100, 3 epochs, effective batch batch_size × accum_freq × processes (the recipe's
1,024 = 128 × 1 × 8 GPUs); `--preset vit-l-14` for ViT-L/14. Evaluation (image↔text recall@k)
uses unmasked embeddings.

With no arguments it renders the built-in scenes (`synthetic.scenes`, cached under --scenes-dir)
and runs two CPU presets on them: `tiny-clip` pre-trains "smartclip-tiny" with CLIP's loss, then
`tiny-smartclip` fine-tunes that export with SmartCLIP's recipe (stretched context, separate
rates), as SmartCLIP fine-tunes a pre-trained CLIP; it prints where logs and checkpoints went.

Distributed: `torchrun --nproc_per_node N -m smartclip.train -- --flag value ...` (the `--` stops
torchrun reading --logs as its own --logs-specs). Each rank gathers every rank's features with
gradients and computes its own rows of the global loss (--local-loss), so DDP's averaged
gradient equals the single-process gradient on the global batch. --no-gather-with-grad
treats other ranks' features as constants (open_clip's cheaper approximation); --no-local-loss
computes the whole global loss on every rank (same gradient, more work).

Accumulation (--accum-freq a): the step's a micro-batches are first embedded without gradients,
then each is re-embedded with gradients and the loss of the WHOLE accumulated batch is
back-propagated with that micro-batch's rows live (open_clip's feature cache). The summed
gradient is exactly that of one batch of a × --batch-size rows, at the price of a second forward.

Checkpoints (`<logs>/<name>/checkpoints/`, `latest.pt` and `epoch_<n>.pt`) are written atomically
and hold everything an exact resume needs (model, optimizer, scaler, scheduler, step, RNG states,
data position); `--resume latest --name NAME` continues a run bitwise on the CPU. Training reads
images through the model's deterministic evaluation preprocessing (resize, centre crop,
normalise), so the data is a function of (seed, epoch, index) alone.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import open_clip
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from smartclip import distributed as dist
from smartclip.cli import parse_config, require
from smartclip.data import (
    FORMATS,
    Batch,
    EvalSet,
    TrainData,
    annotation_options,
    build_eval_set,
    build_train_loader,
)
from smartclip.eval import encode_images, encode_texts, retrieval_metrics
from smartclip.fit import cosine_lr
from smartclip.losses import OBJECTIVES, Embeddings, LossOutput, objective_loss
from smartclip.model import (
    EXPORT_WEIGHTS_NAME,
    KEEP_POSITIONS,
    TINY_MODEL,
    SmartCLIPModel,
    autocast_context,
    build_model,
    export_open_clip,
    preprocess,
)
from synthetic.scenes import SceneConfig, write_dataset

PRECISIONS = ("amp", "amp_bf16", "fp32")
SCENES_IMAGE_SIZE = 64


@dataclass(frozen=True)
class TrainConfig:
    """Every field is a flag (`--batch-size 64`). Defaults: SmartCLIP's released ViT-B/16 recipe."""

    model: str = field(
        default="ViT-B-16-quickgelu",
        metadata={"help": "open_clip config name (-quickgelu for OpenAI weights)"},
    )
    pretrained: str | None = field(default=None, metadata={"help": "local open_clip weights file"})
    train_data: str | None = field(
        default=None, metadata={"help": "csv/tsv/json/shards; None renders the built-in scenes"}
    )
    val_data: str | None = field(
        default=None, metadata={"help": "retrieval eval set (None: the built-in scenes' val)"}
    )
    dataset_type: str = field(default="auto", metadata={"help": f"auto or one of {FORMATS}"})
    csv_img_key: str = "filepath"
    csv_caption_key: str = "title"
    csv_separator: str | None = field(
        default=None, metadata={"help": "None: ',' for .csv, tab for .tsv"}
    )
    train_num_samples: int | None = field(
        default=None, metadata={"help": "samples per epoch over all ranks (needed for shards)"}
    )
    sentence_sampling: bool = field(
        default=True, metadata={"help": "train on a random first-k-sentence prefix of a caption"}
    )
    scenes_dir: str = "runs/data/scenes"
    scenes_images: int = field(default=6000, metadata={"help": "built-in scenes to render"})
    objective: str = field(default="smartclip", metadata={"help": f"one of {OBJECTIVES}"})
    logit_scale: float = field(default=100.0, metadata={"help": "fixed logit scale s"})
    loss_weights: tuple[float, ...] = field(
        default=(10.0, 10.0, 2.0), metadata={"help": "smartclip weights of sidm, dism, sparsity"}
    )
    mask_heads: int = 8
    context_length: int = field(
        default=248, metadata={"help": "text context; more than the weights' own stretches them"}
    )
    keep_positions: int = field(
        default=KEEP_POSITIONS, metadata={"help": "positions copied unchanged by the stretch"}
    )
    freeze_kept_positions: bool = field(
        default=False, metadata={"help": "zero the kept positions' gradients"}
    )
    batch_size: int = field(default=128, metadata={"help": "micro-batch per process"})
    accum_freq: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    epochs: int = 3
    steps: int | None = field(default=None, metadata={"help": "cap on optimizer steps"})
    lr: float = field(default=1e-6, metadata={"help": "backbone learning rate"})
    wd: float = field(default=0.01, metadata={"help": "backbone weight decay"})
    mask_lr: float = 1e-3
    mask_wd: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup: int = field(default=200, metadata={"help": "linear warm-up steps before the cosine"})
    precision: str = field(default="amp", metadata={"help": f"one of {PRECISIONS}"})
    grad_checkpointing: bool = False
    torchcompile: bool = False
    local_loss: bool = True
    gather_with_grad: bool = True
    workers: int = 4
    device: str = field(default="auto", metadata={"help": "auto: cuda:LOCAL_RANK if available"})
    seed: int = 0
    logs: str = "runs"
    name: str | None = field(default=None, metadata={"help": "run name (default: a timestamp)"})
    resume: str | None = field(
        default=None, metadata={"help": "checkpoint path, or 'latest' of run --name"}
    )
    save_frequency: int = field(default=1, metadata={"help": "epoch_<n>.pt every n epochs, 0 off"})
    save_every_steps: int = field(default=500, metadata={"help": "latest.pt every n steps, 0 off"})
    val_frequency: int = field(default=1, metadata={"help": "evaluate every n epochs (0: at end)"})
    log_every_n_steps: int = 50

    def __post_init__(self) -> None:
        require(
            open_clip.get_model_config(self.model) is not None,
            "model",
            f"unknown model {self.model!r}; see open_clip.list_models()",
        )
        require(
            self.pretrained is None or os.path.isfile(self.pretrained),
            "pretrained",
            f"no such local file {self.pretrained!r} (nothing is downloaded)",
        )
        require(
            self.dataset_type in ("auto", *FORMATS),
            "dataset_type",
            f"choose auto or one of {FORMATS}",
        )
        shards = self.dataset_type == "wds" or ".tar" in (self.train_data or "")
        require(
            not shards or self.train_num_samples is not None,
            "train_num_samples",
            "webdataset shards need the number of samples per epoch",
        )
        if self.train_data is not None and not shards:
            require(os.path.isfile(self.train_data), "train_data", "no such file")
        if self.val_data is not None and ".tar" not in self.val_data:
            require(os.path.isfile(self.val_data), "val_data", "no such file")
        require(self.scenes_images >= 20, "scenes_images", "must be at least 20")
        require(self.objective in OBJECTIVES, "objective", f"choose one of {OBJECTIVES}")
        require(self.precision in PRECISIONS, "precision", f"choose one of {PRECISIONS}")
        require(len(self.loss_weights) == 3, "loss_weights", "give three weights")
        require(self.logit_scale > 0, "logit_scale", "must be positive")
        require(self.mask_heads >= 1, "mask_heads", "must be at least 1")
        require(
            0 <= self.keep_positions < self.context_length - 1,
            "keep_positions",
            "must lie in 0..context_length-2",
        )
        for name in ("batch_size", "accum_freq", "epochs", "log_every_n_steps"):
            require(getattr(self, name) >= 1, name, "must be at least 1")
        for name in ("warmup", "workers", "save_frequency", "save_every_steps", "val_frequency"):
            require(getattr(self, name) >= 0, name, "must be non-negative")
        for name in ("lr", "wd", "mask_lr", "mask_wd", "eps"):
            require(getattr(self, name) >= 0, name, "must be non-negative")
        require(self.steps is None or self.steps >= 1, "steps", "must be at least 1")
        require(
            self.resume != "latest" or self.name is not None,
            "resume",
            "'latest' needs the run's --name",
        )
        require(
            self.resume in (None, "latest") or os.path.isfile(self.resume),
            "resume",
            f"no such checkpoint {self.resume!r}",
        )


_TINY = {
    "model": TINY_MODEL, "mask_heads": 4, "logit_scale": 10.0, "precision": "fp32",
    "workers": 0, "save_frequency": 0, "save_every_steps": 100, "log_every_n_steps": 10,
}  # fmt: skip
PRESETS = {
    # the released recipe at ViT-L/14 (the defaults are ViT-B/16)
    "vit-l-14": {"model": "ViT-L-14-quickgelu", "grad_checkpointing": True},
    # CPU stage 1: CLIP pre-training of the tiny towers from scratch (a SmartCLIP mask network
    # trained from random features shrinks to one dimension before the features mean anything)
    "tiny-clip": {
        **_TINY, "objective": "clip", "context_length": 77, "lr": 1e-3, "wd": 0.1, "warmup": 50,
        "epochs": 10, "val_frequency": 5,
    },
    # CPU stage 2: the recipe on the stage-1 towers (stretch to 248, separate rates), scaled to a
    # tiny model: backbone lr 1e-4, logit scale 10 as in stage 1
    "tiny-smartclip": {**_TINY, "lr": 1e-4, "warmup": 20, "epochs": 2},
}  # fmt: skip


# -------------------------------------------------------------------------------------- helpers


def scenes_root(scenes_dir: str | Path, n_images: int) -> Path:
    """Where the built-in scenes of this size are cached (splits `train/`, `val/` inside)."""
    return Path(scenes_dir) / f"n{n_images}-px{SCENES_IMAGE_SIZE}"


def prepare_scenes(cfg: TrainConfig, env: dist.DistEnv) -> tuple[str, str]:
    """Render the built-in scenes once (rank 0, atomically); return the train and val CSVs."""
    root = scenes_root(cfg.scenes_dir, cfg.scenes_images)
    train_csv, val_csv = root / "train" / "captions.csv", root / "val" / "captions.csv"
    if env.is_main and not train_csv.exists():
        if root.exists():
            raise SystemExit(f"{root} exists but has no train/captions.csv; remove it")
        tmp = root.with_name(f"{root.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"rendering {cfg.scenes_images} scenes into {root} ...", flush=True)
        write_dataset(tmp, cfg.scenes_images, ("csv",), SceneConfig(image_size=SCENES_IMAGE_SIZE))
        os.replace(tmp, root)
    dist.barrier()
    return str(train_csv), str(val_csv)


def data_options(cfg: TrainConfig, source: str) -> tuple[str | None, dict]:
    """(format, loader options) for an annotation source, from the --dataset-type/--csv-* flags."""
    return annotation_options(
        source,
        cfg.dataset_type,
        img_key=cfg.csv_img_key,
        caption_key=cfg.csv_caption_key,
        sep=cfg.csv_separator,
    )


def param_groups(model: SmartCLIPModel, cfg: TrainConfig) -> list[dict]:
    """Backbone weights (lr, wd); backbone biases, norms and embeddings (lr, no wd); mask net."""
    no_wd_names = {f"clip.{n}" for n in model.clip.no_weight_decay()}
    groups: dict[str, list[torch.nn.Parameter]] = {"backbone": [], "backbone_no_wd": [], "mask": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("masknet."):
            groups["mask"].append(p)
        elif p.ndim < 2 or name in no_wd_names or "embedding" in name:
            groups["backbone_no_wd"].append(p)
        else:
            groups["backbone"].append(p)
    settings = {
        "backbone": (cfg.lr, cfg.wd),
        "backbone_no_wd": (cfg.lr, 0.0),
        "mask": (cfg.mask_lr, cfg.mask_wd),
    }
    return [
        {"params": ps, "lr": settings[n][0], "weight_decay": settings[n][1], "name": n}
        for n, ps in groups.items()
        if ps
    ]


def rng_state() -> dict:
    """Python, numpy and torch RNG states as tensors and plain types (loadable weights_only)."""
    version, py_state, gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": (version, torch.tensor(py_state, dtype=torch.int64), gauss),
        "numpy": (torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state.tolist()), gauss))
    keys, pos, has_gauss, gauss_np = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss_np))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict, path: Path) -> None:
    """Atomic: write a temporary file in the same directory, fsync it, rename it over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class _SkipFirst(Sampler[int]):
    """The wrapped sampler's indices after the first `skip`."""

    def __init__(self, sampler: Sampler[int], skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


class BatchStream:
    """Training batches epoch after epoch; (epoch, position) is the exact, resumable data position.

    An epoch is `batches_per_epoch` loader batches (fewer if shards run dry). Resuming at
    `position` skips that many batches: map-style data by skipping sampler indices (nothing is
    read), shards by reading and discarding them. The next epoch's iterator is opened as soon
    as an epoch ends, so the RNG draws of opening it fall inside the step that ended it.
    """

    def __init__(self, data: TrainData, batches_per_epoch: int, epoch: int = 0, position: int = 0):
        self.data, self.batches_per_epoch = data, batches_per_epoch
        self.epoch, self.position = epoch, position
        self._iterator = self._open()

    def _open(self) -> Iterator[Batch]:
        self.data.set_epoch(self.epoch)
        loader = self.data.loader
        if self.position == 0:
            return iter(loader)
        if self.data.sampler is None:
            iterator = iter(loader)
            for _ in range(self.position):
                next(iterator)
            return iterator
        resumed = DataLoader(
            loader.dataset,
            batch_size=loader.batch_size,
            sampler=_SkipFirst(self.data.sampler, self.position * loader.batch_size),
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            drop_last=loader.drop_last,
            pin_memory=loader.pin_memory,
        )
        return iter(resumed)

    def _next_epoch(self) -> None:
        self.epoch, self.position = self.epoch + 1, 0
        self._iterator = self._open()

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Batch:
        try:
            batch = next(self._iterator)
        except StopIteration:
            if self.position == 0:
                raise RuntimeError(f"epoch {self.epoch} yielded no batches") from None
            logging.warning(
                "epoch %d ended after %d of %d batches (unreadable shards?)",
                self.epoch,
                self.position,
                self.batches_per_epoch,
            )
            self._next_epoch()
            return next(self)
        self.position += 1
        if self.position == self.batches_per_epoch:
            self._next_epoch()
        return batch


def _cat(parts: Sequence[Embeddings]) -> Embeddings:
    m = None if parts[0].m is None else torch.cat([p.m for p in parts])
    return Embeddings(torch.cat([p.u for p in parts]), torch.cat([p.t for p in parts]), m)


def rank_loss(cfg: TrainConfig, local: Embeddings, global_rows: int) -> tuple[LossOutput, float]:
    """This rank's part of the global-batch objective (in fp32) and its DDP weight W·b_r/B."""
    local = Embeddings(*(None if x is None else x.float() for x in (local.u, local.t, local.m)))
    weights = tuple(cfg.loss_weights)
    if dist.world_size() == 1:
        return objective_loss(cfg.objective, local, cfg.logit_scale, weights=weights), 1.0
    gather = dist.gather_with_grad if cfg.gather_with_grad else dist.gather_without_grad
    (u, offset), (t, _) = gather(local.u), gather(local.t)
    gathered = Embeddings(u, t, None if local.m is None else gather(local.m)[0])
    if not cfg.local_loss:
        return objective_loss(cfg.objective, gathered, cfg.logit_scale, weights=weights), 1.0
    out = objective_loss(cfg.objective, local, cfg.logit_scale, gathered, offset, weights)
    return out, dist.local_weight(local.u.shape[0], global_rows)


@dataclass
class StepResult:
    """Global-batch loss terms (None if the step was skipped), rows trained on, images dropped."""

    losses: dict[str, float] | None
    rows: int
    dropped: int


def forward_backward(
    model: Callable[[torch.Tensor, torch.Tensor], Embeddings],
    ddp: DistributedDataParallel | None,
    batches: Sequence[Batch],
    cfg: TrainConfig,
    device: torch.device,
    scaler: torch.amp.GradScaler,
    autocast: Callable[[], AbstractContextManager],
) -> StepResult:
    """Accumulate the gradient of the objective on the step's micro-batches (all ranks' rows).

    A step where some rank's micro-batch lost every image is skipped on every rank.
    """
    counts = torch.tensor([[len(b.texts), b.n_dropped] for b in batches], device=device)
    counts = dist.all_gather_sizes(counts)  # [W, a, (rows, dropped)]
    dropped, global_rows = int(counts[..., 1].sum()), int(counts[..., 0].sum())
    if (counts[..., 0] == 0).any():
        return StepResult(None, 0, dropped)
    micro = [(b.images.to(device, non_blocking=True), b.texts.to(device)) for b in batches]
    cached = []
    if len(micro) > 1:
        with torch.no_grad(), autocast():
            cached = [model(images, texts) for images, texts in micro]
    for j, (images, texts) in enumerate(micro):
        last = j == len(micro) - 1
        with nullcontext() if ddp is None or last else ddp.no_sync():
            with autocast():
                fresh = model(images, texts)
            local = _cat([*cached[:j], fresh, *cached[j + 1 :]]) if cached else fresh
            out, weight = rank_loss(cfg, local, global_rows)
            scaler.scale(out.total * weight).backward()
    values = torch.stack([out.total.detach(), *out.terms.values()]) * weight
    if dist.world_size() > 1:
        torch.distributed.all_reduce(values)
        values /= dist.world_size()
    names = ["loss", *out.terms]
    return StepResult(dict(zip(names, values.tolist(), strict=True)), global_rows, dropped)


@torch.no_grad()
def evaluate(
    model: SmartCLIPModel,
    eval_set: EvalSet,
    tokenizer: Callable,
    transform: Callable,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
    batch_size: int = 256,
) -> dict[str, float]:
    """Recall@{1,5,10} of text→image and image→text retrieval with UNMASKED embeddings
    (`smartclip.eval.retrieval_metrics`)."""
    model.eval()
    images = encode_images(model, eval_set, transform, device, autocast, batch_size)
    texts = encode_texts(model, tokenizer, eval_set.captions, device, autocast, batch_size)
    model.train()
    return retrieval_metrics(images, texts, eval_set.text_to_image)


class RunLog:
    """Per-step CSV files (`train.csv`, `val.csv`) and TensorBoard scalars; rank 0 only.

    On resume from step s, rows after s (written before a crash) are dropped."""

    def __init__(self, run_dir: Path, enabled: bool, start_step: int) -> None:
        self.run_dir, self.enabled = run_dir, enabled
        if not enabled:
            return
        for kind in ("train", "val"):
            path = run_dir / f"{kind}.csv"
            if path.exists():
                with path.open(newline="") as fh:
                    rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= start_step]
                    fields = list(rows[0]) if rows else None
                path.unlink()
                if fields:
                    self._append(kind, rows, fields)
        self.tb = SummaryWriter(run_dir / "tensorboard", purge_step=start_step + 1)

    def _append(self, kind: str, rows: list[dict], fields: list[str]) -> None:
        path = self.run_dir / f"{kind}.csv"
        new = not path.exists()
        with path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            if new:
                writer.writeheader()
            writer.writerows(rows)

    def write(self, kind: str, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._append(kind, [{"step": step, **values}], ["step", *values])
        for key, value in values.items():
            self.tb.add_scalar(f"{kind}/{key}", value, step)
        self.tb.flush()

    def close(self) -> None:
        if self.enabled:
            self.tb.close()


def run_directory(cfg: TrainConfig, env: dist.DistEnv) -> tuple[Path, Path | None]:
    """(run directory, checkpoint to resume from); a fresh run may not reuse a name."""
    name = cfg.name or time.strftime("%Y_%m_%d-%H_%M_%S") + f"-{cfg.model}-{cfg.objective}"
    run_dir = Path(cfg.logs) / name
    resume = None
    if cfg.resume == "latest":
        resume = run_dir / "checkpoints" / "latest.pt"
        if not resume.is_file():
            raise SystemExit(f"--resume latest: no checkpoint at {resume}")
    elif cfg.resume is not None:
        resume = Path(cfg.resume)
    elif (run_dir / "checkpoints").exists():
        raise SystemExit(f"run {run_dir} exists: pick another --name or --resume latest")
    dist.barrier()
    if env.is_main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")
    return run_dir, resume


# ------------------------------------------------------------------------------------ the loop


def train(cfg: TrainConfig) -> Path:
    """Run training as configured; returns the run directory."""
    env = dist.init_distributed(cfg.device)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    run_dir, resume = run_directory(cfg, env)
    ckpt_dir = run_dir / "checkpoints"

    # data
    train_source, val_source = cfg.train_data, cfg.val_data
    if train_source is None:
        train_source, scenes_val = prepare_scenes(cfg, env)
        val_source = val_source or scenes_val
    model = build_model(
        cfg.model,
        cfg.pretrained,
        cfg.context_length,
        cfg.keep_positions,
        cfg.freeze_kept_positions,
        cfg.objective == "smartclip",
        cfg.mask_heads,
    ).to(env.device)
    if cfg.grad_checkpointing:
        model.clip.set_grad_checkpointing()
    tokenizer = open_clip.get_tokenizer(cfg.model, context_length=cfg.context_length)
    transform = preprocess(model.clip)
    fmt, options = data_options(cfg, train_source)
    data = build_train_loader(
        train_source,
        transform,
        tokenizer,
        batch_size=cfg.batch_size,
        fmt=fmt,
        num_workers=cfg.workers,
        seed=cfg.seed,
        rank=env.rank,
        world_size=env.world_size,
        sentence_sampling=cfg.sentence_sampling,
        pin_memory=env.device.type == "cuda",
        **options,
    )
    if data.num_samples is None:
        batches_per_epoch = cfg.train_num_samples // (cfg.batch_size * env.world_size)
    else:
        batches_per_epoch = len(data.loader)
    steps_per_epoch = batches_per_epoch // cfg.accum_freq
    if steps_per_epoch < 1:
        raise SystemExit(f"{train_source}: fewer than batch_size × accum_freq samples per rank")
    total_steps = cfg.epochs * steps_per_epoch
    total_steps = min(total_steps, cfg.steps) if cfg.steps else total_steps
    eval_set = None
    if val_source is not None and env.is_main:
        val_fmt, val_options = data_options(cfg, val_source)
        eval_set = build_eval_set(val_source, val_fmt, **val_options)

    # optimisation
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg), betas=(cfg.beta1, cfg.beta2), eps=cfg.eps
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(cosine_lr, total=total_steps, warmup=cfg.warmup)
    )
    scaler = torch.amp.GradScaler(env.device.type, enabled=cfg.precision == "amp")
    autocast = autocast_context(cfg.precision, env.device)

    # resume
    progress = {"step": 0, "epoch": 0, "position": 0, "skipped_images": 0, "skipped_steps": 0}
    ckpt = None
    if resume is not None:
        ckpt = torch.load(resume, map_location="cpu", weights_only=True)
        if (ckpt["model_name"], ckpt["context_length"]) != (cfg.model, cfg.context_length):
            raise SystemExit(
                f"{resume} holds {ckpt['model_name']} at context "
                f"{ckpt['context_length']}, not {cfg.model} at {cfg.context_length}"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        progress.update(ckpt["progress"])
    ddp = None
    if env.world_size > 1:
        ddp = DistributedDataParallel(
            model, device_ids=[env.device.index] if env.device.type == "cuda" else None
        )
    forward = ddp or model
    if cfg.torchcompile:
        forward = torch.compile(forward)
    stream = BatchStream(data, batches_per_epoch, progress["epoch"], progress["position"])
    if ckpt is not None:
        set_rng_state(ckpt["rng"])  # after everything that draws random numbers at setup
    log = RunLog(run_dir, env.is_main, progress["step"])

    def checkpoint(path: Path) -> None:
        progress.update(epoch=stream.epoch, position=stream.position)
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "progress": dict(progress),
            "rng": rng_state(),
            "model_name": cfg.model,
            "context_length": cfg.context_length,
            "config": asdict(cfg),
        }
        if env.is_main:
            save_checkpoint(state, path)

    def validate(step: int) -> dict[str, float]:
        metrics = evaluate(model, eval_set, tokenizer, transform, env.device, autocast)
        log.write("val", step, metrics)
        tqdm.write(f"step {step}: " + ", ".join(f"{k} {v:.1f}" for k, v in metrics.items()))
        return metrics

    if env.is_main:
        print(
            f"training {cfg.model} ({cfg.objective}) for {total_steps} steps "
            f"({steps_per_epoch}/epoch) on {env.world_size} × {env.device}; logs in {run_dir}"
        )
    pbar = tqdm(total=total_steps, initial=progress["step"], disable=not env.is_main)
    metrics: dict[str, float] = {}
    last_eval = -1
    tick, rows_since = time.perf_counter(), 0
    while progress["step"] < total_steps:
        epoch_before = stream.epoch
        batches = [next(stream) for _ in range(cfg.accum_freq)]
        optimizer.zero_grad(set_to_none=True)
        result = forward_backward(forward, ddp, batches, cfg, env.device, scaler, autocast)
        if result.losses is None:
            progress["skipped_steps"] += 1
        else:
            scaler.step(optimizer)
            scaler.update()
        lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}  # this step's rates
        scheduler.step()
        progress["step"] += 1
        progress["skipped_images"] += result.dropped
        step, rows_since = progress["step"], rows_since + result.rows
        pbar.update(1)

        logged = step % cfg.log_every_n_steps == 0 or step == total_steps
        if logged and result.losses is not None:  # a skipped step shows in the next row
            elapsed, tick = time.perf_counter() - tick, time.perf_counter()
            values = {
                "epoch": step / steps_per_epoch,
                "lr": lrs["backbone"],
                **({"mask_lr": lrs["mask"]} if "mask" in lrs else {}),
                **result.losses,
                "samples_per_s": rows_since / elapsed,
                "skipped_images": progress["skipped_images"] + data.n_malformed,
                "skipped_steps": progress["skipped_steps"],
            }
            rows_since = 0
            log.write("train", step, values)
            pbar.set_postfix(loss=f"{values['loss']:.3f}")
        if stream.epoch > epoch_before:
            finished = stream.epoch
            if eval_set is not None and cfg.val_frequency and finished % cfg.val_frequency == 0:
                metrics, last_eval = validate(step), step
            if cfg.save_frequency and finished % cfg.save_frequency == 0:
                checkpoint(ckpt_dir / f"epoch_{finished}.pt")
        if (cfg.save_every_steps and step % cfg.save_every_steps == 0) or step == total_steps:
            checkpoint(ckpt_dir / "latest.pt")
    pbar.close()

    if eval_set is not None and last_eval != progress["step"]:
        metrics = validate(progress["step"])
    export = run_dir / "export" / EXPORT_WEIGHTS_NAME
    if env.is_main:
        export_open_clip(ckpt_dir / "latest.pt", export)
        print(
            f"run:          {run_dir}\n"
            f"checkpoints:  {ckpt_dir} (resume: --name {run_dir.name} --resume latest)\n"
            f"logs:         {run_dir / 'train.csv'}, {run_dir / 'val.csv'}, "
            f"tensorboard --logdir {run_dir / 'tensorboard'}\n"
            f"open_clip:    {export} (open_clip.create_model('{cfg.model}', pretrained=PATH, "
            f"force_context_length={cfg.context_length}))"
        )
        if metrics:
            print("retrieval:    " + ", ".join(f"{k} {v:.1f}" for k, v in metrics.items()))
    log.close()
    dist.barrier()
    dist.cleanup()
    return run_dir


def demo() -> Path:
    """The no-argument run: presets tiny-clip, then tiny-smartclip from its open_clip export."""
    stamp = time.strftime("%Y_%m_%d-%H_%M_%S")
    stage1 = train(TrainConfig(**PRESETS["tiny-clip"], name=f"{stamp}-tiny-clip"))
    pretrained = str(stage1 / "export" / EXPORT_WEIGHTS_NAME)
    return train(
        TrainConfig(
            **PRESETS["tiny-smartclip"], pretrained=pretrained, name=f"{stamp}-tiny-smartclip"
        )
    )


def main(argv: Sequence[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        return demo()
    cfg = parse_config(
        TrainConfig,
        argv,
        presets=PRESETS,
        prog="python -m smartclip.train",
        description=__doc__.split("\n\n")[0],
    )
    return train(cfg)


if __name__ == "__main__":
    main()
