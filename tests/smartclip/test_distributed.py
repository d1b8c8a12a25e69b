"""Two gloo processes on one global batch give the single process's loss and gradients."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import open_clip
import pytest
import torch
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from smartclip import distributed as dist
from smartclip.data import Batch
from smartclip.model import TINY_MODEL, build_model
from smartclip.step import forward_backward, objective_from_config, text_views
from smartclip.train_config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
GLOBAL_ROWS, RANK0_ROWS = 8, 5  # uneven on purpose: rank 0 has 5 rows, rank 1 has 3
RANK_ROWS = (slice(0, RANK0_ROWS), slice(RANK0_ROWS, None))
# (objective, local loss, hard negatives, Long-CLIP's PCA scope)
VARIANTS = (
    ("smartclip", True, False, "rank"),
    ("clip", True, False, "rank"),
    ("smartclip", False, False, "rank"),
    ("clip", True, True, "rank"),
    ("smartclip", True, True, "rank"),
    ("longclip", True, False, "global"),
    ("longclip", True, False, "rank"),
    ("mulclip", True, False, "rank"),
)


def global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images, captions and one hard negative per caption (its words reversed)."""
    g = torch.Generator().manual_seed(0)
    words = ["red", "blue", "green", "circle", "square", "star", "top", "left", "small", "large"]
    captions = [
        " ".join(words[int(i)] for i in torch.randint(len(words), (3 + k,), generator=g))
        for k in range(GLOBAL_ROWS)
    ]
    negatives = [" ".join(reversed(c.split())) for c in captions]
    tokenizer = open_clip.get_tokenizer(TINY_MODEL, context_length=77)
    images = torch.randn(GLOBAL_ROWS, 3, 64, 64, generator=g)
    return images, tokenizer(captions), tokenizer(negatives)[:, None]


def loss_and_grads(
    objective: str,
    local_loss: bool,
    negatives: bool,
    pca_scope: str,
    micro_batches: list[slice],
    wrap: bool,
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """One step on the rows of `micro_batches` (accumulated), its loss terms and gradients."""
    torch.manual_seed(0)
    # one component: the PCA bites in groups of 5, 3 and 8 rows
    cfg = TrainConfig(
        objective=objective, local_loss=local_loss, pca_components=1, pca_scope=pca_scope
    )
    needs = objective_from_config(cfg).consumes
    model = build_model(
        TINY_MODEL, context_length=77, with_mask="m" in needs, with_calibration="patches" in needs
    )
    ddp = DistributedDataParallel(model) if wrap else None
    images, texts, hard = global_batch()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    views = text_views(objective_from_config(cfg))
    subs = None
    if "subs" in views:  # two sentence slots, the second empty on odd rows
        subs = torch.stack(
            [texts, texts.roll(2, 0) * (torch.arange(GLOBAL_ROWS) % 2 == 0)[:, None]], 1
        )
    batches = [
        Batch(
            images[rows],
            texts[rows],
            0,
            0,
            hard[rows] if negatives else None,
            texts.roll(1, 0)[rows] if "short" in views else None,
            None if subs is None else subs[rows],
        )
        for rows in micro_batches
    ]
    result = forward_backward(
        ddp or model, ddp, batches, objective_from_config(cfg), cfg, torch.device("cpu"), scaler,
        nullcontext,
    )  # fmt: skip
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return result.losses, grads


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
    )  # fmt: skip
    torch.set_num_threads(1)
    dist.init_distributed("cpu")
    rows = [RANK_ROWS[rank]]
    results = {variant: loss_and_grads(*variant, rows, wrap=True) for variant in VARIANTS}
    if rank == 0:
        torch.save({"-".join(map(str, v)): r for v, r in results.items()}, out)
    dist.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_equals_one_process(tmp_path: Path) -> None:
    """Every objective's DDP step equals the one-process step on the global batch; Long-CLIP's
    per-rank PCA (the release's), which depends on the split, equals the one process that
    accumulates the two ranks' rows as two micro-batches, each its own PCA group (the naive
    per-group reference is in test_losses)."""
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=2, join=True)
    ddp_results = torch.load(out, weights_only=True)
    with_negatives, without = (ddp_results[f"clip-True-{n}-rank"][0]["i2t"] for n in (True, False))
    assert with_negatives > without  # the negatives are extra image→text columns
    per_rank, global_ = (ddp_results[f"longclip-True-False-{s}"][0] for s in ("rank", "global"))
    assert abs(per_rank["coarse"] - global_["coarse"]) > 1e-4  # the split matters
    for variant in VARIANTS:
        objective = variant[0]
        groups = list(RANK_ROWS) if variant[::3] == ("longclip", "rank") else [slice(None)]
        losses, grads = loss_and_grads(*variant, groups, wrap=False)
        ddp_losses, ddp_grads = ddp_results["-".join(map(str, variant))]
        assert ddp_losses == pytest.approx(losses, rel=1e-5), objective
        assert ddp_grads.keys() == grads.keys()
        scale = max(g.abs().max().item() for g in grads.values())
        assert scale > 0
        for name, grad in grads.items():  # (a softmax's bias has gradient 0 up to rounding)
            torch.testing.assert_close(
                ddp_grads[name], grad, rtol=1e-4, atol=1e-6 * scale, msg=f"{objective}: {name}"
            )


def test_one_process_fallbacks() -> None:
    x = torch.randn(4, 3, requires_grad=True)
    gathered, offset = dist.gather_with_grad(x)
    assert gathered is x and offset == 0
    assert dist.gather_without_grad(x) == (x, 0)
    assert dist.world_size() == 1 and dist.rank() == 0 and dist.local_weight(4, 4) == 1.0
    assert torch.equal(dist.all_gather_sizes(torch.tensor([3, 1])), torch.tensor([[3, 1]]))
    env = dist.init_distributed("cpu")
    assert (env.rank, env.world_size, env.device) == (0, 1, torch.device("cpu"))


@pytest.mark.slow
def test_torchrun_two_processes_train_end_to_end(tmp_path: Path) -> None:
    from synthetic.scenes import write_dataset

    files = write_dataset(tmp_path / "scenes", 80, ("csv",))
    logs = tmp_path / "runs"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", str(free_port()), "-m", "smartclip.train", "--",  # "--": see train.py
        "--preset", "tiny-smartclip",
        "--train-data", files["train"].annotations["csv"],
        "--val-data", files["val"].annotations["csv"],
        "--batch-size", "8", "--steps", "3", "--context-length", "77", "--workers", "0",
        "--log-every-n-steps", "1", "--logs", str(logs), "--name", "ddp",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(logs / "ddp" / "train.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(float(r["samples_per_s"]) > 0 and float(r["loss"]) > 0 for r in rows)
    assert (logs / "ddp" / "export" / "open_clip_pytorch_model.bin").is_file()
    assert "t2i_r1" in (logs / "ddp" / "val.csv").read_text()
