"""Train SmartCLIP (or CLIP) on open_clip towers: `python -m smartclip.train [--flag value ...]`.

    min_θ  10·(L_sidm + L_dism) + 2·mean|m|    (`losses.SmartCLIPLoss`; --objective clip: InfoNCE)

The defaults are the released recipe (`smartclip.train_config`; add --pretrained ViT-B-16.pt and
--train-data). Evaluation (image↔text recall@k) uses unmasked embeddings.

With no arguments it renders the built-in scenes (`smartclip.builtin`, cached under
--scenes-dir) and runs CPU presets on them: `tiny-clip` pre-trains "smartclip-tiny" with
CLIP's loss, then `tiny-smartclip` fine-tunes that export with SmartCLIP's recipe (stretched
context, frozen kept positions, separate rates and schedules), as SmartCLIP fine-tunes a
pre-trained CLIP, and `tiny-clip-ft` / `tiny-negclip` fine-tune it with CLIP's loss on the same
budget, without and with the scenes' mined hard negatives; it prints where logs, checkpoints and
the exports went.

Distributed: `torchrun --nproc_per_node N -m smartclip.train -- --flag value ...` (the `--` stops
torchrun reading --logs as its own --logs-specs); see `smartclip.step` for how ranks and
accumulated micro-batches make up the global batch.

Checkpoints (`<logs>/<name>/checkpoints/`, `latest.pt` and `epoch_<n>.pt`) are written atomically,
only when the weights and the embeddings they give are finite, and hold everything an exact
resume needs; `--resume latest --name NAME` continues a run bitwise on the CPU, and refuses any
changed setting that changes what is computed (the schedule's length included). Ctrl-C stops
with status 130 and prints the exact resume command. Training reads images through the model's
deterministic evaluation preprocessing, so the data is a function of (seed, epoch, index) alone.
A run that cannot produce a real result (unreadable data, an empty evaluation set, non-finite
losses that persist, diverged weights) stops with status 1 and one line naming the cause, and
leaves no export; a run stopped before its first checkpoint leaves no run folder. Warnings go to
the terminal and to the run's `run.log`.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import open_clip
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from smartclip import distributed as dist
from smartclip.checkpoint import load_checkpoint, set_rng_state
from smartclip.cli import config_to_argv, parse_config
from smartclip.data import Batch, EvalSet, TrainData
from smartclip.export import EXPORT_WEIGHTS_NAME, export_open_clip
from smartclip.masknet import CollapseWatch
from smartclip.model import autocast_context, preprocess, text_positional_embedding
from smartclip.optim import pin_rows
from smartclip.retrieval import NonFiniteFeatures, evaluate_retrieval
from smartclip.run_folder import (
    RUN_LOG,
    Interrupted,
    RunError,
    captured_warnings,
    discarded_on_error,
    report,
    run_directory,
)
from smartclip.run_setup import Plan, build_data, load_model, plan_steps, seed_everything, wrap
from smartclip.run_state import (
    RunState,
    finite_model,
    last_good,
    new_state,
    restore,
    save_checkpoint,
)
from smartclip.runlog import RunLog
from smartclip.step import (
    Objective,
    StepResult,
    forward_backward,
    objective_from_config,
    optimizer_step,
)
from smartclip.stream import BatchStream
from smartclip.train_config import DEMO_STAGES, PRESETS, TrainConfig

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- checkpoints and validation


def validate(
    state: RunState, eval_set: EvalSet, tokenizer, device: torch.device, autocast, log: RunLog
) -> dict[str, float]:
    """Retrieval recall@k on the evaluation set, logged at the current step; non-finite
    embeddings stop the run."""
    step = state.progress["step"]
    transform = preprocess(state.model.clip)
    try:
        metrics = evaluate_retrieval(state.model, eval_set, tokenizer, transform, device, autocast)
    except NonFiniteFeatures as err:
        raise RunError(f"validation at step {step}: {err}") from None
    log.write("val", step, metrics)
    state.progress["validated_step"] = step
    tqdm.write(f"step {step}: " + ", ".join(f"{k} {v:.1f}" for k, v in metrics.items()))
    return metrics


# ------------------------------------------------------------------------------------ the loop


@dataclass
class Run:
    """Everything `set_up` builds for the loop: the configuration, the process's place, the
    objective, tokenizer, data, plan, state and the callables that run a step."""

    cfg: TrainConfig
    run_dir: Path
    env: dist.DistEnv
    objective: Objective
    tokenizer: object
    data: TrainData
    eval_set: EvalSet | None
    plan: Plan
    state: RunState
    stream: BatchStream
    forward: object
    ddp: DistributedDataParallel | None
    autocast: object
    log: RunLog
    metrics: dict[str, float] = field(default_factory=dict)
    watch: CollapseWatch = field(default_factory=CollapseWatch)
    tick: float = field(default_factory=time.perf_counter)
    rows: int = 0  # training rows since the last logged step


def set_up(cfg: TrainConfig, run_dir: Path, resume: Path | None) -> Run:
    """Process group, seeds, model, data, plan, optimizer (restored from `resume`), DDP, the
    batch stream at the resumed position; then the run folder, its config and its log."""
    env = dist.init_distributed(cfg.device)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    objective = objective_from_config(cfg)
    model = load_model(cfg, objective, env)
    tokenizer = open_clip.get_tokenizer(cfg.model, context_length=cfg.context_length)
    source, data, eval_set = build_data(cfg, env, model, tokenizer, objective)
    plan = plan_steps(cfg, data, source, env.world_size)
    state = new_state(model, cfg, plan.total_steps)
    ckpt = restore(state, resume, cfg) if resume is not None else None
    if cfg.freeze_kept_positions:
        pin_rows(state.optimizer, text_positional_embedding(model.clip), cfg.keep_positions)
    forward, ddp = wrap(model, cfg, env)
    p = state.progress
    stream = BatchStream(data, plan.batches_per_epoch, p["epoch"], p["position"])
    if ckpt is not None:
        set_rng_state(ckpt["rng"])  # after everything that draws random numbers at set-up
    if env.is_main:  # the run folder exists only once everything above has worked
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")
        print(
            f"training {cfg.model} ({cfg.objective}) for {plan.total_steps} steps "
            f"({plan.steps_per_epoch}/epoch) on {env.world_size} × {env.device}, batch "
            f"{cfg.batch_size} × {plan.accum} accumulated × {env.world_size} = "
            f"{cfg.batch_size * plan.accum * env.world_size}; logs in {run_dir}"
        )
    autocast = autocast_context(cfg.precision, env.device)
    log = RunLog(run_dir, env.is_main, p["step"])
    return Run(
        cfg, run_dir, env, objective, tokenizer, data, eval_set, plan, state, stream, forward,
        ddp, autocast, log,
    )  # fmt: skip


def train_step(run: Run) -> tuple[StepResult, dict[str, float], list[Batch]]:
    """One optimizer step over `plan.accum` micro-batches: (its result, the learning rates it
    used per group, its micro-batches); counts images, skips and non-finite steps in the
    progress and stops a run whose images or steps keep failing."""
    state, cfg = run.state, run.cfg
    batches = [next(run.stream) for _ in range(run.plan.accum)]
    state.optimizer.zero_grad(set_to_none=True)
    result = forward_backward(
        run.forward, run.ddp, batches, run.objective, cfg, run.env.device, state.scaler,
        run.autocast,
    )  # fmt: skip
    stepped = optimizer_step(state.optimizer, state.scaler, result.losses, cfg.grad_clip_norm)
    lrs = {g["name"]: g["lr"] for g in state.optimizer.param_groups}  # this step's rates
    with warnings.catch_warnings():  # the schedule follows the step count, skipped steps too
        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
        state.scheduler.step()
    p = state.progress
    p["step"] += 1
    p["seen_images"] += result.rows + result.dropped
    p["skipped_images"] += result.dropped
    p["truncated_captions"] += sum(b.n_truncated for b in batches)
    if result.losses is None:
        p["skipped_steps"] += 1
    elif not stepped:
        p["nonfinite_steps"] += 1
        logger.warning("step %d: non-finite loss or gradient, update not applied", p["step"])
    state.bad_in_a_row = 0 if stepped or result.losses is None else state.bad_in_a_row + 1
    seen, skipped = p["seen_images"], p["skipped_images"]
    if seen >= min(1000, run.plan.epoch_samples) and skipped > cfg.max_skipped_share * seen:
        raise RunError(
            f"{skipped} of the {seen} training images read so far were unreadable, more "
            f"than --max-skipped-share {cfg.max_skipped_share:g} (see {RUN_LOG})"
        )
    if state.bad_in_a_row >= cfg.max_nonfinite_steps:
        raise RunError(
            f"{state.bad_in_a_row} consecutive steps up to step {p['step']} had a non-finite "
            f"loss or gradient (--max-nonfinite-steps); {last_good(state)}"
        )
    return result, lrs, batches


def log_step(run: Run, result: StepResult, lrs: dict[str, float]) -> dict[str, float] | None:
    """Every --log-every-n-steps steps and at the last: the train.csv row (epoch, rates, loss
    terms, throughput, counters) and the mask's collapse watch; None on other steps."""
    p, plan = run.state.progress, run.plan
    run.rows += result.rows
    due = p["step"] % run.cfg.log_every_n_steps == 0 or p["step"] == plan.total_steps
    if result.losses is None or not due:  # a skipped step shows in the next row
        return None
    seconds, run.tick = time.perf_counter() - run.tick, time.perf_counter()
    row = {
        "epoch": p["step"] / plan.steps_per_epoch,
        "lr": lrs.get("backbone", next(iter(lrs.values()))),
        **({"mask_lr": lrs["mask"]} if "mask" in lrs else {}),
        **result.losses,
        "samples_per_s": run.rows / seconds,
        "skipped_images": p["skipped_images"] + run.data.n_malformed,
        "skipped_steps": p["skipped_steps"],
        "nonfinite_steps": p["nonfinite_steps"],
        "truncated_captions": p["truncated_captions"],
    }
    run.rows = 0
    run.log.write("train", p["step"], row)
    if run.env.is_main:
        run.watch.update(p["step"], result.losses)  # logs a warning when the mask collapses
    return row


