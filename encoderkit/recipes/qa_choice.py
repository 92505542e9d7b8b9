"""Recipes of `encoderkit finetune qa` (kind: qa) and `encoderkit finetune choice` (kind: choice).

The bundled ones set ELECTRA's fine-tuning protocol (Clark et al. 2020, Appendix, Table 7; the ELECTRA code's
configure_finetuning.py for what the paper leaves out) where it states one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from encoderkit.fields import value_range
from encoderkit.recipes import (
    OutputConfig,
    RecipeError,
    _build,
    _refuse_computed_train_keys,
    read_recipe,
    recipe_kind,
)
from encoderkit.train.config import TrainConfig


@dataclass
class QAConfig:
    """Extractive question answering (SQuAD v1.1 / v2.0)."""

    # Tokens per feature: [CLS] question [SEP] context window [SEP].
    max_seq_length: int = field(default=384, metadata=value_range(8))
    # Tokens that consecutive windows of a long context share (transformers' run_qa `doc_stride`).
    doc_stride: int = field(default=128, metadata=value_range(0))
    max_query_length: int = field(default=64, metadata=value_range(1))  # a longer question is cut
    max_answer_length: int = field(default=30, metadata=value_range(1))  # tokens; longer answers are not predicted
    n_best_size: int = field(default=20, metadata=value_range(1))  # start and end candidates per window
    epochs: int = field(default=2, metadata=value_range(1))
    # A layer's learning rate is train.learning_rate * decay^depth, depth counted down from the head; 1.0: off.
    layerwise_lr_decay: float = field(default=1.0, metadata=value_range(0, 1, lo_open=True))
    warmup_fraction: float = field(default=0.1, metadata=value_range(0, 1))
    eval_batch_size: int = field(default=64, metadata=value_range(1))


@dataclass
class QARecipe:
    kind: Literal["qa"]
    name: str
    qa: QAConfig
    train: TrainConfig  # the loop's config; max_steps, warmup_steps, save_every are computed from qa.epochs
    output: OutputConfig


@dataclass
class ChoiceConfig:
    """Multiple choice (SWAG, RACE, JSON Lines)."""

    max_seq_length: int = field(default=128, metadata=value_range(3))  # per (context, choice) pair
    epochs: int = field(default=3, metadata=value_range(1))
    layerwise_lr_decay: float = field(default=1.0, metadata=value_range(0, 1, lo_open=True))
    warmup_fraction: float = field(default=0.1, metadata=value_range(0, 1))
    # Dropout before the scoring layer (ELECTRA's summary_last_dropout); null keeps the checkpoint's config.
    classifier_dropout: float | None = field(default=None, metadata=value_range(0, 1))
    eval_batch_size: int = field(default=32, metadata=value_range(1))


@dataclass
class ChoiceRecipe:
    kind: Literal["choice"]
    name: str
    choice: ChoiceConfig
    train: TrainConfig
    output: OutputConfig


def load_qa_recipe(name_or_path: str, overrides: list[str] = ()) -> QARecipe:
    return validate_qa(read_recipe(name_or_path, overrides))


def load_choice_recipe(name_or_path: str, overrides: list[str] = ()) -> ChoiceRecipe:
    return validate_choice(read_recipe(name_or_path, overrides))


def validate_qa(raw: dict) -> QARecipe:
    recipe = _validate(raw, "qa", QARecipe)
    qa = recipe.qa
    room = qa.max_seq_length - qa.max_query_length - 3
    if qa.doc_stride >= room:
        raise RecipeError(f"qa.doc_stride: {qa.doc_stride} leaves windows no new tokens; it must be less than "
                          f"qa.max_seq_length - qa.max_query_length - 3 = {room}")
    return recipe


def validate_choice(raw: dict) -> ChoiceRecipe:
    return _validate(raw, "choice", ChoiceRecipe)


def _validate(raw: dict, kind: str, recipe_class):
    if recipe_kind(raw) != kind:
        raise RecipeError(f"kind: {raw.get('kind', 'pretrain')!r}; this command's recipes say `kind: {kind}` "
                          f"(see `encoderkit recipes ls`)")
    _refuse_computed_train_keys(raw, kind)
    recipe = _build(recipe_class, raw, "")
    if recipe.train.batch_size % recipe.train.gradient_accumulation_steps:
        raise RecipeError(f"train.batch_size: {recipe.train.batch_size} is not divisible by "
                          f"train.gradient_accumulation_steps={recipe.train.gradient_accumulation_steps}")
    return recipe
