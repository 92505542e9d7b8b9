"""The one training loop, shared by every recipe: pretraining, fine-tuning, quantization-aware training.

What differs between recipes is the model, the objective (a callable returning loss and metrics)
and the batch stream; the loop handles devices and processes (accelerate), accumulation,
clipping, the schedule, non-finite losses, atomic checkpoints, exact resume, progress,
metrics.jsonl, TensorBoard event files (RUN_DIR/tensorboard, through accelerate's trackers, so a
multi-process run logs once) and at the end a PNG of the curves (train/plot.py).
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from encoderkit.errors import UserError
from encoderkit.train.config import TrainConfig
from encoderkit.train.optim import build_optimizer, parameter_groups, warmup_then_decay
from encoderkit.train.plot import CURVES_FILE, plot_metrics
from encoderkit.train.run_dir import (
    METRICS_FILE,
    append_metrics,
    complete_checkpoint,
    drop_metrics_after,
    resume_checkpoint,
    save_checkpoint,
)

Objective = Callable[[nn.Module, dict], tuple[torch.Tensor, dict]]
TENSORBOARD_DIR = "tensorboard"  # under the run dir


class TrainingDiverged(UserError):
    """Too many non-finite steps in a row; the checkpoints on disk all predate the streak."""


def make_accelerator(mixed_precision: str = "no", run_dir: Path | None = None) -> Accelerator:
    """An Accelerator that sees every process the launcher started, or a one-line refusal; with `run_dir`, it
    logs to TensorBoard event files under RUN_DIR/tensorboard (the main process only).

    accelerate 1.x on a torch without CUDA counts one process under torchrun unless ACCELERATE_USE_CPU is set
    (the entry point sets it: runtime.use_cpu_processes); N unaware processes would train N separate runs.
    """
    trackers = {"log_with": "tensorboard", "project_dir": run_dir} if run_dir is not None else {}
    accelerator = Accelerator(mixed_precision=mixed_precision, **trackers)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise UserError(f"the launcher started {launched} processes (WORLD_SIZE) but accelerate sees "
                        f"{accelerator.num_processes}; on a machine without CUDA set ACCELERATE_USE_CPU=1, or "
                        "start encoderkit through its entry point (python -m encoderkit, torchrun -m encoderkit)")
    return accelerator


@dataclass
class TrainResult:
    model: nn.Module
    step: int
    nonfinite_steps: int
    last_metrics: dict


def train(
    model: nn.Module,
    objective: Objective,
    batches: Iterator[dict],
    cfg: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    param_groups: list[dict] | None = None,
    evaluate: Callable[[nn.Module, int], dict] | None = None,
    eval_every: int | None = None,
    evaluate_at_start: bool = False,
    accelerator: Accelerator | None = None,
    console: Console | None = None,
) -> TrainResult:
    """Train `model` for cfg.max_steps optimizer steps on `batches` (global micro-batches).

    Every process draws the same global micro-batch and keeps its own rows, so N processes
    see exactly the batch one process would. `batches` may offer state_dict/load_state_dict
    for exact resume. `evaluate(model, step)` runs every `eval_every` steps and at the end (and before
    the first step with `evaluate_at_start`, unless resuming).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    console = console or Console(stderr=True)
    accelerator = accelerator or make_accelerator(cfg.mixed_precision, run_dir)
    _start_trackers(accelerator)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    groups = param_groups if param_groups is not None else parameter_groups(model, cfg.weight_decay)
    optimizer = build_optimizer(groups, cfg)
    schedule = warmup_then_decay(cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model)

    micro_batches = cfg.gradient_accumulation_steps
    world, rank = accelerator.num_processes, accelerator.process_index
    if (cfg.batch_size // micro_batches) % world:
        raise UserError(
            f"train.batch_size: {cfg.batch_size} / gradient_accumulation_steps = {cfg.batch_size // micro_batches} "
            f"is not divisible by the {world} processes"
        )
    if world > 1:
        share = cfg.batch_size // micro_batches // world
        console.log(f"process {rank} of {world}: rows {rank * share}-{(rank + 1) * share - 1} of each micro-batch")

    metrics_file = run_dir / METRICS_FILE
    step, nonfinite_total, nonfinite_run = 0, 0, 0
    if resume:
        step, nonfinite_total = _resume(run_dir, raw_model, optimizer, scheduler, schedule, batches, objective, cfg,
                                        accelerator, console)

    shown = shown_metrics(objective)
    window: dict[str, list[float]] = {}
    last_metrics: dict = {}
    window_tokens, window_start = 0, time.perf_counter()
    progress = _progress(console, accelerator.is_main_process)
    task = progress.add_task("train", total=cfg.max_steps, completed=step, status="")
    clock = _Clock(step, cfg.max_steps)

    applied = 0  # steps applied by this call (not counting those before a resume)
    if evaluate is not None and evaluate_at_start and step == 0:
        _run_evaluation(evaluate, model, raw_model, step, metrics_file, accelerator, console)
    model.train()
    with progress:
        while step < cfg.max_steps:
            losses_finite = True
            for micro in range(micro_batches):
                batch = _local_rows(next(batches), rank, world, accelerator.device)
                window_tokens += int(batch["attention_mask"].sum()) * world
                sync = accelerator.no_sync(model) if micro < micro_batches - 1 else nullcontext()
                with sync, accelerator.autocast():
                    loss, metrics = objective(model, batch)
                    losses_finite &= bool(torch.isfinite(loss.detach()))
                    accelerator.backward(loss / micro_batches)
                for key, value in metrics.items():
                    window.setdefault(key, []).append(float(value))
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            broken = _guarded_step(model, optimizer, accelerator, losses_finite, grad_norm)
            if broken:
                nonfinite_total += 1
                nonfinite_run += 1
                console.log(f"[yellow]step {step + 1}: non-finite {broken}, step not applied")
            else:
                nonfinite_run = 0
                applied += 1
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1

            if step % cfg.log_every == 0 or step == cfg.max_steps:
                elapsed = time.perf_counter() - window_start
                last_metrics = _mean_over_processes(accelerator, {k: sum(v) / len(v) for k, v in window.items()})
                last_metrics.update(
                    step=step,
                    lr=scheduler.get_last_lr()[0],
                    tokens_per_s=window_tokens / max(elapsed, 1e-9),
                    grad_norm=float(grad_norm),
                    nonfinite_steps=nonfinite_total,
                )
                window, window_tokens, window_start = {}, 0, time.perf_counter()
                accelerator.log(_scalars(last_metrics, "train/"), step=step)
                if accelerator.is_main_process:
                    append_metrics(metrics_file, last_metrics)
                    progress.update(task, status=_status(last_metrics, shown))
                    if not console.is_terminal:
                        _print_line(console, f"step {step}/{cfg.max_steps}  {_status(last_metrics, shown)}  "
                                             f"{clock.left(step)} left")
            if nonfinite_run >= cfg.max_nonfinite_steps:
                raise TrainingDiverged(_diverged_message(nonfinite_run, step, broken, cfg, run_dir, applied, resume))
            if evaluate is not None and eval_every and step % eval_every == 0 and step < cfg.max_steps:
                _run_evaluation(evaluate, model, raw_model, step, metrics_file, accelerator, console)
            if step % cfg.save_every == 0 or step == cfg.max_steps:
                if nonfinite_run:  # a checkpoint is only ever written from a run on a finite course
                    console.log(f"[yellow]step {step}: no checkpoint while steps are non-finite")
                else:
                    accelerator.wait_for_everyone()
                    if accelerator.is_main_process:
                        save_checkpoint(run_dir, step, raw_model, optimizer, scheduler, batches, objective,
                                        nonfinite_total, cfg.keep_last, geometry=_geometry(cfg))
                    accelerator.wait_for_everyone()
            progress.update(task, completed=step)

    if evaluate is not None:
        last_metrics.update(_run_evaluation(evaluate, model, raw_model, step, metrics_file, accelerator, console))
    accelerator.end_training()
    if accelerator.is_main_process:
        plot_metrics(metrics_file, run_dir / CURVES_FILE)
    return TrainResult(raw_model, step, nonfinite_total, last_metrics)


def _start_trackers(accelerator: Accelerator) -> None:
    if accelerator.log_with and not accelerator.trackers:
        accelerator.init_trackers(TENSORBOARD_DIR)


def _scalars(metrics: dict, prefix: str) -> dict:
    """The numbers of a metrics record, named for TensorBoard (train/loss, eval/mlm_acc); the step is its axis."""
    return {prefix + k: v for k, v in metrics.items() if k != "step" and isinstance(v, int | float)}


def _geometry(cfg: TrainConfig) -> dict:
    """What a checkpoint's batch stream and step count mean; a resume must use the same."""
    return {"batch_size": cfg.batch_size, "gradient_accumulation_steps": cfg.gradient_accumulation_steps}


def _resume(run_dir, raw_model, optimizer, scheduler, schedule, batches, objective, cfg, accelerator,
            console) -> tuple[int, int]:
    """Restore the newest complete checkpoint; returns (step, non-finite steps so far).

    The learning rate is the one configured now (a resume after a divergence lowers it): the saved
    optimizer and schedule would bring back the old one. Metrics logged after the checkpoint are dropped,
    since those steps run again."""
    base_lrs = list(scheduler.base_lrs)  # as built from cfg, before loading
    main = accelerator.is_main_process
    state = resume_checkpoint(run_dir, raw_model, optimizer, scheduler, batches, objective, _geometry(cfg),
                              log=console.log if main else lambda message: None, set_aside=main)
    step = state["step"]
    scheduler.base_lrs = base_lrs
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["initial_lr"], group["lr"] = base, base * schedule(step)
    if main:
        drop_metrics_after(run_dir, step)
    accelerator.wait_for_everyone()
    console.log(f"resumed from step {step}")
    return step, state["nonfinite_steps"]


def _guarded_step(model, optimizer, accelerator: Accelerator, losses_finite: bool, grad_norm) -> str:
    """Apply the optimizer step unless the loss or gradient is non-finite, and undo it if it made a weight
    non-finite (a finite loss can still give such an update: a huge learning rate, a NaN clipping norm).
    Decided alike in every process. Returns what was non-finite, or "" when the step was applied."""
    if not _all_processes(accelerator, losses_finite):
        return "loss"
    if not _all_processes(accelerator, bool(torch.isfinite(grad_norm))):
        return "gradient"
    params = [p for p in model.parameters() if p.requires_grad]
    before = _Rollback(params, optimizer)
    optimizer.step()
    # The weights' total norm is non-finite if any weight is (or is so large, ~1e19, that squares overflow):
    # one vectorised pass, ~80x cheaper on CPU than isfinite over every element.
    if _all_processes(accelerator, bool(torch.isfinite(torch.nn.utils.get_total_norm(params)))):
        return ""
    before.restore()
    return "weights after the update"


class _Rollback:
    """Copies of the weights and the optimizer state, to put back after a step that broke them.

    The price: copying 3x the parameters (AdamW) each step and holding that much memory while it runs; for 14M
    parameters on a busy 2-core CPU, 0.6 s against 1.2 s for AdamW's own step (a forward and backward pass of
    such a model takes several times longer)."""

    def __init__(self, params: list[torch.Tensor], optimizer):
        self.optimizer = optimizer
        self.weights = [(p, p.detach().clone()) for p in params]
        self.state = {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}
                      for p, state in optimizer.state.items()}

    @torch.no_grad()
    def restore(self) -> None:
        for param, saved in self.weights:
            param.copy_(saved)
        self.optimizer.state.clear()
        self.optimizer.state.update(self.state)


