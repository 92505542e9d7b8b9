"""`encoderkit finetune classify`: sequence (pair) classification, multi-label classification or regression on
the user's CSV / TSV / JSON Lines / Parquet files or a hub dataset, through the generic seed loop of
train/finetune.py.

The run dir (output.dir):
  recipe.yaml, versions.json   the run record
  results.json                 the label space, each seed's validation scores at its best epoch, their median,
                               min and max, and the best checkpoint's per-class precision / recall / F1
  best/                        the best validation checkpoint over all epochs and seeds: Hugging Face format
                               (label names in config.json's id2label, problem_type), the tokenizer, eval.json
  seed-<n>/                    one seed's loop run dir (metrics.jsonl, result.json)
  predictions/test.tsv         with a test split: index, the predicted label name(s) (comma-separated for
                               multi-label) or score
"""

from __future__ import annotations

import json
from pathlib import Path

from accelerate import PartialState
from rich.console import Console

from encoderkit.commands.report import per_class_table, seed_statistics, seeds_table
from encoderkit.data.classification import encode_examples
from encoderkit.data.text_classification import (
    MULTI,
    PRIMARY,
    REGRESSION,
    LabelSpace,
    TextDataError,
    classification_metrics,
    label_space,
    load_hub_rows,
    per_class_scores,
    read_rows,
    split_rows,
    to_examples,
)
from encoderkit.data.tokenizer import Tokenizer
from encoderkit.files import write_json, write_text
from encoderkit.models.load import load_model, max_tokens, read_model_config
from encoderkit.objectives.classification import ClassificationObjective
from encoderkit.recipes import FinetuneRecipe, RecipeError, dump_yaml
from encoderkit.train.evaluate import predict
from encoderkit.train.finetune import EpochPlan, FinetuneTask, check_output_dir, finetune_seeds
from encoderkit.train.run_dir import write_run_record

RESULTS_FILE = "results.json"
HEAD = "sequence_classification"
SPLITS = ("train", "validation", "test")


def read_splits(files: dict[str, Path | None], data: Path | None, split_column: str | None, hub: str | None,
                hub_splits: tuple[str | None, ...]) -> dict[str, list]:
    """{split: rows} from one file per split, one file with a split column, or a hub dataset's named splits."""
    if hub is not None:
        return {split: load_hub_rows(hub, name) for split, name in zip(SPLITS, hub_splits, strict=False) if name}
    if data is not None:
        if split_column is None:
            raise RecipeError("--split-column: needed with --data (the column naming each row's split)")
        rows = split_rows(read_rows(data), split_column, data)
        for split in ("train", "validation"):
            if split not in rows:
                raise TextDataError(f"{data}: no rows with {split_column} == {split!r} (values: {', '.join(rows)})")
        return {split: rows[split] for split in SPLITS if split in rows}
    if files["train"] is None or files["validation"] is None:
        raise RecipeError("--train and --validation: both files are needed (or --data with --split-column, "
                          "or --hub with a dataset name)")
    return {split: read_rows(path) for split, path in files.items() if path is not None}


def _prediction_text(space: LabelSpace, value) -> str:
    if space.problem_type == REGRESSION:
        return f"{float(value):.5f}"
    if space.problem_type == MULTI:
        return ",".join(name for name, on in zip(space.names, value, strict=True) if on)
    return space.names[int(value)]


def finetune_classify(recipe: FinetuneRecipe, model_dir: Path, rows: dict[str, list], text_column: str,
                      pair_column: str | None, label_column: str, regression: bool = False, threshold: float = 0.5,
                      seeds: int = 1, resume: bool = False, console: Console | None = None) -> dict:
    """Fine-tune `model_dir` on {train, validation, test?} rows; returns what results.json holds."""
    console = console or Console(stderr=True)
    is_main = PartialState().is_main_process
    settings = recipe.finetune
    read_model_config(model_dir)
    tokenizer = Tokenizer.load(model_dir)
    out = Path(recipe.output.dir)
    check_output_dir(out, resume)
    train_rows = rows["train"]
    if label_column not in train_rows[0].values:
        raise TextDataError(f"{train_rows[0].where}: no label column {label_column!r} "
                            f"(columns: {', '.join(map(str, train_rows[0].values))}); set --label-column")
    space = label_space(train_rows, label_column, regression)
    examples = {split: to_examples(part, text_column, pair_column, label_column, space, part[0].where)
                for split, part in rows.items()}
    if examples["validation"][0].label is None:
        raise TextDataError(f"{rows['validation'][0].where}: no label column {label_column!r} in the validation split")
    objective = ClassificationObjective(space.num_labels, multi_label=space.problem_type == MULTI, threshold=threshold)

    def new_model():
        return load_model(model_dir, HEAD, classifier_dropout=settings.classifier_dropout, in_float=True,
                          num_labels=space.num_labels, problem_type=space.problem_type,
                          id2label=None if space.problem_type == REGRESSION else dict(enumerate(space.names)))

    positions = max_tokens(new_model())  # a checkpoint with another label count fails here, before any writing
    if settings.max_seq_length > positions:
        raise RecipeError(f"finetune.max_seq_length: {settings.max_seq_length} exceeds the model's "
                          f"{positions} positions")
    encoded = {split: encode_examples(each, tokenizer, settings.max_seq_length) for split, each in examples.items()}

    def evaluate(model) -> dict:
        predicted = predict(model, encoded["validation"], settings.eval_batch_size, objective)
        return {"validation": classification_metrics(space.problem_type, predicted.numpy(),
                                                     encoded["validation"].labels.numpy(), space.names)}

    PartialState().wait_for_everyone()
    if is_main:
        write_run_record(out, dump_yaml(recipe))
    runs = finetune_seeds(
        FinetuneTask(name="classify", new_model=new_model, objective=objective, train_set=encoded["train"],
                     dev_splits=("validation",), evaluate=evaluate,
                     primary=("validation", PRIMARY[space.problem_type])),
        EpochPlan(settings.epochs, settings.layerwise_lr_decay, settings.warmup_fraction),
        recipe.train, seeds, out, tokenizer, console, is_main)
    if not is_main:
        return {}
    best = load_model(out / "best", HEAD).to(PartialState().device).eval()
    results = {"recipe": recipe.name, "model": str(model_dir), "problem_type": space.problem_type,
               "labels": space.names, **runs, **seed_statistics(["validation"], runs["seeds"]),
               "best_checkpoint": json.loads((out / "best" / "eval.json").read_text())}
    if space.problem_type != REGRESSION:
        predicted = predict(best, encoded["validation"], settings.eval_batch_size, objective).numpy()
        results["per_class"] = per_class_scores(predicted, encoded["validation"].labels.numpy(), space.names)
    if "test" in examples:
        predicted = predict(best, encoded["test"], settings.eval_batch_size, objective).tolist()
        path = out / "predictions" / "test.tsv"
        write_text(path, "index\tprediction\n" + "".join(f"{i}\t{_prediction_text(space, value)}\n"
                                                         for i, value in enumerate(predicted)))
        results["predictions"] = str(path.relative_to(out))
    write_json(out / RESULTS_FILE, results)
    stdout = Console()
    stdout.print(seeds_table(f"{space.problem_type.replace('_', ' ')}, validation, x100", "validation", results))
    if "per_class" in results:
        stdout.print(per_class_table("best checkpoint, validation, per class, x100", results["per_class"]))
    return results
