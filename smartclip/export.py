"""Export the open_clip weights of any training checkpoint:
`python -m smartclip.export --checkpoint runs/NAME/checkpoints/epoch_2.pt [--out DIR]`.

The export is `DIR/open_clip_pytorch_model.bin` (the open_clip state dict, mask network dropped)
and `DIR/open_clip_config.json` (the model config with the run's stretched context), both written
atomically. Load it with

    open_clip.create_model(name, pretrained=PATH, force_context_length=context_length)

(without `force_context_length` open_clip resamples a 248-row positional table back to 77), or
`open_clip.create_model("local-dir:DIR")`, which reads the config beside the weights.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import open_clip

from smartclip.checkpoint import atomic_save, atomic_write_text, load_checkpoint
from smartclip.cli import parse_config, require
from smartclip.model import open_clip_config

EXPORT_CONFIG_NAME = "open_clip_config.json"
EXPORT_WEIGHTS_NAME = "open_clip_pytorch_model.bin"


def export_open_clip(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write the checkpoint's open_clip weights and config into `out_dir`; returns the weights.

    `checkpoint` holds "model" (a SmartCLIPModel state dict), "model_name" and "context_length".
    """
    ckpt = load_checkpoint(checkpoint)
    state = {k.removeprefix("clip."): v for k, v in ckpt["model"].items() if k.startswith("clip.")}
    out = Path(out_dir)
    config = open_clip_config(ckpt["model_name"], ckpt["context_length"])
    atomic_write_text(out / EXPORT_CONFIG_NAME, json.dumps({"model_cfg": config}, indent=1))
    atomic_save(state, out / EXPORT_WEIGHTS_NAME)
    return out / EXPORT_WEIGHTS_NAME


def default_out(checkpoint: str | Path) -> Path:
    """`RUN/export` for `RUN/checkpoints/latest.pt`, `RUN/export-<stem>` for any other."""
    path = Path(checkpoint)
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return run / ("export" if path.stem == "latest" else f"export-{path.stem}")


def export_model(weights: str | Path) -> str | None:
    """The registered open_clip model whose config is the one in the `open_clip_config.json`
    beside `weights` (`python -m smartclip.export` writes it; the text context, which the
    weights carry, set aside); None when there is no such file. Raises ValueError when the file
    is unreadable or no registered model has its config."""
    path = Path(weights).parent / EXPORT_CONFIG_NAME
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())["model_cfg"]
        context = config["text_cfg"]["context_length"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not an open_clip export config ({err!r})") from None
    for name in open_clip.list_models():
        candidate = json.loads(json.dumps(open_clip.get_model_config(name)))  # tuples as lists
        if "text_cfg" in candidate:
            candidate["text_cfg"]["context_length"] = context
        if candidate == config:
            return name
    raise ValueError(f"{path}: no registered open_clip model has this config; pass --model")


def export_run(weights: str | Path) -> Path | None:
    """The run folder of weights in an export folder of `python -m smartclip.export` (RUN for
    RUN/export/<file> and RUN/export-<stem>/<file>), None for a file anywhere else."""
    folder = Path(weights).absolute().parent
    exported = folder.name == "export" or folder.name.startswith("export-")
    return folder.parent if exported and folder.parent.name else None


@dataclass(frozen=True)
class ExportConfig:
    """Every field is a flag."""

    checkpoint: str | None = field(default=None, metadata={"help": "a training checkpoint (.pt)"})
    out: str | None = field(
        default=None, metadata={"help": "folder (None: RUN/export or RUN/export-<stem>)"}
    )

    def __post_init__(self) -> None:
        require(self.checkpoint is not None, "checkpoint", "required")
        require(Path(self.checkpoint).is_file(), "checkpoint", f"no such file {self.checkpoint!r}")


def main(argv: Sequence[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg = parse_config(
        ExportConfig, argv, prog="python -m smartclip.export", description=__doc__.split("\n")[0]
    )
    weights = export_open_clip(cfg.checkpoint, cfg.out or default_out(cfg.checkpoint))
    print(f"open_clip weights: {weights}")
    return weights


if __name__ == "__main__":
    main()