def end_of_step(run: Run, batches: list[Batch], finished_epoch: int | None) -> None:
    """Validation (every --val-frequency epochs and at the last step) and checkpoints
    (epoch_<n>.pt every --save-frequency epochs, latest.pt every --save-every-steps steps and at
    the last), each only for weights whose embeddings are finite."""
    cfg, state, step = run.cfg, run.state, run.state.progress["step"]
    last = step == run.plan.total_steps
    every = lambda n: finished_epoch is not None and n and finished_epoch % n == 0  # noqa: E731
    if run.eval_set is not None and (every(cfg.val_frequency) or last):
        run.metrics = validate(
            state, run.eval_set, run.tokenizer, run.env.device, run.autocast, run.log
        )
    ckpt_dir = run.run_dir / "checkpoints"
    paths = [ckpt_dir / f"epoch_{finished_epoch}.pt"] if every(cfg.save_frequency) else []
    if last or (cfg.save_every_steps and step % cfg.save_every_steps == 0):
        paths.append(ckpt_dir / "latest.pt")
    if paths:
        healthy = finite_model(state.model, batches[0], run.env.device, run.autocast)
        for path in paths:
            save_checkpoint(state, run.stream, cfg, path, healthy)


def finish(run: Run) -> None:
    """Export the final checkpoint's open_clip weights and say where everything is."""
    if run.env.is_main:
        export_open_clip(run.run_dir / "checkpoints" / "latest.pt", run.run_dir / "export")
        report(run.run_dir, run.metrics)
    run.log.close()
    dist.barrier()
    dist.cleanup()


