"""The fine-tuning seed loop, generic over the task: per seed a fresh head on the pretrained encoder, layer-wise
learning rates, reshuffled epochs, the one training loop with the best dev checkpoint kept, and result.json.

A command describes its task as a `FinetuneTask` (how to build the model, the objective, the encoded training
set and how to batch it, how to score a model on the dev splits, the metric that picks the best checkpoint);
`finetune_seeds` runs it `seeds` times. Used by `finetune glue`, `finetune classify`, `finetune tokens`, ...

The task dir:
  best/          the best dev checkpoint over all epochs and seeds (Hugging Face format, the tokenizer, eval.json)
  seed-<n>/      the loop's run dir of one seed: metrics.jsonl, result.json once finished, checkpoints/ while it
                 trains (removed when the seed is done)
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from encoderkit.data.classification import EpochBatches, iter_batches
from encoderkit.errors import UserError
from encoderkit.files import write_json
from encoderkit.train.config import TrainConfig
from encoderkit.train.evaluate import BestCheckpoint, best_evaluation
from encoderkit.train.optim import layerwise_learning_rate, parameter_groups
from encoderkit.train.run_dir import CHECKPOINTS, latest_checkpoint

Scores = dict[str, dict[str, float]]  # {dev split: {metric: value}}


class TrainingSetTooSmall(UserError):
    """Fewer training examples than one batch."""


class OutputDirInUse(UserError):
    """output.dir is a file, or holds another run and --resume was not given."""


def check_output_dir(out: Path, resume: bool) -> None:
    """A new run needs an empty (or no) output.dir; --resume continues the run in it."""
    if out.exists() and not out.is_dir():
        raise OutputDirInUse(f"output.dir: '{out}' is a file; choose a directory")
    if not resume and out.is_dir() and any(out.iterdir()):
        raise OutputDirInUse(f"output.dir: '{out}' is not empty; pass --resume to continue the run in it "
                             "or choose another output.dir")


@dataclass
class FinetuneTask:
    """What the seed loop needs from one task."""

    name: str
    new_model: Callable[[], nn.Module]  # the pretrained encoder under a fresh head (called after seeding)
    objective: Callable  # objective(model, batch) -> (loss, metrics), as the loop takes it
    train_set: Sized  # the encoded training examples, batched by `batcher`
    dev_splits: Sequence[str]
    evaluate: Callable[[nn.Module], Scores]  # the model's scores on each dev split
    primary: tuple[str, str]  # (split, metric): higher is better; picks the best checkpoint
    batcher: Callable = iter_batches  # (train_set, batch_size, shuffle, seed) -> batches, as iter_batches


@dataclass
class EpochPlan:
    """How long and how: the recipe's `finetune` settings the seed loop reads."""

    epochs: int
    layerwise_lr_decay: float = 1.0
    warmup_fraction: float = 0.1


def steps_per_epoch(task: FinetuneTask, batch_size: int) -> int:
    """Full batches per pass over the training set; refuses a batch larger than the training set."""
    steps = len(task.train_set) // batch_size
    if steps == 0:
        raise TrainingSetTooSmall(f"train.batch_size: {batch_size} is more than the {len(task.train_set)} "
                                  f"training examples of {task.name}")
    return steps


def finetune_seeds(task: FinetuneTask, plan: EpochPlan, train_cfg: TrainConfig, seeds: int, task_dir: Path,
                   tokenizer, console: Console, is_main: bool) -> dict:
    """Fine-tune seeds train_cfg.seed, ..., + seeds - 1; returns the training set's size, the epochs, the steps
    per epoch and each seed's result (its best epoch's dev scores). A seed with a result.json is not run again.
    """
    from encoderkit.train.loop import train

    epoch_steps = steps_per_epoch(task, train_cfg.batch_size)
    max_steps = plan.epochs * epoch_steps
    accumulation = train_cfg.gradient_accumulation_steps
    seed_results = []
    for seed in range(train_cfg.seed, train_cfg.seed + seeds):
        seed_dir = task_dir / f"seed-{seed}"
        if (seed_dir / "result.json").is_file():  # finished before this run was resumed
            seed_results.append(json.loads((seed_dir / "result.json").read_text()))
            continue
        if is_main:
            console.log(f"{task.name}, seed {seed}: {len(task.train_set)} training examples, "
                        f"{plan.epochs} epochs of {epoch_steps} steps")
        torch.manual_seed(seed)  # the new head's initialisation differs per seed
        model = task.new_model()
        cfg = dataclasses.replace(train_cfg, seed=seed, max_steps=max_steps, save_every=epoch_steps,
                                  warmup_steps=round(plan.warmup_fraction * max_steps))
        groups = parameter_groups(model, cfg.weight_decay,
                                  layerwise_learning_rate(model, cfg.learning_rate, plan.layerwise_lr_decay))
        batches = EpochBatches(task.train_set, cfg.batch_size // accumulation, epoch_steps * accumulation, seed,
                               batcher=task.batcher)
        keep_best = BestCheckpoint(task.evaluate, task.primary, task_dir / "best", tokenizer, seed, epoch_steps,
                                   writes=is_main)
        resume = latest_checkpoint(seed_dir, missing_ok=True) is not None
        train(model, task.objective, batches, cfg, seed_dir, resume=resume, param_groups=groups,
              evaluate=keep_best, eval_every=epoch_steps, console=console)
        if is_main:
            result = {"seed": seed, **best_evaluation(seed_dir, task.dev_splits, task.primary, epoch_steps)}
            write_json(seed_dir / "result.json", result)
            # A finished seed resumes from result.json; its checkpoints hold the optimizer state (3x the model).
            shutil.rmtree(seed_dir / CHECKPOINTS, ignore_errors=True)
            seed_results.append(result)
    return {"train_examples": len(task.train_set), "epochs": plan.epochs, "steps_per_epoch": epoch_steps,
            "seeds": seed_results}