def _diverged_message(streak: int, step: int, broken: str, cfg: TrainConfig, run_dir: Path, applied: int,
                      resumed: bool) -> str:
    checkpoint = complete_checkpoint(run_dir)
    what = f"training diverged: {streak} non-finite steps in a row (last: {broken}) at step {step}"
    if not math.isfinite(cfg.max_grad_norm):
        fix = f"set a finite train.max_grad_norm (now {cfg.max_grad_norm})"
    elif not math.isfinite(cfg.learning_rate):
        fix = f"set a finite train.learning_rate (now {cfg.learning_rate})"
    elif applied == 0 and resumed:  # the checkpoint itself is beyond repair by a lower rate
        return (f"{what}, none finite since the resume from {checkpoint}: its weights already give them; start "
                f"a new run (another output.dir, or --overwrite) with a lower train.learning_rate")
    elif applied == 0:
        fix = "the initial weights already give them: check the model's initialisation (model.initializer_range)"
    else:
        fix = f"lower train.learning_rate (now {cfg.learning_rate:g})"
    where = (f"resume from {checkpoint} (--resume) with the change" if checkpoint is not None
             else "no checkpoint was written; start again with the change")
    return f"{what}; {fix}; {where}"


def _run_evaluation(evaluate, model, raw_model, step, metrics_file, accelerator, console) -> dict:
    model.eval()
    with torch.no_grad():
        results = evaluate(raw_model, step)
    model.train()
    accelerator.log(_scalars(results, "eval/"), step=step)
    if accelerator.is_main_process:
        append_metrics(metrics_file, {"step": step, **{f"eval_{k}": v for k, v in results.items()}})
        _print_line(console, f"step {step} held-out: " + ", ".join(f"{k} {v:.4g}" for k, v in results.items()))
    return {f"eval_{k}": v for k, v in results.items()}


