"""`smartclip.train`'s configuration: every field a flag, the defaults the released recipe.

The released SmartCLIP recipe (design.md §1), which the defaults are and which
`tests/smartclip/test_train_config.py` checks against docs/training.md's recipe table: ViT-B/16 from
OpenAI's weights with the text context stretched 77 → 248 (positions 0-19 copied and frozen);
AdamW with betas (0.9, 0.999) and eps 1e-8; backbone lr 1e-6 with weight decay 0.01 on every
backbone parameter and a cosine schedule after 200 warm-up steps; mask network lr 1e-3 without
weight decay on its own cosine schedule without warm-up; loss 10·(L_sidm + L_dism) + 2·mean|m|
at a fixed logit scale 100, hard masks p ≥ 0.5; fp16 AMP; 3 epochs; effective batch 1,024
(accumulation = 1,024 // (batch × processes)). Our own preferences are flags that default off.

The long-caption objectives' settings are their releases' where a release fixes them (Long-CLIP:
32 components, PCA per rank before the gather, the short caption before the first ". "; MulCLIP's
calibration as FineLIP's); `--preset longclip-release` sets Long-CLIP's batch, epochs and learned
logit scale. MulCLIP's λ's, temperatures and top-k are not reachable in its paper here: their
flags say "assumed"; `--max-sentences` says that its cap on the sub-captions is ours.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import open_clip

from smartclip.calibration import CALIBRATION_SHARE
from smartclip.cli import require
from smartclip.data import CAPTION_FITS, FORMATS, MAX_SENTENCES
from smartclip.data.captions import SHORT_CAPTIONS
from smartclip.losses import OBJECTIVES, PCA_SCOPES, SPARSITY_FORMS
from smartclip.model import KEEP_POSITIONS, TINY_MODEL

PRECISIONS = ("amp", "amp_bf16", "fp32")
MAX_DEFAULT_WORKERS = 4
# the long-caption objectives' settings, passed by their class parameters' names
OBJECTIVE_FIELDS = (
    "pca_components", "pca_share", "pca_scope", "short_weight", "word_weight", "sub_weight",
    "attn_temperature", "word_temperature", "sub_topk",
)  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    """Every field is a flag (`--batch-size 64`). Defaults: SmartCLIP's released ViT-B/16 recipe."""

    model: str = field(
        default="ViT-B-16-quickgelu",
        metadata={"help": "open_clip config name (-quickgelu for OpenAI weights)"},
    )
    pretrained: str | None = field(
        default=None,
        metadata={"help": "local weights: open_clip state dict or OpenAI TorchScript .pt"},
    )
    train_data: str | None = field(
        default=None, metadata={"help": "csv/tsv/json/shards; None renders the built-in scenes"}
    )
    val_data: str | None = field(
        default=None, metadata={"help": "retrieval eval set (None: the built-in scenes' val)"}
    )
    val_split: str | None = field(
        default=None, metadata={"help": "Karpathy-layout split of --val-data to evaluate (test)"}
    )
    dataset_type: str = field(default="auto", metadata={"help": f"auto or one of {FORMATS}"})
    csv_img_key: str = "filepath"
    csv_caption_key: str = "title"
    csv_separator: str | None = field(
        default=None, metadata={"help": "None: ',' for .csv, tab for .tsv"}
    )
    csv_negative_key: str | None = field(
        default=None,
        metadata={
            "help": "CSV column with a hard-negative caption per row (NegCLIP's training CSV)"
        },
    )
    train_num_samples: int | None = field(
        default=None, metadata={"help": "samples per epoch over all ranks (needed for shards)"}
    )
    sentence_sampling: bool = field(
        default=True, metadata={"help": "train on a random first-k-sentence prefix of a caption"}
    )
    caption_fit: str = field(
        default="truncate",
        metadata={
            "help": "captions over --context-length: truncate (the tokenizer cuts; release) or "
            "sentences (drop trailing sentences until it fits)"
        },
    )
    wds_resampled: bool = field(
        default=False,
        metadata={
            "help": "shards: each rank and worker draws shards with replacement, seeded, without "
            "end, instead of splitting them (multi-node streaming)"
        },
    )
    max_skipped_share: float = field(
        default=0.05,
        metadata={"help": "stop when more than this share of samples so far was unreadable"},
    )
    hard_negatives: bool = field(
        default=False,
        metadata={"help": "built-in scenes: train on their mined SWAP/REPLACE/ADD negatives"},
    )
    scenes_dir: str = "runs/data/scenes"
    scenes_images: int = field(default=6000, metadata={"help": "built-in scenes to render"})
    objective: str = field(
        default="smartclip",
        metadata={
            "help": f"one of {tuple(OBJECTIVES)}; for Long-CLIP's released recipe (2,048 pairs a "
            "step, 6 epochs, logit scale learned from 100) add --preset longclip-release"
        },
    )
    logit_scale: float = field(
        default=100.0, metadata={"help": "logit scale s (fixed, or the start of a learned one)"}
    )
    learn_logit_scale: bool = field(
        default=False,
        metadata={
            "help": "learn log s at the backbone's lr and weight decay (Long-CLIP's release; "
            "SmartCLIP's keeps s fixed)"
        },
    )
    loss_weights: tuple[float, ...] = field(
        default=(10.0, 10.0, 2.0), metadata={"help": "smartclip weights of sidm, dism, sparsity"}
    )
    sparsity: str = field(
        default="abs",
        metadata={"help": "abs: mean|m| (release; off entries get no push); mean: mean(m)"},
    )
    mask_norm_floor: float = field(
        default=1.0,
        metadata={"help": "S's norm floor in units of ‖u‖/√D (0: bare eps guard)"},
    )
    pca_components: int | None = field(
        default=32,
        metadata={
            "help": "longclip: principal components of its coarse term (the release's 32 at "
            "B/16 and L/14); none: --pca-share of the embedding"
        },
    )
    pca_share: float = field(
        default=1 / 16,
        metadata={"help": "longclip: components kept as a share of the embedding (32 / 512)"},
    )
    pca_scope: str = field(
        default="rank",
        metadata={
            "help": "longclip: PCA over each GPU's micro-batch before the gather (rank; the "
            "release) or over the gathered batch (global)"
        },
    )
    short_weight: float = field(
        default=1.0, metadata={"help": "mulclip: weight of L_global's short caption (reviews)"}
    )
    word_weight: float = field(default=1.0, metadata={"help": "mulclip: λ_W of L_word (assumed)"})
    sub_weight: float = field(default=1.0, metadata={"help": "mulclip: λ_S of L_sub (assumed)"})
    attn_temperature: float = field(
        default=0.1, metadata={"help": "mulclip: τ_a of its attention (assumed)"}
    )
    word_temperature: float = field(
        default=0.1, metadata={"help": "mulclip: τ_w of L_word's retrieval (assumed)"}
    )
    sub_topk: int = field(
        default=16, metadata={"help": "mulclip: patches aggregated per sub-caption (assumed)"}
    )
    calibration_share: float = field(
        default=CALIBRATION_SHARE,
        metadata={
            "help": "mulclip: tokens after calibration per image patch (FineLIP's ATRM: 0.2, "
            "39 of 196)"
        },
    )
    max_sentences: int = field(
        default=MAX_SENTENCES,
        metadata={
            "help": "mulclip: sub-captions per caption, its first sentences (a cap of ours; "
            "MulCLIP uses every sentence)"
        },
    )
    short_caption: str = field(
        default="release",
        metadata={
            "help": f"short caption, one of {SHORT_CAPTIONS}: release (text before the first "
            "'. ', Long-CLIP's) or sentence (first sentence, stop kept)"
        },
    )
    mask_heads: int = 8
    context_length: int = field(
        default=248, metadata={"help": "text context; more than the weights' own stretches them"}
    )
    keep_positions: int = field(
        default=KEEP_POSITIONS, metadata={"help": "positions copied unchanged by the stretch"}
    )
    freeze_kept_positions: bool = field(
        default=True, metadata={"help": "keep the kept positions bitwise fixed (Long-CLIP)"}
    )
    batch_size: int = field(default=128, metadata={"help": "micro-batch per process"})
    global_batch: int = field(
        default=1024,
        metadata={
            "help": "effective batch; accumulation = this // (batch × ranks) (SmartCLIP's; "
            "--preset longclip-release: Long-CLIP's 2,048)"
        },
    )
    accum_freq: int | None = field(
        default=None, metadata={"help": "micro-batches per step (None: from --global-batch)"}
    )
    epochs: int = field(
        default=3, metadata={"help": "SmartCLIP's; --preset longclip-release: Long-CLIP's 6"}
    )
    steps: int | None = field(default=None, metadata={"help": "cap on optimizer steps"})
    lr: float = field(default=1e-6, metadata={"help": "backbone learning rate"})
    wd: float = field(default=0.01, metadata={"help": "backbone weight decay"})
    wd_skip_gain_bias: bool = field(
        default=False,
        metadata={
            "help": "no decay on biases, gains, embeddings (open_clip's habit; not the recipe)"
        },
    )
    mask_lr: float = 1e-3
    mask_wd: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    warmup: int = field(default=200, metadata={"help": "backbone warm-up steps before the cosine"})
    mask_warmup: int = field(default=0, metadata={"help": "mask network warm-up steps"})
    precision: str = field(default="amp", metadata={"help": f"one of {PRECISIONS}"})
    max_nonfinite_steps: int = field(
        default=25,
        metadata={"help": "stop after this many consecutive non-finite loss/gradient steps"},
    )
    grad_clip_norm: float | None = field(
        default=None,
        metadata={"help": "clip the total gradient norm to this (None: no clipping; release)"},
    )
    lock_image: bool = field(
        default=False, metadata={"help": "freeze the image tower (open_clip's lock_image_tower)"}
    )
    lock_text: bool = field(
        default=False, metadata={"help": "freeze the text tower (open_clip's lock_text_tower)"}
    )
    grad_checkpointing: bool = False
    torchcompile: bool = False
    local_loss: bool = True
    gather_with_grad: bool = True
    workers: int | None = field(
        default=None,
        metadata={
            "help": "data-loader processes per rank (None: the CPU cores this process may use, "
            f"at most {MAX_DEFAULT_WORKERS})"
        },
    )
    threads: int | None = field(
        default=None, metadata={"help": "torch CPU threads per process (default: torch's own)"}
    )
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
        require(self.threads is None or self.threads >= 1, "threads", "must be at least 1")
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
        require(
            not self.hard_negatives or self.train_data is None,
            "hard_negatives",
            "mines the built-in scenes; for your data name the column: --csv-negative-key",
        )
        require(not self.wds_resampled or shards, "wds_resampled", "applies to shards only")
        require(self.caption_fit in CAPTION_FITS, "caption_fit", f"choose one of {CAPTION_FITS}")
        if self.val_data is not None and ".tar" not in self.val_data:
            require(os.path.isfile(self.val_data), "val_data", "no such file")
        require(
            self.val_split is None or self.val_data is not None, "val_split", "needs --val-data"
        )
        require(self.scenes_images >= 20, "scenes_images", "must be at least 20")
        require(self.objective in OBJECTIVES, "objective", f"choose one of {tuple(OBJECTIVES)}")
        require(self.precision in PRECISIONS, "precision", f"choose one of {PRECISIONS}")
        require(len(self.loss_weights) == 3, "loss_weights", "give three weights")
        require(self.sparsity in SPARSITY_FORMS, "sparsity", f"choose one of {SPARSITY_FORMS}")
        require(self.mask_norm_floor >= 0, "mask_norm_floor", "must be non-negative")
        require(self.logit_scale > 0, "logit_scale", "must be positive")
        require(self.mask_heads >= 1, "mask_heads", "must be at least 1")
        require(
            self.pca_components is None or self.pca_components >= 1,
            "pca_components",
            "must be at least 1 (or none)",
        )
        require(0 < self.pca_share <= 1, "pca_share", "must lie in (0, 1]")
        require(self.pca_scope in PCA_SCOPES, "pca_scope", f"choose one of {PCA_SCOPES}")
        for name in ("short_weight", "word_weight", "sub_weight"):
            require(getattr(self, name) >= 0, name, "must be non-negative")
        for name in ("attn_temperature", "word_temperature"):
            require(getattr(self, name) > 0, name, "must be positive")
        require(self.sub_topk >= 1, "sub_topk", "must be at least 1")
        require(0 < self.calibration_share <= 1, "calibration_share", "must lie in (0, 1]")
        require(self.max_sentences >= 1, "max_sentences", "must be at least 1")
        require(
            self.short_caption in SHORT_CAPTIONS, "short_caption", f"choose one of {SHORT_CAPTIONS}"
        )
        require(
            0 <= self.keep_positions < self.context_length - 1,
            "keep_positions",
            "must lie in 0..context_length-2",
        )
        require(0 <= self.max_skipped_share <= 1, "max_skipped_share", "must lie in [0, 1]")
        for name in ("batch_size", "global_batch", "epochs", "log_every_n_steps"):
            require(getattr(self, name) >= 1, name, "must be at least 1")
        require(self.accum_freq is None or self.accum_freq >= 1, "accum_freq", "at least 1")
        require(self.max_nonfinite_steps >= 1, "max_nonfinite_steps", "must be at least 1")
        require(self.workers is None or self.workers >= 0, "workers", "must be non-negative")
        require(
            self.grad_clip_norm is None or self.grad_clip_norm > 0, "grad_clip_norm", "positive"
        )
        nonneg = ("warmup", "mask_warmup", "save_frequency", "save_every_steps")
        for name in (*nonneg, "val_frequency"):
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

    def objective_settings(self) -> dict:
        """The keyword arguments `losses.build_objective` hands the objective (each class takes
        its own)."""
        own = {name: getattr(self, name) for name in OBJECTIVE_FIELDS}
        return {
            "weights": tuple(self.loss_weights),
            "sparsity": self.sparsity,
            "norm_floor": self.mask_norm_floor,
            **own,
        }

    def loader_workers(self) -> int:
        """--workers, or the CPU cores this process may use (its affinity), at most
        MAX_DEFAULT_WORKERS: torch warns when a loader has more workers than that."""
        if self.workers is not None:
            return self.workers
        return min(MAX_DEFAULT_WORKERS, len(os.sched_getaffinity(0)))

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per optimizer step: `accum_freq` if given, else the release's
        global_batch // (batch_size × world_size); at least 1."""
        if self.accum_freq is not None:
            return self.accum_freq
        return max(1, self.global_batch // (self.batch_size * world_size))


_TINY = {
    "model": TINY_MODEL, "mask_heads": 4, "logit_scale": 10.0, "precision": "fp32",
    "workers": 0, "save_frequency": 0, "save_every_steps": 100, "log_every_n_steps": 10,
    "accum_freq": 1,
}  # fmt: skip
PRESETS = {
    # the released recipe at ViT-L/14 (the defaults are ViT-B/16)
    "vit-l-14": {"model": "ViT-L-14-quickgelu", "grad_checkpointing": True},
    # Long-CLIP's release where it differs from SmartCLIP's (beichenzbc/Long-CLIP): 16 GPUs × 128
    # = 2,048 pairs a step (`train/train_slurm.sh`, `--batch-size` 128), 6 epochs
    # (`train/train.md`; argparse's default is 2), log s learned from 4.6052 = log 100
    # (`train/train.py`); lr 1e-6, wd 0.01 on every parameter, 200 warm-up steps, AdamW
    # 0.9/0.999/1e-8, fp16 AMP and the 248-token stretch are the defaults already
    "longclip-release": {
        "objective": "longclip", "global_batch": 2048, "epochs": 6, "learn_logit_scale": True,
    },
    # CPU stage 1: CLIP pre-training of the tiny towers from scratch (a SmartCLIP mask network
    # trained from random features shrinks to one dimension before the features mean anything);
    # from scratch, so no positions are frozen and gains and biases are not decayed
    "tiny-clip": {
        **_TINY, "objective": "clip", "context_length": 77, "lr": 1e-3, "wd": 0.1, "warmup": 50,
        "epochs": 10, "val_frequency": 5, "freeze_kept_positions": False,
        "wd_skip_gain_bias": True,
    },
    # CPU stage 2: the recipe on the stage-1 towers (stretch to 248, separate rates, frozen
    # positions), scaled to a tiny model: backbone lr 1e-4, logit scale 10 as in stage 1
    "tiny-smartclip": {**_TINY, "lr": 1e-4, "warmup": 20, "epochs": 2},
    # the same fine-tuning budget with CLIP's loss, without and with mined hard negatives
    "tiny-clip-ft": {**_TINY, "objective": "clip", "lr": 1e-4, "warmup": 20, "epochs": 2},
    "tiny-negclip": {
        **_TINY, "objective": "clip", "lr": 1e-4, "warmup": 20, "epochs": 2,
        "hard_negatives": True,
    },
}  # fmt: skip
DEMO_STAGES = ("tiny-smartclip", "tiny-clip-ft", "tiny-negclip")  # each from tiny-clip's export