def train(cfg: TrainConfig, run_dir: Path, resume: Path | None) -> Path:
    """Run training as configured into `run_dir` (resuming from `resume`); returns `run_dir`."""
    with captured_warnings() as warning_log:
        run = set_up(cfg, run_dir, resume)
        if run.env.is_main:
            warning_log.open(run_dir / RUN_LOG)
        step = run.state.progress["step"]
        pbar = tqdm(total=run.plan.total_steps, initial=step, disable=not run.env.is_main)
        with pbar, logging_redirect_tqdm():
            try:
                while run.state.progress["step"] < run.plan.total_steps:
                    epoch_before = run.stream.epoch
                    result, lrs, batches = train_step(run)
                    pbar.update(1)
                    row = log_step(run, result, lrs)
                    if row is not None:
                        pbar.set_postfix(loss=f"{row['loss']:.3f}")
                    finished = run.stream.epoch if run.stream.epoch > epoch_before else None
                    end_of_step(run, batches, finished)
            except KeyboardInterrupt:
                raise Interrupted(run.state.progress["step"], run.state.last_good) from None
        finish(run)
    return run_dir


# ----------------------------------------------------------------------------- command line


def resume_command(cfg: TrainConfig, run_dir: Path) -> str:
    """The command line that resumes this run from its latest checkpoint."""
    argv = config_to_argv(replace(cfg, name=run_dir.name, resume="latest"))
    launcher = "python -m smartclip.train"
    if dist.world_size() > 1:
        launcher = f"torchrun --nproc_per_node {dist.world_size()} -m smartclip.train --"
    return f"{launcher} {shlex.join(argv)}"


