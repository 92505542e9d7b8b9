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

import dataclasses
import itertools
import json
import os
import re
import shutil
import statistics
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from encoderkit.data.glue import (
    PUBLISHED_DEV_SCORES,
    TASKS,
    GlueTask,
    compute_metrics,
    get_task,
    load_task,
    write_predictions,
)
from encoderkit.errors import UserError
from encoderkit.objectives.classification import (
    ClassificationObjective,
    EncodedExamples,
    add_swapped_pairs,
    encode_examples,
    iter_batches,
)
from encoderkit.recipes import FinetuneRecipe, RecipeError, dump_yaml
from encoderkit.train.optim import NO_DECAY_SUFFIXES

ALL_TASKS = "all"
RESULTS_FILE = "results.json"
# The config field of each model_type that sets the dropout before the classifier.
CLASSIFIER_DROPOUT_FIELD = {"albert": "classifier_dropout_prob", "electra": "classifier_dropout",
                            "bert": "classifier_dropout"}


class FinetuneError(UserError):
    """A model directory or run directory that cannot be used for fine-tuning."""


# ---- model, tokenizer, parameter groups ----------------------------------------------------------


def read_model_config(model_dir: Path) -> dict:
    from encoderkit.models.hf_format import FAMILIES, read_config

    try:
        config = read_config(model_dir)
    except ValueError as err:
        raise FinetuneError(f"--model: {err}") from None
    if config.get("model_type") not in FAMILIES:
        raise FinetuneError(f"--model: {model_dir / 'config.json'}: model_type {config.get('model_type')!r} "
                            f"is not one of: {', '.join(FAMILIES)}")
    return config


def load_tokenizer(model_dir: Path):
    from encoderkit.data.tokenizer import Tokenizer, TokenizerError

    try:
        return Tokenizer.load(model_dir)
    except TokenizerError as err:
        raise FinetuneError(f"--model: {err}") from None


def load_classifier(model_dir: Path, model_type: str, task: GlueTask, dropout: float | None):
    """The checkpoint's encoder under a head for `task`: its classes, or one output for STS-B.

    A head the checkpoint lacks starts from a fresh initialisation (seed it before calling).
    """
    from encoderkit.models.hf_format import load_pretrained

    overrides = {"num_labels": task.num_labels,
                 "problem_type": "regression" if task.labels is None else "single_label_classification"}
    if dropout is not None:
        overrides[CLASSIFIER_DROPOUT_FIELD[model_type]] = dropout
    try:
        return load_pretrained(model_dir, head="sequence_classification", **overrides)
    except ValueError as err:  # missing tensors, or a classifier trained for another number of labels
        raise FinetuneError(f"--model: {err}") from None


LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|layer_groups)\.(\d+)\.")


def layer_depth(name: str, num_layers: int) -> int:
    """How many layers below the task head a parameter sits: ELECTRA's layer-wise lr decay exponent.

    As google-research/electra model/optimization.py `_get_layer_lrs`: the head 0, the pooler 1, the
    top layer 2, one more per layer down, the embeddings (with the E->H projection) num_layers + 2.
    ELECTRA keeps the pooler's step though it dropped the pooler (electra issue #51: left so that the
    published results reproduce), so its top layer has depth 2 with or without a pooler.
    """
    parts = name.split(".")
    if "embeddings" in parts or "embedding_projection" in parts:
        return num_layers + 2
    layer = LAYER_INDEX.search(name)
    if layer:
        return num_layers + 1 - int(layer.group(1))
    if "pooler" in parts:
        return 1
    return 0


def layerwise_lr_groups(model: torch.nn.Module, learning_rate: float, decay: float,
                        weight_decay: float) -> list[dict]:
    """Parameter groups with lr = learning_rate * decay^depth (see layer_depth), depth read off the names.

    ALBERT's layers share one set of weights per layer group, so a group counts as one layer: with
    ALBERT-base's single group the embeddings get decay^3, the shared layer decay^2, the pooler decay^1
    and the head the full rate. Biases and LayerNorm weights get no weight decay (as decay_groups).
    """
    named = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    indices = [int(match.group(1)) for name, _ in named if (match := LAYER_INDEX.search(name))]
    num_layers = max(indices) + 1 if indices else 0
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in named:
        depth, no_decay = layer_depth(name, num_layers), name.endswith(NO_DECAY_SUFFIXES)
        group = groups.setdefault((depth, no_decay), {
            "params": [], "lr": learning_rate * decay**depth, "weight_decay": 0.0 if no_decay else weight_decay,
        })
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]


# ---- batches, evaluation, the best checkpoint ----------------------------------------------------


