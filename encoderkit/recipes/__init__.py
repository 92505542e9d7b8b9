"""Recipes: YAML files validated into typed config objects, with dotted key=value overrides.

Every error is a `RecipeError` whose message names the offending key, so the CLI can print
one line and exit 2.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from encoderkit import fields
from encoderkit.errors import UserError
from encoderkit.fields import value_range
from encoderkit.train.config import TrainConfig

# The bundled *.yaml, package data beside this module, read through importlib.resources so that an install
# from a wheel or a zip finds them too: a Traversable (a Path, or a zipfile.Path), not always a Path.
RECIPES_DIR = importlib.resources.files("encoderkit.recipes")


class RecipeError(UserError):
    """A recipe that cannot be used; the message names the key and says how to fix it."""


@dataclass
class DataConfig:
    # "default" (the embedded corpus), a hub dataset name, or local txt/jsonl/parquet files and globs.
    source: str | list[str] = "default"
    max_seq_length: int = field(default=128, metadata=value_range(8))
    short_seq_prob: float = field(default=0.1, metadata=value_range(0, 1))
    masked_lm_prob: float = field(default=0.15, metadata=value_range(0, 1, lo_open=True))
    max_ngram: int = field(default=3, metadata=value_range(1, 10))
    # ngram: ALBERT's whole-word n-gram spans; electra: single tokens, masked per batch.
    masking: Literal["ngram", "electra"] = "ngram"
    # Of the tokens chosen for prediction: this share becomes [MASK], this share a random token, the rest stay.
    mask_token_prob: float = field(default=0.8, metadata=value_range(0, 1))
    random_token_prob: float = field(default=0.1, metadata=value_range(0, 1))
    # Swap the two segments half the time for sentence-order prediction (ALBERT); ELECTRA keeps order.
    sentence_order: bool = True
    # Held-out text, evaluated every train.eval_every steps and at the end: a fraction of data.source's documents
    # (chosen by a hash of their text seeded with validation_seed, never trained on), or a source of its own
    # (files, or a hub dataset name whose validation_split is read). null: no held-out evaluation.
    validation: float | str | list[str] | None = None
    validation_split: str = "validation"
    validation_seed: int = 0
    # At most this many batches (of train.batch_size rows) of held-out text, masked once, the same at every evaluation.
    validation_batches: int = field(default=20, metadata=value_range(1))
    # Length warmup, for small models from scratch: the first length_warmup_steps steps train on rows cut into
    # pieces of length_warmup_first tokens, then twice that, ... below max_seq_length, an equal share of those steps
    # each (data/stream.py says why). 0: off. Sentence-order prediction rests meanwhile (pieces have no order).
    length_warmup_steps: int = field(default=0, metadata=value_range(0))
    length_warmup_first: int = field(default=4, metadata=value_range(2))


@dataclass
class TokenizerConfig:
    # An existing spiece.model (or a directory holding one); empty: train one before pretraining.
    path: str | None = None
    vocab_size: int = field(default=8000, metadata=value_range(16))
    # SentencePiece's unigram or bpe (ALBERT's special tokens), or RoBERTa's byte-level BPE (vocab.json + merges.txt)
    model_type: Literal["unigram", "bpe", "byte_bpe"] = "unigram"
    sample_documents: int = field(default=20000, metadata=value_range(10))


@dataclass
class OutputConfig:
    dir: str = "runs/run"


@dataclass
class ModelRecipe:
    family: str  # a model_type of models/hf_format.FAMILIES; the objective says which
    # The family's own config (field names as in transformers), validated by its dataclass.
    config: Any
    # model.vocab_size as the recipe file states it (a recorded recipe does), else None: the run sets the
    # config's from the tokenizer and refuses a file that states another.
    stated_vocab_size: int | None = None
    # Continued pretraining: a model dir (a run dir of the objective) whose weights, config.json and tokenizer the
    # run starts from; the recipe's model fields must then agree with its config.json.
    init_from: str | None = None


@dataclass
class PretrainRecipe:
    name: str
    objective: str  # a key of objectives.PRETRAINING
    model: ModelRecipe
    data: DataConfig
    tokenizer: TokenizerConfig
    train: TrainConfig
    output: OutputConfig
    # The objective's own section (the recipe key is the objective's name, e.g. `rtd:`), or None.
    settings: Any = None


# Keys of a pretraining recipe that the run computes; an override of one is refused.
COMPUTED_MODEL_KEYS = {"model.vocab_size": "it follows the tokenizer; set tokenizer.vocab_size (or tokenizer.path)"}


# ---- reading, overriding, validating ---------------------------------------------------------


def resolve_path(name_or_path: str) -> Path | importlib.resources.abc.Traversable:
    """A recipe file path, or the name of a bundled recipe (`albert-tiny`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = RECIPES_DIR.joinpath(f"{name_or_path}.yaml")
    if bundled.is_file():
        return bundled
    raise RecipeError(
        f"recipe '{name_or_path}' not found: give a YAML file or one of {', '.join(bundled_names(None))}"
    )


def bundled_names(kind: str | None = "pretrain") -> list[str]:
    """Bundled recipes of one kind (pretrain or finetune), or of every kind with kind=None."""
    paths = sorted((p for p in RECIPES_DIR.iterdir() if p.name.endswith(".yaml") and p.is_file()),
                   key=lambda p: p.name)
    return [p.name.removesuffix(".yaml") for p in paths if kind is None or recipe_kind(read_yaml(p)) == kind]


def copy_bundled(name: str, dest: str | Path) -> Path:
    """Copy bundled recipe `name` to `dest` (a file, or a directory: dest/NAME.yaml) byte for byte, to start
    one's own recipe from it; an existing file is never overwritten. Returns the file written."""
    names = bundled_names(None)
    if name not in names:
        raise RecipeError(f"recipe '{name}' is not a bundled recipe; the bundled ones are: {', '.join(names)}")
    target = Path(dest)
    if target.is_dir():
        target = target / f"{name}.yaml"
    elif str(dest).endswith("/"):
        raise RecipeError(f"{dest}: no such directory")
    if not target.parent.is_dir():
        raise RecipeError(f"{target.parent}: no such directory; create it first")
    source = RECIPES_DIR.joinpath(f"{name}.yaml")
    try:
        with open(target, "xb") as out:  # "x": fails if the file exists, even if it appeared a moment ago
            out.write(source.read_bytes())
    except FileExistsError:
        raise RecipeError(f"{target} already exists; choose another name or remove it first") from None
    return target


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, except that a key written twice in one mapping is an error at its line (plain
    YAML keeps the last one, so an edit above a forgotten duplicate would silently do nothing)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the base class refuses it, with its own message
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}; write each key once",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> dict:
    try:
        raw = yaml.load(path.read_bytes().decode("utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as err:
        raise RecipeError(f"{path}: not UTF-8 text (byte {err.start}); save the recipe as UTF-8") from None
    except OSError as err:
        raise RecipeError(f"{path}: cannot be read ({err.strerror})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping of sections (model, data, train, ...)")
    return raw


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides; the value is parsed as YAML (numbers, lists, null), booleans only as
    true/false."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"override '{item}' is not key=value (for example train.max_steps=100)")
        node = raw
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                if child is not None or depth == 0:
                    raise RecipeError(f"override '{key}': '{'.'.join(parts[: depth + 1])}' is not a section")
                child = node[part] = {}
            node = child
        try:
            value = yaml.load(text, Loader=_UniqueKeyLoader) if text != "" else None
        except yaml.YAMLError:
            value = text
        # YAML 1.1 reads yes/no/on/off as booleans: train.mixed_precision=no means the string "no"
        node[parts[-1]] = text if isinstance(value, bool) and text.lower() not in ("true", "false") else value
    return raw


def read_recipe(name_or_path: str, overrides: list[str] = ()) -> dict:
    """The recipe file's mapping with the command line's dotted overrides applied, not yet validated."""
    return apply_overrides(read_yaml(resolve_path(name_or_path)), list(overrides))


def load_recipe(name_or_path: str, overrides: list[str] = ()) -> PretrainRecipe:
    _refuse_computed_model_keys(overrides)
    return validate(read_recipe(name_or_path, overrides))


def _refuse_computed_model_keys(overrides: list[str]) -> None:
    for item in overrides:
        key = item.partition("=")[0]
        if key in COMPUTED_MODEL_KEYS:
            raise RecipeError(f"{key}: not a setting: {COMPUTED_MODEL_KEYS[key]}")


def validate(raw: dict) -> PretrainRecipe:
    from encoderkit.models.hf_format import FAMILIES
    from encoderkit.objectives import PRETRAINING

    objective = raw.get("objective")
    if objective not in PRETRAINING:
        raise RecipeError(f"objective: {objective!r} is not one of: {', '.join(PRETRAINING)}")
    spec = PRETRAINING[objective]
    model_raw = raw.get("model")
    if not isinstance(model_raw, dict):
        raise RecipeError(f"model: missing section (it needs at least 'family', e.g. family: {spec.family})")
    model_raw = dict(model_raw)
    family = model_raw.pop("family", None)
    if family not in FAMILIES:
        raise RecipeError(f"model.family: {family!r} is not one of: {', '.join(FAMILIES)}")
    if family not in spec.families:
        raise RecipeError(f"objective: '{objective}' trains the {' or '.join(spec.families)} family, but "
                          f"model.family is '{family}'")
    init_from = model_raw.pop("init_from", None)
    recipe_raw = dict(raw)
    if "settings" in recipe_raw:
        raise RecipeError("settings: unknown key; an objective's settings go under its name (e.g. rtd:)")
    settings_raw = recipe_raw.pop(objective, None) if spec.settings else None
    recipe_raw["model"] = {"family": family, "config": model_raw}
    recipe = _build(PretrainRecipe, recipe_raw, "")
    recipe.model.config = _build(FAMILIES[family][0], model_raw, "model.")
    recipe.model.stated_vocab_size = model_raw.get("vocab_size")
    if init_from is not None:
        _start_from_checkpoint(recipe, init_from, model_raw, spec.init_config_dir)
    if spec.settings:
        recipe.settings = _build(spec.settings, settings_raw, f"{objective}.")
    _check_consistency(recipe)
    return recipe


def _start_from_checkpoint(recipe: PretrainRecipe, init_from: Any, stated: dict, config_dir: str) -> None:
    """model.init_from: the checkpoint's config.json becomes the model config; every model field the recipe states
    must agree with it, and its family must be the recipe's."""
    from encoderkit.models.hf_format import FAMILIES
    from encoderkit.models.load import ModelDirError, read_model_config

    if not isinstance(init_from, str):
        raise RecipeError(f"model.init_from: expected a model directory, got {init_from!r}")
    where = Path(init_from) / config_dir
    try:
        hf_config = read_model_config(where)
    except ModelDirError as err:
        raise RecipeError(f"model.init_from: {err}") from None
    family = recipe.model.family
    if hf_config["model_type"] != family:
        raise RecipeError(f"model.init_from: '{where}' holds a {hf_config['model_type']} model, but model.family is "
                          f"'{family}' (objective {recipe.objective}); give a {family} model dir")
    checkpoint = FAMILIES[family][0].from_hf_dict(hf_config)
    for key in stated:
        ours, theirs = getattr(recipe.model.config, key), getattr(checkpoint, key)
        if ours != theirs:
            raise RecipeError(f"model.{key}: the recipe says {ours!r}, but {where / 'config.json'} says {theirs!r}; "
                              "remove it from the recipe's model section or make them agree")
    if recipe.tokenizer.path:
        raise RecipeError("tokenizer.path: a run with model.init_from uses the checkpoint's own tokenizer; remove "
                          "tokenizer.path")
    recipe.model.config = checkpoint
    recipe.model.stated_vocab_size = checkpoint.vocab_size
    recipe.model.init_from = init_from


def _check_consistency(recipe: PretrainRecipe) -> None:
    cfg, train = recipe.model.config, recipe.train  # the model config's own rules ran as it was built
    if recipe.data.max_seq_length > cfg.max_position_embeddings:
        raise RecipeError(
            f"data.max_seq_length: {recipe.data.max_seq_length} exceeds "
            f"model.max_position_embeddings={cfg.max_position_embeddings}"
        )
    if recipe.data.mask_token_prob + recipe.data.random_token_prob > 1:
        raise RecipeError(
            f"data.random_token_prob: {recipe.data.random_token_prob} + data.mask_token_prob "
            f"{recipe.data.mask_token_prob} exceed 1"
        )
    if train.batch_size % train.gradient_accumulation_steps:
        raise RecipeError(
            f"train.batch_size: {train.batch_size} is not divisible by "
            f"train.gradient_accumulation_steps={train.gradient_accumulation_steps}"
        )
    if recipe.tokenizer.path and not Path(recipe.tokenizer.path).exists():
        raise RecipeError(f"tokenizer.path: '{recipe.tokenizer.path}' does not exist")
    if recipe.data.source != "default":  # local files must exist now, not when the stream reaches them
        from encoderkit.data.corpus import CorpusError, local_files

        try:
            local_files(recipe.data.source)
        except CorpusError as err:
            raise RecipeError(f"data.source: {err}") from None
    _check_validation(recipe)
    _check_length_warmup(recipe)


def _check_length_warmup(recipe: PretrainRecipe) -> None:
    data, max_steps = recipe.data, recipe.train.max_steps
    if not data.length_warmup_steps:
        return
    if data.length_warmup_steps > max_steps:
        raise RecipeError(f"data.length_warmup_steps: {data.length_warmup_steps} is longer than the run "
                          f"(train.max_steps={max_steps}); choose a smaller value (0 turns the warmup off)")
    if data.length_warmup_first >= data.max_seq_length:
        raise RecipeError(f"data.length_warmup_first: {data.length_warmup_first} is not shorter than "
                          f"data.max_seq_length={data.max_seq_length}; choose a smaller first length")


def _check_validation(recipe: PretrainRecipe) -> None:
    validation, eval_every, max_steps = recipe.data.validation, recipe.train.eval_every, recipe.train.max_steps
    if isinstance(validation, float) and not 0 < validation < 1:
        raise RecipeError(f"data.validation: {validation} is not a fraction of the documents between 0 and 1 "
                          "(or give files or a hub dataset)")
    if eval_every is not None and validation is None:
        raise RecipeError("train.eval_every: there is no held-out text to evaluate; set data.validation (e.g. 0.05 "
                          "holds out 5% of the documents) or remove train.eval_every")
    if eval_every is not None and eval_every > max_steps:
        raise RecipeError(f"train.eval_every: {eval_every} is larger than the run (train.max_steps={max_steps}); "
                          "the run evaluates at its end anyway: choose a smaller value or remove it")


def _build(cls, raw: Any, prefix: str):
    """Build dataclass `cls` from a mapping, checking keys, types and ranges (encoderkit.fields' rules)."""
    try:
        return fields.build(cls, raw, prefix)
    except fields.FieldError as err:
        raise RecipeError(str(err)) from None


def to_dict(recipe) -> dict:
    """The resolved recipe as plain data (what `recipes show` prints and a run dir records)."""
    if getattr(recipe, "kind", "pretrain") != "pretrain":  # fine-tuning, quantization, qa, choice
        return finetune_to_dict(recipe)
    out = dataclasses.asdict(recipe)
    model, settings = out.pop("model"), out.pop("settings")
    out["model"] = {"family": model["family"], **model["config"]}
    if model["init_from"] is not None:
        out["model"]["init_from"] = model["init_from"]
    if model["stated_vocab_size"] is None:  # not known before the tokenizer is: see commands/pretrain.py
        del out["model"]["vocab_size"]
    if settings is not None:
        out[recipe.objective] = settings
    order = ["name", "objective", recipe.objective, "model", "data", "tokenizer", "train", "output"]
    return {k: out[k] for k in order if k in out}


def dump_yaml(recipe) -> str:
    return yaml.safe_dump(to_dict(recipe), sort_keys=False)


# ---- fine-tuning recipes (`encoderkit finetune glue`) -------------------------------------------

RECIPE_KINDS = ("pretrain", "finetune", "quantize", "qa", "choice")


def recipe_kind(raw: dict) -> str:
    """What a recipe is for: fine-tuning and quantization recipes say `kind: finetune` / `kind: quantize`;
    pretraining recipes have no `kind`."""
    kind = raw.get("kind", "pretrain")
    if kind not in RECIPE_KINDS:
        raise RecipeError(f"kind: {kind!r} is not one of: {', '.join(RECIPE_KINDS)}")
    return kind


@dataclass
class FinetuneConfig:
    """GLUE fine-tuning. The bundled recipes set ELECTRA's protocol (Clark et al. 2020, Appendix, Table 7)."""

    max_seq_length: int = field(default=128, metadata=value_range(3))
    # Passes over the training set, unless task_epochs names the task (e.g. {rte: 10, stsb: 10}).
    epochs: int = field(default=3, metadata=value_range(1))
    task_epochs: dict[str, int] = field(default_factory=dict)
    # A layer's learning rate is train.learning_rate * decay^depth, depth counted down from the task head
    # (depth 0); 1.0 turns the decay off.
    layerwise_lr_decay: float = field(default=1.0, metadata=value_range(0, 1, lo_open=True))
    warmup_fraction: float = field(default=0.1, metadata=value_range(0, 1))
    # Tasks whose training pairs are also used with the two texts swapped (only tasks where order does not matter).
    swap_pairs: list[str] = field(default_factory=list)
    # Dropout before the classifier; null keeps the checkpoint's config.
    classifier_dropout: float | None = field(default=None, metadata=value_range(0, 1, hi_open=True))
    eval_batch_size: int = field(default=128, metadata=value_range(1))
    # The model of encoderkit.data.glue.PUBLISHED_DEV_SCORES that the final table compares with.
    published: str | None = None


# train.* keys computed per task, so a fine-tuning recipe may not set them:
#   steps per epoch = floor(training examples / train.batch_size)  (each epoch is reshuffled; the few
#                     examples left over after the last full batch differ from epoch to epoch)
#   max_steps       = epochs * steps per epoch
#   warmup_steps    = round(warmup_fraction * max_steps)
#   save_every      = steps per epoch  (a resumable checkpoint at the end of every epoch)
COMPUTED_TRAIN_KEYS = ("max_steps", "warmup_steps", "save_every")


@dataclass
class FinetuneRecipe:
    kind: Literal["finetune"]
    name: str
    finetune: FinetuneConfig
    train: TrainConfig  # the loop's config; COMPUTED_TRAIN_KEYS are filled in per task
    output: OutputConfig


def load_finetune_recipe(name_or_path: str, overrides: list[str] = ()) -> FinetuneRecipe:
    return validate_finetune(read_recipe(name_or_path, overrides))


def validate_finetune(raw: dict) -> FinetuneRecipe:
    from encoderkit.data.glue import PUBLISHED_DEV_SCORES, TASKS

    if recipe_kind(raw) != "finetune":
        raise RecipeError("kind: missing; a fine-tuning recipe says `kind: finetune` (this looks like a pretraining "
                          "recipe: run it with `encoderkit pretrain`)")
    _refuse_computed_train_keys(raw, "finetune")
    recipe = _build(FinetuneRecipe, raw, "")
    finetune = recipe.finetune
    _check_task_table("finetune.task_epochs", finetune.task_epochs)
    symmetric = [name for name, task in TASKS.items() if task.symmetric_pairs]
    for i, task in enumerate(finetune.swap_pairs):
        if task not in symmetric:
            raise RecipeError(f"finetune.swap_pairs[{i}]: {task!r} is not a task whose label ignores the order "
                              f"of its two texts ({', '.join(symmetric)})")
    published = list(dict.fromkeys(score.model for score in PUBLISHED_DEV_SCORES))
    if finetune.published is not None and finetune.published not in published:
        raise RecipeError(f"finetune.published: {finetune.published!r} is not one of: {', '.join(published)}")
    if recipe.train.batch_size % recipe.train.gradient_accumulation_steps:
        raise RecipeError(
            f"train.batch_size: {recipe.train.batch_size} is not divisible by "
            f"train.gradient_accumulation_steps={recipe.train.gradient_accumulation_steps}"
        )
    return recipe


def _refuse_computed_train_keys(raw: dict, section: str) -> None:
    train_raw = raw.get("train")
    computed = [key for key in COMPUTED_TRAIN_KEYS if isinstance(train_raw, dict) and key in train_raw]
    if computed:
        raise RecipeError(f"train.{computed[0]}: computed per task from {section}.epochs and the training set size; "
                          f"set {section}.epochs or {section}.task_epochs instead")


def _check_task_table(key: str, table: dict[str, int]) -> None:
    """A {GLUE task: positive count} table such as task_epochs."""
    from encoderkit.data.glue import TASKS

    for task, value in table.items():
        if task not in TASKS:
            raise RecipeError(f"{key}.{task}: unknown GLUE task; valid tasks: {', '.join(TASKS)}")
        if value < 1:
            raise RecipeError(f"{key}.{task}: {value} is out of range (must be >= 1)")


def finetune_to_dict(recipe: FinetuneRecipe | QuantizeRecipe) -> dict:
    out = dataclasses.asdict(recipe)
    for key in COMPUTED_TRAIN_KEYS:
        del out["train"][key]
    return out


def load_any_recipe(name_or_path: str, overrides: list[str] = ()) -> PretrainRecipe | FinetuneRecipe | QuantizeRecipe:
    """A pretraining, fine-tuning or quantization recipe, as its `kind` says (for `recipes show` and `validate`)."""
    from encoderkit.recipes.qa_choice import validate_choice, validate_qa

    raw = read_yaml(resolve_path(name_or_path))  # read once; the kind is the file's, before any override
    validator = {"finetune": validate_finetune, "quantize": validate_quantize, "qa": validate_qa,
                 "choice": validate_choice}.get(recipe_kind(raw), validate)
    if validator is validate:  # `recipes validate` refuses what `pretrain` refuses
        _refuse_computed_model_keys(overrides)
    return validator(apply_overrides(raw, list(overrides)))


# ---- quantization recipes (`encoderkit quantize`) ------------------------------------------------


@dataclass
class QuantizeConfig:
    """I-BERT quantization-aware fine-tuning (Kim et al. 2021) of a fine-tuned GLUE classifier. The bundled
    recipe sets the authors' settings (github.com/kssteven418/I-BERT, branch ibert: README and run.py)."""

    max_seq_length: int = field(default=128, metadata=value_range(3))
    # Passes over the training set, unless task_epochs names the task.
    epochs: int = field(default=12, metadata=value_range(1))
    task_epochs: dict[str, int] = field(default_factory=dict)
    # Examples per optimizer step for the tasks named here; the others use train.batch_size.
    task_batch_size: dict[str, int] = field(default_factory=dict)
    warmup_fraction: float = field(default=0.0, metadata=value_range(0, 1))
    # Training batches run through the model (no gradients, no dropout) to set every activation range
    # before quantization-aware training starts.
    calibration_batches: int = field(default=20, metadata=value_range(1))
    # Momentum of the moving average that tracks each activation's range while the model trains.
    act_range_momentum: float = field(default=0.95, metadata=value_range(0, 1))
    # Learning rate of the tensors the float checkpoint lacks: ELECTRA's classifier (gelu) does not map onto
    # I-BERT's (tanh), so that head starts fresh and needs a fine-tuning rate, not the QAT rate.
    new_head_learning_rate: float = field(default=1e-4, metadata=value_range(0, lo_open=True))
    eval_batch_size: int = field(default=128, metadata=value_range(1))
    # I-BERT's force_dequant (transformers' IBertConfig): the non-linear operations named here run in float during
    # QAT (nonlinear: GELU, softmax and LayerNorm). Anything but none leaves no integer-only model to export.
    force_dequant: Literal["none", "gelu", "softmax", "layernorm", "nonlinear"] = "none"


@dataclass
class QuantizeRecipe:
    kind: Literal["quantize"]
    name: str
    quantize: QuantizeConfig
    train: TrainConfig  # the loop's config; COMPUTED_TRAIN_KEYS are filled in from the task
    output: OutputConfig


def load_quantize_recipe(name_or_path: str, overrides: list[str] = ()) -> QuantizeRecipe:
    return validate_quantize(read_recipe(name_or_path, overrides))


def validate_quantize(raw: dict) -> QuantizeRecipe:
    kind = recipe_kind(raw)
    if kind != "quantize":
        raise RecipeError(f"kind: {kind!r}; a quantization recipe says `kind: quantize` (see "
                          "`encoderkit recipes show quantize-glue`)")
    _refuse_computed_train_keys(raw, "quantize")
    recipe = _build(QuantizeRecipe, raw, "")
    settings, accumulation = recipe.quantize, recipe.train.gradient_accumulation_steps
    _check_task_table("quantize.task_epochs", settings.task_epochs)
    _check_task_table("quantize.task_batch_size", settings.task_batch_size)
    sizes = {"train.batch_size": recipe.train.batch_size,
             **{f"quantize.task_batch_size.{task}": size for task, size in settings.task_batch_size.items()}}
    for key, size in sizes.items():
        if size % accumulation:
            raise RecipeError(f"{key}: {size} is not divisible by train.gradient_accumulation_steps={accumulation}")
    return recipe
