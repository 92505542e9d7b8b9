"""`encoderkit quantize`: I-BERT quantization-aware fine-tuning (QAT) of a fine-tuned GLUE classifier through
the one training loop, its export to integer-only inference, and FP32 / QAT / integer-only dev scores in one table.

Steps: score the float classifier on dev; build the I-BERT QAT model from it (BERT/ELECTRA/RoBERTa/ALBERT weights
map onto I-BERT's, with ELECTRA-Small's and ALBERT's embedding projection and ALBERT's shared layers; an I-BERT
checkpoint loads as it is); set its activation ranges on training batches; QAT fine-tune with the classification
objective, keeping the best dev epoch; export that epoch to the integer-only model and score it too.

The run dir (output.dir):
  recipe.yaml, versions.json   the run record
  results.json                 dev scores of every model, their differences from FP32 in points
  qat/                         the best QAT epoch: I-BERT in Hugging Face format (quant_mode true; transformers'
                               IBertForSequenceClassification loads it unless it has an embedding projection or
                               shared layers, which are ours), the tokenizer, eval.json
  integer/                     the integer-only model (model.safetensors: integer tensors) and the tokenizer;
                               `encoderkit predict --model <run dir>/integer` runs it without any float model
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
from pathlib import Path

import torch
from rich.console import Console

from encoderkit.commands.report import scores_table
from encoderkit.data.classification import EpochBatches, encode_examples, iter_batches
from encoderkit.data.glue import GlueTask, get_task, load_task
from encoderkit.data.tokenizer import Tokenizer
from encoderkit.errors import UserError
from encoderkit.files import write_json
from encoderkit.objectives.classification import ClassificationObjective
from encoderkit.recipes import QuantizeRecipe, RecipeError, dump_yaml
from encoderkit.train.evaluate import BestCheckpoint, primary_score, score_dev_splits
from encoderkit.train.optim import parameter_groups

RESULTS_FILE = "results.json"
QAT_DIR, INTEGER_DIR, TRAIN_DIR = "qat", "integer", "train"
INTEGER_FILE = "model.safetensors"
CLASSIFIER = "sequence_classification"
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class QuantizeError(UserError):
    """A model or run directory that `encoderkit quantize` cannot use."""


# ---- the models: float classifier, QAT model, integer-only model --------------------------------


def read_classifier_config(model_dir: Path, task: GlueTask) -> dict:
    """config.json of a fine-tuned classifier for `task` whose family I-BERT can quantize."""
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
    if not isinstance(config.get("architectures"), list) or not any(
            str(name).endswith("ForSequenceClassification") for name in config["architectures"]):
        raise QuantizeError(f"--model: {model_dir} holds no fine-tuned classifier (architectures: "
                            f"{config.get('architectures')}); fine-tune it first with `encoderkit finetune glue`")
    num_labels = len(config["id2label"]) if isinstance(config.get("id2label"), dict) else config.get("num_labels", 2)
    if num_labels != task.num_labels:
        raise QuantizeError(f"--model: the classifier has {num_labels} outputs, task {task.name} needs "
                            f"{task.num_labels}; was it fine-tuned on another task?")
    return config


def load_float_classifier(model_dir: Path, model_type: str):
    """The fine-tuned classifier in float through the one loader, which checks the dir (config.json, the weights'
    names, shapes and values, the classifier head) before anything else runs; I-BERT with quant_mode off."""
    from encoderkit.models.load import load_model

    overrides = {"quant_mode": False} if model_type == "ibert" else {}
    return load_model(model_dir, CLASSIFIER, require_head=True, **overrides)


def build_qat_model(model_dir: Path, model_type: str, force_dequant: str = "none"):
    """The I-BERT QAT model (quant_mode on, every operation integer except those `force_dequant` names) with the
    checkpoint's weights, and the names of the tensors the checkpoint has no counterpart for (ELECTRA's classifier:
    gelu where I-BERT's is tanh)."""
    from encoderkit.models import hf_format
    from encoderkit.models.ibert import convert

    try:
        if model_type == "ibert":
            return hf_format.load_pretrained(model_dir, CLASSIFIER, quant_mode=True, force_dequant=force_dequant), []
        return convert.from_float(model_dir, CLASSIFIER, force_dequant=force_dequant)
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


def export_integer(qat_dir: Path, out_dir: Path, tokenizer, console: Console):
    """The integer-only model of the QAT checkpoint, written to out_dir with the tokenizer; None if it does not
    export (the QAT model stays usable), with the reason on the console."""
    from encoderkit.models import hf_format
    from encoderkit.models.ibert.export import export_integer_model

    try:
        integer = export_integer_model(hf_format.load_pretrained(qat_dir, CLASSIFIER))
    except ValueError as err:  # a rescale factor that fits no fixed-point multiplier, for instance
        console.log(f"[yellow]integer-only export failed: {err}")
        return None, str(err)
    out_dir.mkdir(parents=True, exist_ok=True)
    integer.save(out_dir / INTEGER_FILE)
    tokenizer.save(out_dir)
    return integer, None


# ---- the command ---------------------------------------------------------------------------------


