"""Objectives: `objective(model, batch) -> (loss, metrics)`, one file each, and the table of pretraining ones.

An objective may declare `shown_metrics`, (metric, format) pairs that the loop's progress line shows, and
`state_dict` / `load_state_dict` for what a checkpoint must carry (baselines, samplers, alarms).

A new pretraining objective is one file here and one row in PRETRAINING: the model family it trains (a
model_type of models/hf_format.FAMILIES), the schema of its own recipe section (named as the objective;
None if it has none), how to build the model and the objective, and where the run dir keeps the trained
model ("" the run dir itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from encoderkit.objectives import mlm_sop, rtd


@dataclass(frozen=True)
class Pretraining:
    family: str
    settings: type | None
    build_model: Callable  # (model config, settings) -> nn.Module
    build_objective: Callable  # (vocab_size, settings, seed) -> objective
    model_dirs: tuple[str, ...]


PRETRAINING = {
    "mlm_sop": Pretraining("albert", None, mlm_sop.build_model, mlm_sop.build_objective, ("",)),
    "rtd": Pretraining("electra", rtd.RtdSettings, rtd.build_model, rtd.build_objective,
                       ("generator", "discriminator")),
}
