"""The training loop's settings: the `train` section of every recipe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from encoderkit.fields import value_range


@dataclass
class TrainConfig:
    # 0 trains nothing: the run dir gets the recipe's untrained model and its tokenizer (a random-init baseline).
    max_steps: int = field(default=1000, metadata=value_range(0))
    seed: int = 0
    # Examples per optimizer step, all processes and accumulation steps together.
    batch_size: int = field(default=32, metadata=value_range(1))
    gradient_accumulation_steps: int = field(default=1, metadata=value_range(1))
    optimizer: Literal["adamw", "lamb"] = "adamw"
    learning_rate: float = field(default=1e-4, metadata=value_range(0, lo_open=True))
    weight_decay: float = field(default=0.01, metadata=value_range(0))
    adam_beta1: float = field(default=0.9, metadata=value_range(0, 1, hi_open=True))
    adam_beta2: float = field(default=0.999, metadata=value_range(0, 1, hi_open=True))
    adam_epsilon: float = field(default=1e-6, metadata=value_range(0, lo_open=True))
    warmup_steps: int = field(default=0, metadata=value_range(0))
    schedule: Literal["linear", "constant"] = "linear"
    max_grad_norm: float = field(default=1.0, metadata=value_range(0, lo_open=True))
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    log_every: int = field(default=10, metadata=value_range(1))
    save_every: int = field(default=500, metadata=value_range(1))
    keep_last: int = field(default=2, metadata=value_range(1))
    # Held-out evaluation every this many steps (and at the start and the end); null: at the end only.
    eval_every: int | None = field(default=None, metadata=value_range(1))
    # A run stops after this many non-finite losses in a row (each is skipped and counted).
    max_nonfinite_steps: int = field(default=10, metadata=value_range(1))
