"""`encoderkit quantize`: I-BERT quantization-aware fine-tuning (QAT) of a fine-tuned classifier through the one
training loop, its export to integer-only inference, and FP32 / QAT / integer-only scores in one table: a sequence
classifier on its GLUE task (dev scores), or a token classifier (`finetune tokens`) on its tagged files (token
accuracy, and entity precision / recall / F1 for BIO / BIOES tags, on the validation file).

Steps: score the float classifier; build the I-BERT QAT model from it (BERT/ELECTRA/RoBERTa/ALBERT weights map onto
I-BERT's, with ELECTRA-Small's and ALBERT's embedding projection and ALBERT's shared layers; an I-BERT checkpoint
loads as it is); set its activation ranges on training batches; QAT fine-tune with the task's objective, keeping
the best epoch; export that epoch to the integer-only model and score it too.

The run dir (output.dir):
  recipe.yaml, versions.json   the run record
  results.json                 the scores of every model, their differences from FP32 in points
  qat/                         the best QAT epoch: I-BERT in Hugging Face format (quant_mode true; transformers'
                               IBertFor{Sequence,Token}Classification loads it unless it has an embedding projection
                               or shared layers, which are ours), the tokenizer, eval.json
  integer/                     the integer-only model (model.safetensors: integer tensors, the class names in its
                               description) and the tokenizer; `encoderkit predict --model <run dir>/integer` runs it
                               without any float model
  train/                       the loop's run dir: metrics.jsonl (checkpoints/ is removed once QAT is done)

Timing the run's models (FP32, integer-only, transformers' I-BERT) is a benchmark, run from a source checkout:
`python -m benchmarks.bench_quantize_run <run dir>`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from encoderkit.commands.report import scores_table
from encoderkit.data.classification import EncodedExamples, EpochBatches, encode_examples, iter_batches
from encoderkit.data.glue import get_task, load_task
from encoderkit.data.tokenizer import Tokenizer
from encoderkit.data.tokens import TaggedSentence, check_tags, encode_tagged, read_tagged_splits
from encoderkit.errors import UserError
from encoderkit.files import write_json
from encoderkit.objectives.classification import ClassificationObjective
from encoderkit.objectives.token_classification import TokenClassificationObjective
from encoderkit.recipes import QuantizeRecipe, RecipeError, dump_yaml
from encoderkit.train.evaluate import BestCheckpoint, glue_primary, primary_score, score_dev_splits, score_tagging
from encoderkit.train.optim import parameter_groups

RESULTS_FILE = "results.json"
QAT_DIR, INTEGER_DIR, TRAIN_DIR = "qat", "integer", "train"
INTEGER_FILE = "model.safetensors"
CLASSIFIER, TAGGER = "sequence_classification", "token_classification"
# The heads quantize takes: the architecture suffix config.json names, what the head is, the data it needs.
HEADS = {CLASSIFIER: ("ForSequenceClassification", "a sequence classifier", "give its GLUE task with --task"),
         TAGGER: ("ForTokenClassification", "a token classifier", "give its tagged files with --train and "
                  "--validation")}
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class QuantizeError(UserError):
    """A model or run directory that `encoderkit quantize` cannot use."""


# ---- the models: float classifier, QAT model, integer-only model --------------------------------


def classifier_dir(model_dir: Path) -> Path:
    """The classifier's dir: `model_dir` itself, or the best/ checkpoint of a fine-tuning run dir."""
    if not (model_dir / "config.json").is_file() and (model_dir / "best" / "config.json").is_file():
        return model_dir / "best"
    return model_dir


