"""The one training loop, shared by every recipe: pretraining, fine-tuning, quantization-aware training.

What differs between recipes is the model, the objective (a callable returning loss and metrics)
and the batch stream; the loop handles devices and processes (accelerate), accumulation,
clipping, the schedule, non-finite losses, atomic checkpoints, exact resume, progress and
metrics.jsonl.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import load_model, save_model
from torch import nn

from encoderkit.recipes import TrainConfig
from encoderkit.train.optim import build_optimizer, decay_groups, warmup_then_decay

Objective = Callable[[nn.Module, dict], tuple[torch.Tensor, dict]]
CHECKPOINTS = "checkpoints"


class TrainingDiverged(RuntimeError):
    """Too many non-finite losses in a row; the last good checkpoint is kept."""


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
    accelerator: Accelerator | None = None,
    console: Console | None = None,
) -> TrainResult:
    """Train `model` for cfg.max_steps optimizer steps on `batches` (global micro-batches).

    Every process draws the same global micro-batch and keeps its own rows, so N processes
    see exactly the batch one process would. `batches` may offer state_dict/load_state_dict
    for exact resume. `evaluate(model, step)` runs every `eval_every` steps and at the end.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    console = console or Console(stderr=True)
    accelerator = accelerator or Accelerator(mixed_precision=cfg.mixed_precision)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    groups = param_groups if param_groups is not None else decay_groups(model, cfg.weight_decay)
    optimizer = build_optimizer(groups, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_decay(cfg))
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model)

    micro_batches = cfg.gradient_accumulation_steps
    world, rank = accelerator.num_processes, accelerator.process_index
    if (cfg.batch_size // micro_batches) % world:
        raise ValueError(
            f"train.batch_size / gradient_accumulation_steps = {cfg.batch_size // micro_batches} "
            f"is not divisible by the {world} processes"
        )

    step, nonfinite_total, nonfinite_run = 0, 0, 0
    if resume:
        state = _load_checkpoint(latest_checkpoint(run_dir), raw_model, optimizer, scheduler, batches, objective)
        step, nonfinite_total = state["step"], state["nonfinite_steps"]
        console.log(f"resumed from step {step}")

    metrics_file = run_dir / "metrics.jsonl"
    window: dict[str, list[float]] = {}
    last_metrics: dict = {}
    window_tokens, window_start = 0, time.perf_counter()
    progress = _progress(console, accelerator.is_main_process)
    task = progress.add_task("train", total=cfg.max_steps, completed=step, status="")

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
            finite = _all_processes(accelerator, losses_finite and bool(torch.isfinite(grad_norm)))
            if finite:
                optimizer.step()
                nonfinite_run = 0
            else:
                nonfinite_total += 1
                nonfinite_run += 1
                console.log(f"[yellow]step {step + 1}: non-finite loss or gradient, step skipped")
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            if nonfinite_run >= cfg.max_nonfinite_steps:
                raise TrainingDiverged(
                    f"{nonfinite_run} non-finite steps in a row at step {step}; "
                    f"last good checkpoint: {latest_checkpoint(run_dir, missing_ok=True) or 'none'}"
                )

            if step % cfg.log_every == 0 or step == cfg.max_steps:
                elapsed = time.perf_counter() - window_start
                last_metrics = {k: sum(v) / len(v) for k, v in window.items()}
                last_metrics.update(
                    step=step,
                    lr=scheduler.get_last_lr()[0],
                    tokens_per_s=window_tokens / max(elapsed, 1e-9),
                    grad_norm=float(grad_norm),
                    nonfinite_steps=nonfinite_total,
                )
                window, window_tokens, window_start = {}, 0, time.perf_counter()
                if accelerator.is_main_process:
                    _append_jsonl(metrics_file, last_metrics)
                    progress.update(task, status=_status(last_metrics))
                    if not console.is_terminal:
                        console.log(_status(last_metrics))
            if evaluate is not None and eval_every and step % eval_every == 0 and step < cfg.max_steps:
                _run_evaluation(evaluate, model, raw_model, step, metrics_file, accelerator, console)
            if step % cfg.save_every == 0 or step == cfg.max_steps:
                save_checkpoint(
                    run_dir, step, raw_model, optimizer, scheduler, batches, objective, nonfinite_total,
                    cfg.keep_last, accelerator,
                )
            progress.update(task, completed=step)

    if evaluate is not None:
        last_metrics.update(_run_evaluation(evaluate, model, raw_model, step, metrics_file, accelerator, console))
    return TrainResult(raw_model, step, nonfinite_total, last_metrics)


def _run_evaluation(evaluate, model, raw_model, step, metrics_file, accelerator, console) -> dict:
    model.eval()
    with torch.no_grad():
        results = evaluate(raw_model, step)
    model.train()
    if accelerator.is_main_process:
        _append_jsonl(metrics_file, {"step": step, **{f"eval_{k}": v for k, v in results.items()}})
        console.log(f"step {step} eval: " + ", ".join(f"{k}={v:.4f}" for k, v in results.items()))
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


# ---- progress and metrics ---------------------------------------------------------------------

_SHOWN = [
    ("loss", "loss {:.3f}"),
    ("mlm_acc", "mlm {:.3f}"),
    ("gen_acc", "gen {:.3f}"),
    ("unigram_acc", "(unigram {:.3f})"),
    ("sop_acc", "sop {:.3f}"),
    ("disc_auc", "auc {:.3f}"),
    ("disc_recall", "recall {:.3f}"),
    ("accuracy", "acc {:.3f}"),
    ("tokens_per_s", "{:,.0f} tok/s"),
]


def _status(metrics: dict) -> str:
    return "  ".join(fmt.format(metrics[k]) for k, fmt in _SHOWN if k in metrics)


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("step {task.completed}/{task.total}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        console=console,
        disable=not (enabled and console.is_terminal),
    )


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


# ---- checkpoints ------------------------------------------------------------------------------


def latest_checkpoint(run_dir: Path, missing_ok: bool = False) -> Path | None:
    found = sorted((Path(run_dir) / CHECKPOINTS).glob("step-*"))
    if not found:
        if missing_ok:
            return None
        raise FileNotFoundError(f"no checkpoint to resume from in {Path(run_dir) / CHECKPOINTS}")
    return found[-1]


def save_checkpoint(run_dir, step, model, optimizer, scheduler, batches, objective, nonfinite_steps,
                    keep_last, accelerator) -> None:
    """Write checkpoints/step-N atomically (a temp dir, then rename) and keep the last K."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        root = Path(run_dir) / CHECKPOINTS
        final = root / f"step-{step:08d}"
        tmp = root / f".tmp-step-{step:08d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_model(model, str(tmp / "model.safetensors"))
        # Optimizer state is tensors and numbers only; it is read back with weights_only=True.
        torch.save(
            {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()},
            tmp / "optimizer.pt",
        )
        state = {
            "step": step,
            "nonfinite_steps": nonfinite_steps,
            "scheduler": scheduler.state_dict(),
            "python_rng": _jsonable(random.getstate()),
            "batches": batches.state_dict() if hasattr(batches, "state_dict") else None,
            "objective": objective.state_dict() if hasattr(objective, "state_dict") else None,
        }
        (tmp / "trainer_state.json").write_text(json.dumps(state))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in sorted(root.glob("step-*"))[:-keep_last]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def _load_checkpoint(path: Path, model, optimizer, scheduler, batches, objective) -> dict:
    load_model(model, str(path / "model.safetensors"))
    saved = torch.load(path / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["torch_rng"])
    state = json.loads((path / "trainer_state.json").read_text())
    scheduler.load_state_dict(state["scheduler"])
    random.setstate(_from_jsonable(state["python_rng"]))
    if state["batches"] is not None and hasattr(batches, "load_state_dict"):
        batches.load_state_dict(state["batches"])
    if state["objective"] is not None and hasattr(objective, "load_state_dict"):
        objective.load_state_dict(state["objective"])
    return state


def _jsonable(rng_state):
    version, internal, gauss = rng_state
    return [version, list(internal), gauss]


def _from_jsonable(data):
    version, internal, gauss = data
    return (version, tuple(internal), gauss)


# ---- run record -------------------------------------------------------------------------------

RECORDED_PACKAGES = ["encoderkit", "torch", "accelerate", "datasets", "sentencepiece", "safetensors", "transformers"]


def write_run_record(run_dir: Path, recipe_yaml: str) -> None:
    """Save the resolved recipe and the package versions beside the run's checkpoints."""
    from importlib.metadata import PackageNotFoundError, version

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(recipe_yaml)
    versions = {"python": ".".join(map(str, __import__("sys").version_info[:3]))}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    (run_dir / "versions.json").write_text(json.dumps(versions, indent=2) + "\n")