def run(cfg: TrainConfig) -> Path:
    """`train` in its run folder, turning a `RunError` into one line on stderr and exit status
    1, and Ctrl-C into the step reached, the resume command and status 130; a run that stops
    before its first checkpoint leaves no folder."""
    run_dir = None
    try:
        run_dir, resume = run_directory(cfg)
        with discarded_on_error(run_dir):
            return train(cfg, run_dir, resume)
    except RunError as err:
        dist.cleanup()
        print(f"smartclip.train: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except Interrupted as stop:
        dist.cleanup()
        if stop.checkpoint is None or not stop.checkpoint.is_file():
            where = "no checkpoint had been written, so nothing is kept"
        else:
            step = load_checkpoint(stop.checkpoint)["progress"]["step"]
            where = f"resume from step {step}: {resume_command(cfg, run_dir)}"
        print(f"smartclip.train: {stop} of {cfg.name or run_dir.name}; {where}", file=sys.stderr)
        raise SystemExit(130) from None


def demo() -> Path:
    """The no-argument run: preset tiny-clip, then from its open_clip export each stage of
    DEMO_STAGES (SmartCLIP, CLIP, CLIP with mined hard negatives: the same budget); returns
    the SmartCLIP run."""
    stamp = time.strftime("%Y_%m_%d-%H_%M_%S")
    stage1 = run(TrainConfig(**PRESETS["tiny-clip"], name=f"{stamp}-tiny-clip"))
    pretrained = str(stage1 / "export" / EXPORT_WEIGHTS_NAME)
    runs = [
        run(TrainConfig(**PRESETS[stage], pretrained=pretrained, name=f"{stamp}-{stage}"))
        for stage in DEMO_STAGES
    ]
    return runs[0]


def main(argv: Sequence[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if not argv:
        return demo()
    cfg = parse_config(
        TrainConfig,
        argv,
        presets=PRESETS,
        prog="python -m smartclip.train",
        description=__doc__.split("\n\n")[0],
    )
    return run(cfg)


if __name__ == "__main__":
    main()