def read_classifier_config(model_dir: Path, head: str) -> tuple[dict, str]:
    """config.json of a fine-tuned `head` classifier whose family I-BERT can quantize, and its architecture."""
    from encoderkit.models.hf_format import read_config
    from encoderkit.models.ibert.convert import FLOAT_FAMILIES

    try:
        config = read_config(model_dir)
    except ValueError as err:
        raise QuantizeError(f"--model: {err}") from None
    model_type = config.get("model_type")
    if model_type not in (*FLOAT_FAMILIES, "ibert"):
        raise QuantizeError(f"--model: model_type {model_type!r} cannot be quantized: I-BERT's integer-only encoder "
                            f"takes BERT's post-LN layers ({', '.join(FLOAT_FAMILIES)}, ibert)")
    architectures = config.get("architectures") if isinstance(config.get("architectures"), list) else []
    held = {name: str(a) for name, (suffix, *_) in HEADS.items() for a in architectures if str(a).endswith(suffix)}
    if head in held:
        return config, held[head]
    if held:
        other = next(iter(held))
        raise QuantizeError(f"--model: {model_dir} holds {HEADS[other][1]} ({held[other]}): {HEADS[other][2]}")
    raise QuantizeError(f"--model: {model_dir} holds no fine-tuned classifier (architectures: "
                        f"{config.get('architectures')}); fine-tune it first with `encoderkit finetune glue` "
                        "or `encoderkit finetune tokens`")


def load_float_classifier(model_dir: Path, model_type: str, head: str = CLASSIFIER):
    """The fine-tuned classifier in float through the one loader, which checks the dir (config.json, the weights'
    names, shapes and values, the classifier head) before anything else runs; I-BERT with quant_mode off."""
    from encoderkit.models.load import load_model

    overrides = {"quant_mode": False} if model_type == "ibert" else {}
    return load_model(model_dir, head, require_head=True, **overrides)


def build_qat_model(model_dir: Path, model_type: str, head: str, force_dequant: str = "none"):
    """The I-BERT QAT model (quant_mode on, every operation integer except those `force_dequant` names) with the
    checkpoint's weights, and the names of the tensors the checkpoint has no counterpart for (ELECTRA's classifier:
    gelu where I-BERT's is tanh)."""
    from encoderkit.models import hf_format
    from encoderkit.models.ibert import convert

    try:
        if model_type == "ibert":
            return hf_format.load_pretrained(model_dir, head, quant_mode=True, force_dequant=force_dequant), []
        return convert.from_float(model_dir, head, force_dequant=force_dequant)
    except ValueError as err:  # e.g. a hidden_act other than gelu, or tensors that do not match config.json
        raise QuantizeError(f"--model: cannot be quantized: {err}") from None


def set_range_momentum(model: torch.nn.Module, momentum: float) -> None:
    from encoderkit.models.ibert.quant import QuantAct

    for module in model.modules():
        if isinstance(module, QuantAct):
            module.act_range_momentum = momentum


def no_integer_export(force_dequant: str) -> str:
    """Why a QAT model with `force_dequant` set has no integer-only export."""
    return (f"no integer-only export: quantize.force_dequant={force_dequant} keeps {force_dequant} in float, and the "
            "integer-only model computes every operation in integers (set quantize.force_dequant=none for it)")


def export_integer(qat_dir: Path, head: str, out_dir: Path, tokenizer, console: Console):
    """The integer-only model of the QAT checkpoint, written to out_dir with the tokenizer; None if it does not
    export (the QAT model stays usable), with the reason on the console."""
    from encoderkit.models import hf_format
    from encoderkit.models.ibert.export import export_integer_model

    try:
        integer = export_integer_model(hf_format.load_pretrained(qat_dir, head))
    except ValueError as err:  # a rescale factor that fits no fixed-point multiplier, for instance
        console.log(f"[yellow]integer-only export failed: {err}")
        return None, str(err)
    out_dir.mkdir(parents=True, exist_ok=True)
    integer.save(out_dir / INTEGER_FILE)
    tokenizer.save(out_dir)
    return integer, None


# ---- the tasks: what the classifier was fine-tuned on ---------------------------------------------