def _local_rows(batch: dict, rank: int, world: int, device) -> dict:
    """This process's contiguous share of a global batch, plus the global counts objectives
    need so that N processes average exactly like one process on the whole batch."""
    rows = batch["input_ids"].shape[0]
    share = rows // world
    local = {k: v[rank * share : (rank + 1) * share].to(device) for k, v in batch.items()}
    local["world_size"] = world
    local["row_offset"] = rank * share
    if "mlm_labels" in batch:
        local["num_masked_global"] = int((batch["mlm_labels"] != -100).sum())
    local["num_tokens_global"] = int(batch["attention_mask"].sum())
    return local


def _all_processes(accelerator: Accelerator, flag: bool) -> bool:
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([0.0 if flag else 1.0], device=accelerator.device)
    return float(accelerator.reduce(value, reduction="sum")) == 0.0


def _mean_over_processes(accelerator: Accelerator, means: dict) -> dict:
    """Each metric averaged over the processes: exact for the losses (objectives scale each process's share
    to sum to the global batch's), an equal-weight mean of per-process ratios for accuracies."""
    if accelerator.num_processes == 1 or not means:
        return means
    keys = sorted(means)
    values = torch.tensor([means[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    return dict(zip(keys, accelerator.reduce(values, reduction="mean").tolist()))


# ---- progress and metrics ---------------------------------------------------------------------

def shown_metrics(objective) -> list[tuple[str, str]]:
    """(metric, format) pairs the progress line shows: the loss, what the objective declares
    (its `shown_metrics`), the throughput."""
    return [("loss", "loss {:.3f}"), *getattr(objective, "shown_metrics", ()), ("tokens_per_s", "{:,.0f} tok/s")]


def _status(metrics: dict, shown: list[tuple[str, str]]) -> str:
    return "  ".join(fmt.format(metrics[k]) for k, fmt in shown if k in metrics)


def _print_line(console: Console, line: str) -> None:
    """One line, never wrapped or marked up (a log file or CI reads it as it is)."""
    console.print(line, soft_wrap=True, markup=False, highlight=False)


class _Clock:
    """Time left, from the pace of the steps this process has run so far."""

    def __init__(self, first_step: int, total: int):
        self.first_step, self.total, self.start = first_step, total, time.perf_counter()

    def left(self, step: int) -> str:
        done = step - self.first_step
        seconds = (time.perf_counter() - self.start) / done * (self.total - step) if done else 0.0
        minutes, seconds = divmod(round(seconds), 60)
        return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("step {task.completed}/{task.total}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        console=console,
        disable=not (enabled and console.is_terminal),
    )
