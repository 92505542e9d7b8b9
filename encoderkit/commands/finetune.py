"""`encoderkit finetune glue`: glue a fine-tuning recipe to GLUE data, a pretrained encoder with a
classification (or regression) head, the classification objective and the one training loop.

The run dir (output.dir):
  recipe.yaml, versions.json   the run record
  results.json                 per task: each seed's dev scores at its best epoch, their median, min and
                               max, and the comparison with the published scores that the final table shows
  predictions/<file>.tsv       test-set predictions of each task's best checkpoint, GLUE's submission files
  <task>/best/                 the best dev checkpoint over all epochs and seeds: Hugging Face format,
                               the tokenizer, and eval.json with its scores
  <task>/seed-<n>/             the loop's run dir of one seed: metrics.jsonl, result.json once finished,
                               checkpoints/ while it trains (removed when the seed is done)
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from encoderkit.commands.report import compare_with_published, comparison_table, seed_statistics
from encoderkit.data.classification import add_swapped_pairs, encode_examples
from encoderkit.data.glue import TASKS, GlueTask, get_task, load_task, write_predictions
from encoderkit.data.tokenizer import Tokenizer
from encoderkit.files import write_json
from encoderkit.models.load import load_model, max_tokens, read_model_config
from encoderkit.objectives.classification import ClassificationObjective
from encoderkit.recipes import FinetuneRecipe, RecipeError, dump_yaml
from encoderkit.train.evaluate import glue_primary, predict, score_dev_splits
from encoderkit.train.finetune import EpochPlan, FinetuneTask, check_output_dir, finetune_seeds
from encoderkit.train.run_dir import write_run_record

ALL_TASKS = "all"
RESULTS_FILE = "results.json"


def load_classifier(model_dir: Path, task: GlueTask, dropout: float | None):
    """The checkpoint's encoder under a head for `task`: its classes, or one output for STS-B.

    A head the checkpoint lacks starts from a fresh initialisation (seed it before calling).
    """
    return load_model(model_dir, "sequence_classification", classifier_dropout=dropout, in_float=True,
                      num_labels=task.num_labels,
                      problem_type="regression" if task.labels is None else "single_label_classification")


# ---- one task: data, seeds, predictions ----------------------------------------------------------


def finetune_task(task: GlueTask, recipe: FinetuneRecipe, model_dir: Path, data_dir: Path | None, tokenizer,
                  seeds: int, out: Path, console: Console, is_main: bool) -> dict:
    settings = recipe.finetune
    data = load_task(task.name, data_dir)
    train_examples = data["train"]
    if task.name in settings.swap_pairs:
        train_examples = add_swapped_pairs(train_examples)
    dev = {split: encode_examples(data[split], tokenizer, settings.max_seq_length) for split in task.dev_splits}
    task_dir = out / task.name
    runs = finetune_seeds(
        FinetuneTask(name=task.name,
                     new_model=lambda: load_classifier(model_dir, task, settings.classifier_dropout),
                     objective=ClassificationObjective(task.num_labels),
                     train_set=encode_examples(train_examples, tokenizer, settings.max_seq_length),
                     dev_splits=task.dev_splits,
                     evaluate=lambda model: score_dev_splits(model, task, dev, settings.eval_batch_size),
                     primary=glue_primary(task)),
        EpochPlan(settings.task_epochs.get(task.name, settings.epochs), settings.layerwise_lr_decay,
                  settings.warmup_fraction),
        recipe.train, seeds, task_dir, tokenizer, console, is_main)
    if not is_main:
        return {}
    predictions = write_test_predictions(task, data, task_dir / "best", out / "predictions", tokenizer,
                                         settings.max_seq_length, settings.eval_batch_size)
    return {
        **runs,
        **seed_statistics(task.dev_splits, runs["seeds"]),
        "best_checkpoint": json.loads((task_dir / "best" / "eval.json").read_text()),
        "predictions": [str(path.relative_to(out)) for path in predictions],
    }


def write_test_predictions(task: GlueTask, data: dict, best_dir: Path, predictions_dir: Path, tokenizer,
                           max_seq_length: int, batch_size: int) -> list[Path]:
    """The best checkpoint's predictions for each test split, in GLUE's submission format."""
    from accelerate import PartialState

    model = load_model(best_dir, "sequence_classification").to(PartialState().device).eval()
    objective = ClassificationObjective(task.num_labels)
    paths = []
    for split in (split for split in task.splits if split.is_test):
        examples = data[split.name]
        predictions = predict(model, encode_examples(examples, tokenizer, max_seq_length), batch_size, objective)
        paths.append(predictions_dir / split.submission_file)
        write_predictions(paths[-1], task.name, [example.id for example in examples], predictions.tolist())
    return paths


# ---- the command ---------------------------------------------------------------------------------


def finetune_glue(recipe: FinetuneRecipe, task: str, model_dir: Path, data_dir: Path | None = None, seeds: int = 1,
                  resume: bool = False, console: Console | None = None) -> dict:
    """Fine-tune `model_dir` on one GLUE task or all of them (task="all"), `seeds` times each; returns
    what results.json holds and prints the comparison table."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    console = console or Console(stderr=True)
    # PartialState, unlike the Accelerator the loop builds, ignores ACCELERATE_USE_CPU (runtime.use_cpu_processes):
    # created first without it, it would fix every process to a world of one.
    processes = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    is_main = processes.is_main_process
    tasks = list(TASKS.values()) if task == ALL_TASKS else [get_task(task)]
    tokenizer = Tokenizer.load(model_dir, read_model_config(model_dir).get("vocab_size"))
    out = Path(recipe.output.dir)
    results_file = out / RESULTS_FILE
    check_output_dir(out, resume)
    # Read every task's files and build each head before writing or training anything: a bad file, or a
    # checkpoint whose classifier has another number of labels, fails the run now (not hours later) and
    # leaves output.dir as it was.
    for each in tasks:
        load_task(each.name, data_dir)
    for each in {each.num_labels: each for each in tasks}.values():
        positions = max_tokens(load_classifier(model_dir, each, recipe.finetune.classifier_dropout))
    if recipe.finetune.max_seq_length > positions:
        raise RecipeError(f"finetune.max_seq_length: {recipe.finetune.max_seq_length} exceeds the model's "
                          f"{positions} positions")

    processes.wait_for_everyone()  # every process has checked output.dir before the main one writes there

    results = json.loads(results_file.read_text()) if resume and results_file.is_file() else {"tasks": {}}
    results.update(recipe=recipe.name, model=str(model_dir))
    if is_main:
        write_run_record(out, dump_yaml(recipe))
    for each in tasks:
        summary = finetune_task(each, recipe, model_dir, data_dir, tokenizer, seeds, out, console, is_main)
        if is_main:
            results["tasks"][each.name] = summary
            write_json(results_file, results)
    if not is_main:
        return results
    rows, average = compare_with_published(results["tasks"], recipe.finetune.published)
    results["comparison"] = {"published_model": recipe.finetune.published, "rows": rows, "average": average}
    write_json(results_file, results)
    Console().print(comparison_table(rows, average, recipe.finetune.published, seeds > 1))
    return results
