"""Evaluation during and after training: predictions over a dataset, dev scores, and the best checkpoint.

`BestCheckpoint` is the loop's `evaluate` callback for fine-tuning and quantization-aware training: it scores
the dev splits after each epoch and keeps the best checkpoint so far in one directory.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from encoderkit.data.classification import EncodedExamples, iter_batches
from encoderkit.data.entities import is_entity_tagging, tagging_metrics
from encoderkit.data.glue import GlueTask, compute_metrics
from encoderkit.data.tokens import EncodedTokens, sentence_predictions
from encoderkit.files import replace_dir, write_json
from encoderkit.objectives.classification import ClassificationObjective
from encoderkit.train.run_dir import read_metrics


@torch.inference_mode()
def predict(model, examples: EncodedExamples, batch_size: int, objective: ClassificationObjective) -> torch.Tensor:
    """Class indices (regression: scores) for every example, in order."""
    # The integer-only model holds buffers only, no parameters.
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    outputs = []
    for batch in iter_batches(examples, batch_size, shuffle=False):
        logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                       batch["token_type_ids"].to(device))
        outputs.append(objective.predict(logits.float()).cpu())
    return torch.cat(outputs)


@torch.inference_mode()
def predict_tags(model, encoded: EncodedTokens, batch_size: int) -> list[list[int]]:
    """Per sentence, the tag index of every word (its first piece's argmax), windows joined."""
    device = next(itertools.chain(model.parameters(), model.buffers())).device

    def batches():
        for batch in iter_batches(encoded, batch_size, shuffle=False):
            logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                           batch["token_type_ids"].to(device))
            yield logits.argmax(-1).cpu()

    return sentence_predictions(encoded, batches())


def span_logits(model, features: EncodedExamples, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A question-answering model's start and end logits (float) for every feature, in order: [N, S] each, S the
    features' padded length, -inf past each batch's longest row."""
    device = next(model.parameters()).device
    width = features.input_ids.shape[-1]
    starts, ends = [], []
    for batch in iter_batches(features, batch_size, shuffle=False):
        start, end = model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                           batch["token_type_ids"].to(device))
        starts.append(torch.nn.functional.pad(start.float().cpu(), (0, width - start.shape[1]), value=-torch.inf))
        ends.append(torch.nn.functional.pad(end.float().cpu(), (0, width - end.shape[1]), value=-torch.inf))
    return torch.cat(starts), torch.cat(ends)


def score_dev_splits(model, task: GlueTask, dev: dict[str, EncodedExamples], batch_size: int) -> dict[str, dict]:
    """{split: {metric: value}} of `model` on each dev split of a GLUE task."""
    objective = ClassificationObjective(task.num_labels)
    return {split: compute_metrics(task.name, predict(model, examples, batch_size, objective), examples.labels)
            for split, examples in dev.items()}


def score_tagging(model, encoded: EncodedTokens, true: Sequence[Sequence[str]], tags: Sequence[str],
                  batch_size: int) -> dict[str, float]:
    """Token accuracy of `model` on tagged sentences (`true`: their tag names; `tags`: the model's, by index), and
    entity precision / recall / F1 for BIO / BIOES tags."""
    predicted = [[tags[i] for i in sentence] for sentence in predict_tags(model, encoded, batch_size)]
    return tagging_metrics(true, predicted, is_entity_tagging(tags))


def glue_primary(task: GlueTask) -> tuple[str, str]:
    """What picks a GLUE task's best checkpoint: its primary metric on its first dev split."""
    return task.dev_splits[0], task.primary_metric


def primary_score(scores: dict[str, dict], primary: tuple[str, str]) -> float:
    split, metric = primary
    return scores[split][metric]


class BestCheckpoint:
    """The evaluate callback: scores the dev splits after each epoch (`evaluate(model) -> {split: {metric:
    value}}`) and keeps the best checkpoint so far by the `primary` (split, metric), over the epochs of every
    seed of the task, in `directory`, with its tokenizer and eval.json.

    `save_model(model, directory)` writes the model (default: hf_format.save_pretrained); `writes=False`
    (processes other than the main one) scores without writing.
    """

    def __init__(self, evaluate: Callable[[torch.nn.Module], dict[str, dict]], primary: tuple[str, str],
                 directory: Path, tokenizer, seed: int, steps_per_epoch: int, writes: bool,
                 save_model: Callable | None = None):
        from encoderkit.models.hf_format import save_pretrained

        self.evaluate, self.primary, self.directory = evaluate, primary, directory
        self.tokenizer, self.seed, self.steps_per_epoch, self.writes = tokenizer, seed, steps_per_epoch, writes
        self.save_model = save_model or save_pretrained
        eval_file = directory / "eval.json"
        self.best = primary_score(json.loads(eval_file.read_text())["scores"], primary) if eval_file.is_file() else None

    def __call__(self, model, step: int) -> dict:
        scores = self.evaluate(model)
        score = primary_score(scores, self.primary)
        if self.best is None or score > self.best:
            self.best = score
            if self.writes:
                record = {"seed": self.seed, "epoch": step // self.steps_per_epoch, "step": step, "scores": scores}

                def fill(new: Path) -> None:
                    self.save_model(model, new)
                    self.tokenizer.save(new)
                    write_json(new / "eval.json", record)

                replace_dir(self.directory, fill)
        return {f"{split}_{metric}": value for split, values in scores.items() for metric, value in values.items()}


def best_evaluation(run_dir: Path, splits: Sequence[str], primary: tuple[str, str], steps_per_epoch: int) -> dict:
    """The run's epoch with the best primary score, read back from the eval records of its metrics.jsonl."""
    evaluations = {}
    for record in read_metrics(run_dir):
        scores = {split: {key.removeprefix(f"eval_{split}_"): value for key, value in record.items()
                          if key.startswith(f"eval_{split}_")} for split in splits}
        if all(scores.values()):
            evaluations[record["step"]] = scores
    step = max(evaluations, key=lambda s: primary_score(evaluations[s], primary))
    return {"epoch": step // steps_per_epoch, "step": step, "scores": evaluations[step]}