class EpochBatches:
    """Endless training micro-batches, epoch after epoch, each epoch in a new shuffled order.

    An epoch is `batches_per_epoch` full batches (the few examples after the last full batch differ
    from epoch to epoch). The state, (epoch, batch), is what the loop's checkpoints save for an exact resume.
    """

    def __init__(self, examples: EncodedExamples, batch_size: int, batches_per_epoch: int, seed: int):
        self.examples, self.batch_size, self.seed = examples, batch_size, seed
        self.batches_per_epoch = batches_per_epoch
        self.epoch, self.batch = 0, 0
        self._rest_of_epoch = None

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.batch == self.batches_per_epoch:
            self.epoch, self.batch, self._rest_of_epoch = self.epoch + 1, 0, None
        if self._rest_of_epoch is None:
            # seed * 10_000 + epoch: two seeds never share an epoch's order (seed + epoch would).
            order = iter_batches(self.examples, self.batch_size, shuffle=True, seed=self.seed * 10_000 + self.epoch)
            self._rest_of_epoch = itertools.islice(order, self.batch, None)
        self.batch += 1
        return next(self._rest_of_epoch)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batch, self._rest_of_epoch = state["epoch"], state["batch"], None


@torch.inference_mode()
def predict(model, examples: EncodedExamples, batch_size: int, objective: ClassificationObjective) -> torch.Tensor:
    """Class indices (STS-B: scores) for every example, in order."""
    # The integer-only model holds buffers only, no parameters.
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    outputs = []
    for batch in iter_batches(examples, batch_size, shuffle=False):
        logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                       batch["token_type_ids"].to(device))
        outputs.append(objective.predict(logits.float()).cpu())
    return torch.cat(outputs)


def score_dev_splits(model, task: GlueTask, dev: dict[str, EncodedExamples], batch_size: int) -> dict[str, dict]:
    objective = ClassificationObjective(task.num_labels)
    return {split: compute_metrics(task.name, predict(model, examples, batch_size, objective), examples.labels)
            for split, examples in dev.items()}


def primary_score(task: GlueTask, scores: dict[str, dict]) -> float:
    """What picks the best checkpoint: the task's primary metric on its first dev split."""
    return scores[task.dev_splits[0]][task.primary_metric]


