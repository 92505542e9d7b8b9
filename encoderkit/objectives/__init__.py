"""Objectives: `objective(model, batch) -> (loss, metrics)`, one file each, and the table of pretraining ones.

An objective may declare `shown_metrics`, (metric, format) pairs that the loop's progress line shows,
`state_dict` / `load_state_dict` for what a checkpoint must carry (baselines, samplers, alarms), and (the
pretraining ones) `evaluate(model, batches, step) -> metrics` for held-out text.

A new pretraining objective is one file here and one row in PRETRAINING: the model families it trains
(model_types of models/hf_format.FAMILIES, the first one the default), the schema of its own recipe section
(named as the objective; None if it has none), how to build the model and the objective, where the run dir
keeps the trained model ("" the run dir itself), the head `load_model` builds for `model.init_from` and the
dir under init_from that holds the config and tokenizer, and whether its examples are segment pairs or
packed full-length sequences.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from encoderkit.objectives import mlm, mlm_sop, rtd


@dataclass(frozen=True)
class Pretraining:
    families: tuple[str, ...]
    settings: type | None
    build_model: Callable  # (model config, settings) -> nn.Module
    build_objective: Callable  # (vocab_size, settings, seed) -> objective
    model_dirs: tuple[str, ...]
    init_head: str  # encoderkit.models.load.load_model's head for model.init_from
    init_config_dir: str = ""  # where under model.init_from config.json and the tokenizer are
    packed: bool = False  # examples: packed full-length sequences (True) or segment pairs (False)

    @property
    def family(self) -> str:
        return self.families[0]


PRETRAINING = {
    "mlm_sop": Pretraining(("albert",), None, mlm_sop.build_model, mlm_sop.build_objective, ("",), "pretraining"),
    "rtd": Pretraining(("electra",), rtd.RtdSettings, rtd.build_model, rtd.build_objective,
                       ("generator", "discriminator"), "generator_discriminator", "discriminator"),
    "mlm": Pretraining(("bert", "albert", "electra"), None, mlm.build_model, mlm.build_objective, ("",),
                       "masked_lm", packed=True),
}