@dataclass
class Classifier:
    """The fine-tuned float classifier to quantize, checked and loaded."""

    directory: Path
    config: dict  # its config.json
    architecture: str
    model: torch.nn.Module  # float, eval mode
    tokenizer: Tokenizer


@dataclass
class QuantizeTask:
    """What QAT needs from the task the classifier was fine-tuned on."""

    name: str  # results.json's task
    title: str  # the table's
    head: str
    train_set: EncodedExamples
    dev_size: int  # examples (sentences) scored
    evaluate: Callable[[torch.nn.Module], dict[str, dict]]  # the model's {split: {metric: value}}
    primary: tuple[str, str]  # the (split, metric) that picks the best QAT epoch
    objective: Callable
    batch_size: int
    epochs: int


def open_classifier(recipe: QuantizeRecipe, model_dir: Path, head: str) -> Classifier:
    """The classifier of `model_dir` (or of a fine-tuning run dir's best/), refused in one line if it cannot be
    quantized for `head` or output.dir is in use."""
    from accelerate import PartialState

    from encoderkit.models.load import max_tokens

    model_dir = classifier_dir(model_dir)
    config, architecture = read_classifier_config(model_dir, head)
    out = Path(recipe.output.dir)
    if out.is_dir() and any(out.iterdir()):
        raise QuantizeError(f"output.dir: '{out}' is not empty; choose another output.dir")
    model = load_float_classifier(model_dir, config["model_type"], head).to(PartialState().device).eval()
    tokenizer = Tokenizer.load(model_dir, config.get("vocab_size"))  # a damaged dir is named before recipe limits
    if recipe.quantize.max_seq_length > max_tokens(model):
        raise RecipeError(f"quantize.max_seq_length: {recipe.quantize.max_seq_length} exceeds the model's "
                          f"{max_tokens(model)} positions")
    return Classifier(model_dir, config, architecture, model, tokenizer)


def quantize(recipe: QuantizeRecipe, model_dir: Path, task: str | None = None, data_dir: Path | None = None,
             train: Path | None = None, validation: Path | None = None, tag_column: int = -1,
             console: Console | None = None) -> dict:
    """A sequence classifier with its GLUE `task`, or a token classifier with its tagged `train` and `validation`
    files (CoNLL or JSON Lines, as `finetune tokens` reads them); returns what results.json holds."""
    if train is None and validation is None:
        if task is None:
            raise QuantizeError("--task: give the GLUE task of a sequence classifier, or --train and --validation "
                                "with the tagged files of a token classifier")
        return quantize_glue(recipe, task, model_dir, data_dir, console)
    if task is not None or data_dir is not None:
        raise QuantizeError("--task/--data-dir: a token classifier is quantized on --train and --validation "
                            "alone; leave out --task and --data-dir")
    return quantize_tokens(recipe, model_dir, read_tagged_splits(train, validation, tag_column=tag_column), console)


def quantize_glue(recipe: QuantizeRecipe, task_name: str, model_dir: Path, data_dir: Path | None = None,
                  console: Console | None = None) -> dict:
    """QAT-fine-tune and export the sequence classifier of `model_dir` (fine-tuned on GLUE's `task_name`)."""
    settings = recipe.quantize
    task = get_task(task_name)
    classifier = open_classifier(recipe, model_dir, CLASSIFIER)
    outputs = classifier.model.config.num_labels
    if outputs != task.num_labels:
        raise QuantizeError(f"--model: the classifier has {outputs} outputs, task {task.name} needs "
                            f"{task.num_labels}; was it fine-tuned on another task?")
    data = load_task(task.name, data_dir, splits=["train", *task.dev_splits])
    train_set = encode_examples(data["train"], classifier.tokenizer, settings.max_seq_length)
    dev = {split: encode_examples(data[split], classifier.tokenizer, settings.max_seq_length)
           for split in task.dev_splits}
    return run_qat(recipe, classifier, QuantizeTask(
        name=task.name, title=f"{task.name} dev", head=CLASSIFIER, train_set=train_set,
        dev_size=sum(len(examples) for examples in dev.values()),
        evaluate=lambda model: score_dev_splits(model, task, dev, settings.eval_batch_size),
        primary=glue_primary(task), objective=ClassificationObjective(task.num_labels),
        batch_size=settings.task_batch_size.get(task.name, recipe.train.batch_size),
        epochs=settings.task_epochs.get(task.name, settings.epochs)), console)