class BestCheckpoint:
    """The evaluate callback: scores the dev splits after each epoch and keeps the best checkpoint so far
    (over the epochs of every seed of the task) in `directory`, with its tokenizer and eval.json.

    `save_model(model, directory)` writes the model (default: hf_format.save_pretrained; I-BERT has its own).
    """

    def __init__(self, task, dev, batch_size, directory: Path, tokenizer, seed: int, steps_per_epoch: int,
                 writes: bool, save_model=None):
        from encoderkit.models.hf_format import save_pretrained

        self.task, self.dev, self.batch_size, self.directory = task, dev, batch_size, directory
        self.tokenizer, self.seed, self.steps_per_epoch, self.writes = tokenizer, seed, steps_per_epoch, writes
        self.save_model = save_model or save_pretrained
        eval_file = directory / "eval.json"
        self.best = primary_score(task, json.loads(eval_file.read_text())["scores"]) if eval_file.is_file() else None

    def __call__(self, model, step: int) -> dict:
        scores = score_dev_splits(model, self.task, self.dev, self.batch_size)
        score = primary_score(self.task, scores)
        if self.best is None or score > self.best:
            self.best = score
            if self.writes:
                record = {"seed": self.seed, "epoch": step // self.steps_per_epoch, "step": step, "scores": scores}
                self._save(model, record)
        return {f"{split}_{metric}": value for split, values in scores.items() for metric, value in values.items()}

    def _save(self, model, record: dict) -> None:
        """Write the whole checkpoint beside the old one, then swap it in by renames."""
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        new = Path(tempfile.mkdtemp(dir=self.directory.parent, prefix=".best-new-"))
        self.save_model(model, new)
        self.tokenizer.save(new)
        (new / "eval.json").write_text(json.dumps(record, indent=2) + "\n")
        old = self.directory.with_name(".best-old")
        shutil.rmtree(old, ignore_errors=True)
        if self.directory.exists():
            os.replace(self.directory, old)
        os.replace(new, self.directory)
        shutil.rmtree(old, ignore_errors=True)


def best_evaluation(seed_dir: Path, task: GlueTask, steps_per_epoch: int) -> dict:
    """The seed's epoch with the best primary score, read back from the eval records of its metrics.jsonl."""
    evaluations = {}
    for line in (seed_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        scores = {split: {key.removeprefix(f"eval_{split}_"): value for key, value in record.items()
                          if key.startswith(f"eval_{split}_")} for split in task.dev_splits}
        if all(scores.values()):
            evaluations[record["step"]] = scores
    step = max(evaluations, key=lambda s: primary_score(task, evaluations[s]))
    return {"epoch": step // steps_per_epoch, "step": step, "scores": evaluations[step]}


# ---- one task: data, seeds, predictions ----------------------------------------------------------


def finetune_task(task: GlueTask, recipe: FinetuneRecipe, model_dir: Path, model_type: str, data_dir: Path | None,
                  tokenizer, seeds: int, out: Path, console: Console, is_main: bool) -> dict:
    from encoderkit.train.loop import CHECKPOINTS, latest_checkpoint, train

    settings, train_cfg = recipe.finetune, recipe.train
    data = load_task(task.name, data_dir)
    train_examples = data["train"]
    if task.name in settings.swap_pairs:
        train_examples = add_swapped_pairs(train_examples)
    train_set = encode_examples(train_examples, tokenizer, settings.max_seq_length)
    dev = {split: encode_examples(data[split], tokenizer, settings.max_seq_length) for split in task.dev_splits}

    epochs = settings.task_epochs.get(task.name, settings.epochs)
    steps_per_epoch = len(train_set) // train_cfg.batch_size
    if steps_per_epoch == 0:
        raise RecipeError(f"train.batch_size: {train_cfg.batch_size} is more than the {len(train_set)} "
                          f"training examples of {task.name}")
    max_steps = epochs * steps_per_epoch
    accumulation = train_cfg.gradient_accumulation_steps
    task_dir = out / task.name

    seed_results = []
    for seed in range(train_cfg.seed, train_cfg.seed + seeds):
        seed_dir = task_dir / f"seed-{seed}"
        if (seed_dir / "result.json").is_file():  # finished before this run was resumed
            seed_results.append(json.loads((seed_dir / "result.json").read_text()))
            continue
        if is_main:
            console.log(f"{task.name}, seed {seed}: {len(train_set)} training examples, "
                        f"{epochs} epochs of {steps_per_epoch} steps")
        torch.manual_seed(seed)  # the new head's initialisation differs per seed
        model = load_classifier(model_dir, model_type, task, settings.classifier_dropout)
        cfg = dataclasses.replace(train_cfg, seed=seed, max_steps=max_steps, save_every=steps_per_epoch,
                                  warmup_steps=round(settings.warmup_fraction * max_steps))
        groups = layerwise_lr_groups(model, cfg.learning_rate, settings.layerwise_lr_decay, cfg.weight_decay)
        batches = EpochBatches(train_set, cfg.batch_size // accumulation, steps_per_epoch * accumulation, seed)
        keep_best = BestCheckpoint(task, dev, settings.eval_batch_size, task_dir / "best", tokenizer, seed,
                                   steps_per_epoch, writes=is_main)
        resume = latest_checkpoint(seed_dir, missing_ok=True) is not None
        train(model, ClassificationObjective(task.num_labels), batches, cfg, seed_dir, resume=resume,
              param_groups=groups, evaluate=keep_best, eval_every=steps_per_epoch, console=console)
        if is_main:
            result = {"seed": seed, **best_evaluation(seed_dir, task, steps_per_epoch)}
            write_json(seed_dir / "result.json", result)
            # A finished seed resumes from result.json; its checkpoints hold the optimizer state (3x the model).
            shutil.rmtree(seed_dir / CHECKPOINTS, ignore_errors=True)
            seed_results.append(result)

    if not is_main:
        return {}
    predictions = write_test_predictions(task, data, task_dir / "best", out / "predictions", tokenizer,
                                         settings.max_seq_length, settings.eval_batch_size)
    return {
        "train_examples": len(train_set),
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "seeds": seed_results,
        **seed_statistics(task, seed_results),
        "best_checkpoint": json.loads((task_dir / "best" / "eval.json").read_text()),
        "predictions": [str(path.relative_to(out)) for path in predictions],
    }


def seed_statistics(task: GlueTask, seed_results: list[dict]) -> dict:
    """Median, min and max over the seeds of every dev split's every metric."""
    stats = {"median": {}, "min": {}, "max": {}}
    for split in task.dev_splits:
        for metric in seed_results[0]["scores"][split]:
            values = [result["scores"][split][metric] for result in seed_results]
            for name, reduce in (("median", statistics.median), ("min", min), ("max", max)):
                stats[name].setdefault(split, {})[metric] = reduce(values)
    return stats


def write_test_predictions(task: GlueTask, data: dict, best_dir: Path, predictions_dir: Path, tokenizer,
                           max_seq_length: int, batch_size: int) -> list[Path]:
    """The best checkpoint's predictions for each test split, in GLUE's submission format."""
    from accelerate import PartialState

    from encoderkit.models.hf_format import load_pretrained

    model = load_pretrained(best_dir, head="sequence_classification").to(PartialState().device).eval()
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

    from encoderkit.train.loop import write_run_record

    console = console or Console(stderr=True)
    processes = PartialState()
    is_main = processes.is_main_process
    tasks = list(TASKS.values()) if task == ALL_TASKS else [get_task(task)]
    model_config = read_model_config(model_dir)
    model_type, max_positions = model_config["model_type"], model_config["max_position_embeddings"]
    if recipe.finetune.max_seq_length > max_positions:
        raise RecipeError(f"finetune.max_seq_length: {recipe.finetune.max_seq_length} exceeds the model's "
                          f"max_position_embeddings={max_positions}")
    tokenizer = load_tokenizer(model_dir)
    out = Path(recipe.output.dir)
    results_file = out / RESULTS_FILE
    if not resume and out.is_dir() and any(out.iterdir()):
        raise FinetuneError(f"output.dir: '{out}' is not empty; pass --resume to continue the run in it "
                            "or choose another output.dir")
    # Read every task's files and build each head before writing or training anything: a bad file, or a
    # checkpoint whose classifier has another number of labels, fails the run now (not hours later) and
    # leaves output.dir as it was.
    for each in tasks:
        load_task(each.name, data_dir)
    for each in {each.num_labels: each for each in tasks}.values():
        load_classifier(model_dir, model_type, each, recipe.finetune.classifier_dropout)

    processes.wait_for_everyone()  # every process has checked output.dir before the main one writes there

    results = json.loads(results_file.read_text()) if resume and results_file.is_file() else {"tasks": {}}
    results.update(recipe=recipe.name, model=str(model_dir))
    if is_main:
        write_run_record(out, dump_yaml(recipe))
    for each in tasks:
        summary = finetune_task(each, recipe, model_dir, model_type, data_dir, tokenizer, seeds, out, console,
                                is_main)
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


# ---- comparison with the published scores --------------------------------------------------------


def compare_with_published(task_results: dict, published_model: str | None) -> tuple[list[dict], dict]:
    """One row per task and dev split: our median score x100 (the metric the published table uses, else
    the task's primary metric) beside the published value; and the average over the rows without WNLI
    and MNLI-mismatched (as BERT and ELECTRA average GLUE dev scores)."""
    published = {(s.task, s.split): s for s in PUBLISHED_DEV_SCORES if s.model == published_model}
    rows = []
    for name, result in task_results.items():
        task = TASKS[name]
        for split in task.dev_splits:
            reference = published.get((name, split))
            metric = reference.metric if reference else task.primary_metric
            rows.append({
                "task": name, "split": split, "metric": metric,
                "ours": 100 * result["median"][split][metric],
                "min": 100 * result["min"][split][metric],
                "max": 100 * result["max"][split][metric],
                "published": reference.value if reference else None,
            })
    averaged = [row for row in rows if row["task"] != "wnli" and row["split"] == TASKS[row["task"]].dev_splits[0]]
    published_values = [row["published"] for row in averaged]
    published_average = statistics.mean(published_values) if averaged and None not in published_values else None
    if published_average is None and {row["task"] for row in averaged} >= set(TASKS) - {"wnli"}:
        # a source that publishes only the GLUE score (ELECTRA paper, Table 1)
        published_average = published[("average", "dev")].value if ("average", "dev") in published else None
    average = {
        "tasks": [row["task"] for row in averaged],
        "ours": statistics.mean(row["ours"] for row in averaged) if averaged else None,
        "published": published_average,
    }
    return rows, average


def comparison_table(rows: list[dict], average: dict, published_model: str | None, show_range: bool) -> Table:
    sources = sorted({s.source for s in PUBLISHED_DEV_SCORES if s.model == published_model})
    table = Table(title=f"GLUE dev, x100{f'; published: {published_model}' if published_model else ''}",
                  caption="; ".join(sources) or None)
    for column in ("task", "split", "metric"):
        table.add_column(column)
    for column in ("ours", *(["seeds min-max"] if show_range else []), "published"):
        table.add_column(column, justify="right")
    for row in rows:
        spread = [f"{row['min']:.1f}-{row['max']:.1f}"] if show_range else []
        table.add_row(row["task"], row["split"], row["metric"], f"{row['ours']:.1f}", *spread,
                      _points(row["published"]))
    if average["ours"] is not None:
        table.add_section()
        table.add_row("average", "", "no WNLI, MNLI-mm", f"{average['ours']:.1f}", *([""] if show_range else []),
                      _points(average["published"]))
    return table


def _points(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def write_json(path: Path, data: dict) -> None:
    """Write whole or not at all: a temporary file, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