def quantize_glue(recipe: QuantizeRecipe, task_name: str, model_dir: Path, data_dir: Path | None = None,
                  console: Console | None = None) -> dict:
    """QAT-fine-tune and export `model_dir` (fine-tuned on `task_name`); returns what results.json holds and
    prints the comparison table."""
    from accelerate import PartialState

    from encoderkit.models import hf_format
    from encoderkit.models.ibert import calibrate
    from encoderkit.train.loop import train
    from encoderkit.train.run_dir import CHECKPOINTS, write_run_record

    console = console or Console(stderr=True)
    settings = recipe.quantize
    task = get_task(task_name)
    config = read_classifier_config(model_dir, task)
    model_type = config["model_type"]
    architecture = next(name for name in config["architectures"] if name.endswith("ForSequenceClassification"))
    out = Path(recipe.output.dir)
    if out.is_dir() and any(out.iterdir()):
        raise QuantizeError(f"output.dir: '{out}' is not empty; choose another output.dir")
    # Everything that can fail on input fails here, before anything is written or trained.
    float_model = load_float_classifier(model_dir, model_type).to(PartialState().device).eval()
    tokenizer = Tokenizer.load(model_dir, config.get("vocab_size"))
    qat_model, fresh = build_qat_model(model_dir, model_type, settings.force_dequant)
    data = load_task(task.name, data_dir, splits=["train", *task.dev_splits])
    train_set = encode_examples(data["train"], tokenizer, settings.max_seq_length)
    dev = {split: encode_examples(data[split], tokenizer, settings.max_seq_length) for split in task.dev_splits}
    batch_size = settings.task_batch_size.get(task.name, recipe.train.batch_size)
    steps_per_epoch = len(train_set) // batch_size
    if steps_per_epoch == 0:
        raise RecipeError(f"train.batch_size: {batch_size} is more than the {len(train_set)} training examples "
                          f"of {task.name}")
    epochs = settings.task_epochs.get(task.name, settings.epochs)

    write_run_record(out, dump_yaml(recipe))
    dev_size = sum(len(examples) for examples in dev.values())
    with _stage(console, f"scoring the FP32 model on {dev_size} dev examples"):
        scores = {"fp32": score_dev_splits(float_model, task, dev, settings.eval_batch_size)}
    del float_model

    set_range_momentum(qat_model, settings.act_range_momentum)
    calibration = iter_batches(train_set, batch_size, shuffle=True, seed=recipe.train.seed)
    with _stage(console, f"calibrating activation ranges on {settings.calibration_batches} batches"):
        calibrate(qat_model, ({key: batch[key] for key in MODEL_INPUTS}
                              for batch in itertools.islice(calibration, settings.calibration_batches)))
    with _stage(console, f"scoring the calibrated I-BERT on {dev_size} dev examples"):
        scores["calibrated"] = score_dev_splits(qat_model, task, dev, settings.eval_batch_size)

    console.log(f"{task.name}: QAT of {len(train_set)} training examples, {epochs} epochs of {steps_per_epoch} steps")
    max_steps = epochs * steps_per_epoch
    cfg = dataclasses.replace(recipe.train, batch_size=batch_size, max_steps=max_steps, save_every=steps_per_epoch,
                              warmup_steps=round(settings.warmup_fraction * max_steps))
    accumulation = cfg.gradient_accumulation_steps
    batches = EpochBatches(train_set, batch_size // accumulation, steps_per_epoch * accumulation, cfg.seed)
    keep_best = BestCheckpoint(task, dev, settings.eval_batch_size, out / QAT_DIR, tokenizer, cfg.seed,
                               steps_per_epoch, writes=True, save_model=hf_format.save_pretrained)
    # the tensors the float checkpoint lacks (ELECTRA's classifier) train at a fine-tuning rate, the rest at QAT's
    groups = parameter_groups(qat_model, cfg.weight_decay, lambda name: settings.new_head_learning_rate
                              if name in fresh else cfg.learning_rate)
    train(qat_model, ClassificationObjective(task.num_labels), batches, cfg, out / TRAIN_DIR, param_groups=groups,
          evaluate=keep_best, eval_every=steps_per_epoch, console=console)
    shutil.rmtree(out / TRAIN_DIR / CHECKPOINTS, ignore_errors=True)  # the best epoch is in qat/
    del qat_model

    best = json.loads((out / QAT_DIR / "eval.json").read_text())
    scores["qat"] = best["scores"]
    if settings.force_dequant == "none":
        with _stage(console, "exporting the best epoch to the integer-only model"):
            integer, export_error = export_integer(out / QAT_DIR, out / INTEGER_DIR, tokenizer, console)
    else:
        integer, export_error = None, no_integer_export(settings.force_dequant)
        console.log(f"[yellow]{export_error}")
    if integer is not None:
        # The first batches compile the integer kernels; `predict` reuses them from the cache afterwards.
        with _stage(console, f"scoring the integer-only model on {dev_size} dev examples (its kernels compile "
                             "on first use: minutes, once)"):
            scores["integer"] = score_dev_splits(integer, task, dev, settings.eval_batch_size)

    fp32 = primary_score(task, scores["fp32"])
    results = {
        "recipe": recipe.name, "task": task.name, "model": str(model_dir), "architecture": architecture,
        "train_examples": len(train_set), "epochs": epochs, "steps_per_epoch": steps_per_epoch,
        "qat_best": {"epoch": best["epoch"], "step": best["step"]},
        "freshly_initialised": fresh,
        "scores": scores,
        # the primary metric (first dev split) minus FP32's, in points
        "difference_points": {name: 100 * (primary_score(task, each) - fp32)
                              for name, each in scores.items() if name != "fp32"},
    }
    if export_error:
        results["integer_export_error"] = export_error
    write_json(out / RESULTS_FILE, results)
    stdout = Console()
    stdout.print(scores_table(task, scores, results["difference_points"], model_names(architecture, best["epoch"])))
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