def quantize_tokens(recipe: QuantizeRecipe, model_dir: Path, data: dict[str, list[TaggedSentence]],
                    console: Console | None = None) -> dict:
    """QAT-fine-tune and export the token classifier of `model_dir` on its tagged {train, validation} sentences."""
    from encoderkit.data.entities import is_entity_tagging

    settings = recipe.quantize
    classifier = open_classifier(recipe, model_dir, TAGGER)
    tags = classifier.model.config.label_names()
    for split in ("train", "validation"):
        unlabelled = next((sentence.where for sentence in data[split] if sentence.tags is None), None)
        if unlabelled:
            raise QuantizeError(f"{unlabelled}: a sentence without tags; QAT trains and scores on tagged sentences")
        check_tags(data[split], tags, "the classifier's id2label")
    encoded = {split: encode_tagged(data[split], classifier.tokenizer, settings.max_seq_length, tags)
               for split in ("train", "validation")}
    true = [sentence.tags for sentence in data["validation"]]
    return run_qat(recipe, classifier, QuantizeTask(
        name="tokens", title="token classification, validation", head=TAGGER, train_set=encoded["train"],
        dev_size=len(true),
        evaluate=lambda model: {"validation": score_tagging(model, encoded["validation"], true, tags,
                                                            settings.eval_batch_size)},
        primary=("validation", "f1" if is_entity_tagging(tags) else "accuracy"),
        objective=TokenClassificationObjective(), batch_size=recipe.train.batch_size, epochs=settings.epochs),
        console)


# ---- the flow ------------------------------------------------------------------------------------


def run_qat(recipe: QuantizeRecipe, classifier: Classifier, task: QuantizeTask, console: Console | None) -> dict:
    """Score FP32, build and calibrate the QAT model, QAT-fine-tune it through the loop keeping the best epoch,
    export it and score the integer-only model; writes results.json and prints the table."""
    from encoderkit.models import hf_format
    from encoderkit.models.ibert import calibrate
    from encoderkit.train.loop import train
    from encoderkit.train.run_dir import CHECKPOINTS, write_run_record

    console = console or Console(stderr=True)
    settings = recipe.quantize
    out = Path(recipe.output.dir)
    # Everything that can fail on input fails here, before anything is written or trained.
    qat_model, fresh = build_qat_model(classifier.directory, classifier.config["model_type"], task.head,
                                       settings.force_dequant)
    steps_per_epoch = len(task.train_set) // task.batch_size
    if steps_per_epoch == 0:
        raise RecipeError(f"train.batch_size: {task.batch_size} is more than the {len(task.train_set)} training "
                          f"examples of {task.name}")

    write_run_record(out, dump_yaml(recipe))
    with _stage(console, f"scoring the FP32 model on {task.dev_size} examples"):
        scores = {"fp32": task.evaluate(classifier.model)}
    classifier.model = None  # the float model's memory, before QAT's

    set_range_momentum(qat_model, settings.act_range_momentum)
    calibration = iter_batches(task.train_set, task.batch_size, shuffle=True, seed=recipe.train.seed)
    with _stage(console, f"calibrating activation ranges on {settings.calibration_batches} batches"):
        calibrate(qat_model, ({key: batch[key] for key in MODEL_INPUTS}
                              for batch in itertools.islice(calibration, settings.calibration_batches)))
    with _stage(console, f"scoring the calibrated I-BERT on {task.dev_size} examples"):
        scores["calibrated"] = task.evaluate(qat_model)

    console.log(f"{task.name}: QAT of {len(task.train_set)} training examples, {task.epochs} epochs of "
                f"{steps_per_epoch} steps")
    max_steps = task.epochs * steps_per_epoch
    cfg = dataclasses.replace(recipe.train, batch_size=task.batch_size, max_steps=max_steps,
                              save_every=steps_per_epoch, warmup_steps=round(settings.warmup_fraction * max_steps))
    accumulation = cfg.gradient_accumulation_steps
    batches = EpochBatches(task.train_set, task.batch_size // accumulation, steps_per_epoch * accumulation, cfg.seed)
    keep_best = BestCheckpoint(task.evaluate, task.primary, out / QAT_DIR, classifier.tokenizer, cfg.seed,
                               steps_per_epoch, writes=True, save_model=hf_format.save_pretrained)
    # the tensors the float checkpoint lacks (ELECTRA's classifier) train at a fine-tuning rate, the rest at QAT's
    groups = parameter_groups(qat_model, cfg.weight_decay, lambda name: settings.new_head_learning_rate
                              if name in fresh else cfg.learning_rate)
    train(qat_model, task.objective, batches, cfg, out / TRAIN_DIR, param_groups=groups, evaluate=keep_best,
          eval_every=steps_per_epoch, console=console)
    shutil.rmtree(out / TRAIN_DIR / CHECKPOINTS, ignore_errors=True)  # the best epoch is in qat/
    del qat_model

    best = json.loads((out / QAT_DIR / "eval.json").read_text())
    scores["qat"] = best["scores"]
    if settings.force_dequant == "none":
        with _stage(console, "exporting the best epoch to the integer-only model"):
            integer, export_error = export_integer(out / QAT_DIR, task.head, out / INTEGER_DIR, classifier.tokenizer,
                                                   console)
    else:
        integer, export_error = None, no_integer_export(settings.force_dequant)
        console.log(f"[yellow]{export_error}")
    if integer is not None:
        # The first batches compile the integer kernels; `predict` reuses them from the cache afterwards.
        with _stage(console, f"scoring the integer-only model on {task.dev_size} examples (its kernels compile "
                             "on first use: minutes, once)"):
            scores["integer"] = task.evaluate(integer)

    fp32 = primary_score(scores["fp32"], task.primary)
    results = {
        "recipe": recipe.name, "task": task.name, "model": str(classifier.directory),
        "architecture": classifier.architecture,
        "train_examples": len(task.train_set), "epochs": task.epochs, "steps_per_epoch": steps_per_epoch,
        "qat_best": {"epoch": best["epoch"], "step": best["step"]},
        "freshly_initialised": fresh,
        "scores": scores,
        # the primary metric (first dev split) minus FP32's, in points
        "difference_points": {name: 100 * (primary_score(each, task.primary) - fp32)
                              for name, each in scores.items() if name != "fp32"},
    }
    if export_error:
        results["integer_export_error"] = export_error
    write_json(out / RESULTS_FILE, results)
    stdout = Console()
    stdout.print(scores_table(task.title, task.primary, scores, results["difference_points"],
                              model_names(classifier.architecture, best["epoch"])))
    return results


@contextlib.contextmanager
def _stage(console: Console, what: str):
    """One line when a stage starts and one with its time when it ends, so a long run is never silent."""
    console.log(f"{what} ...")
    start = time.perf_counter()
    yield
    console.log(f"{what}: done in {time.perf_counter() - start:.0f} s")


def model_names(architecture: str, best_epoch: int) -> dict[str, str]:
    """The table's name of each scored model."""
    return {"fp32": f"FP32 {architecture}", "calibrated": "I-BERT, ranges calibrated, before QAT",
            "qat": f"I-BERT QAT, best epoch ({best_epoch})", "integer": "integer-only, exported from QAT"}
