"""`encoderkit predict`: the label and its probability (or, for a regression head, the score) of each stdin line,
from a fine-tuned classifier: a Hugging Face model dir (ALBERT, ELECTRA, BERT, I-BERT) or the integer-only model
that `encoderkit quantize` writes (its integer/ dir), which runs without any float model.

A line with a tab is a pair: the text before the tab and the text after it (as GLUE's pair tasks).

A question-answering model (`finetune qa`) answers JSON lines {"question", "context"}; a multiple-choice model
(`finetune choice`) scores JSON lines {"context", "choices"} (JSON_ANSWERS, by the dir's head).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

import torch

from encoderkit.commands.lines import LineError, answer_lines
from encoderkit.data.classification import encode_examples, iter_batches
from encoderkit.data.glue import GlueExample, get_task
from encoderkit.data.tokenizer import Tokenizer
from encoderkit.errors import UserError

FORMATS = ("text", "jsonl")
CLASSIFIER = "sequence_classification"
INTEGER_FILE = "model.safetensors"


class PredictError(UserError):
    """A model directory or option that `encoderkit predict` cannot use."""


def load_classifier(model_dir: Path):
    """The classifier in `model_dir` and the number of tokens its position table holds.

    With a config.json: a Hugging Face classifier; without one: the integer-only model of model.safetensors."""
    from encoderkit.models import hf_format
    from encoderkit.models.ibert.integer import load_integer_model

    if not (model_dir / "config.json").is_file():
        if not (model_dir / INTEGER_FILE).is_file():
            raise PredictError(f"--model: '{model_dir}' is not a model directory (no config.json, and no "
                               f"{INTEGER_FILE} of an integer-only model)")
        try:
            model = load_integer_model(model_dir / INTEGER_FILE)
        except ValueError as err:
            raise PredictError(f"--model: {err}") from None
        if model.classifier is None:
            raise PredictError(f"--model: {model_dir} is an integer-only encoder without a classifier head")
        # I-BERT counts positions from pad_token_id + 1, as RoBERTa does.
        return model, len(model.embeddings.position_table) - model.spec["pad_token_id"] - 1
    config = hf_format.read_config(model_dir)
    if not any(name.endswith("ForSequenceClassification") for name in config.get("architectures", [])):
        raise PredictError(f"--model: {model_dir} holds no classifier (architectures: {config.get('architectures')}); "
                           "give a dir written by `encoderkit finetune glue` or `encoderkit quantize`")
    try:
        model = hf_format.load_pretrained(model_dir, CLASSIFIER)
        if config.get("model_type") == "ibert":
            return model.eval(), model.config.max_position_embeddings - model.config.pad_token_id - 1
    except ValueError as err:
        raise PredictError(f"--model: {err}") from None
    return model.eval(), model.config.max_position_embeddings


def classify(model, tokenizer, text: str, max_seq_length: int, labels: tuple[str, ...] | None) -> dict:
    """{label, score}: the most probable class (its name when `labels` are given) and its probability;
    a regression head gives {score} only."""
    text_a, tab, text_b = text.partition("\t")
    if "\t" in text_b:
        raise LineError("more than one tab: give a text, or two texts separated by one tab")
    if not text_a.strip() or (tab and not text_b.strip()):
        raise LineError("an empty text before or after the tab")
    example = GlueExample(text_a, text_b if tab else None, label=None, id="")
    batch = next(iter_batches(encode_examples([example], tokenizer, max_seq_length), 1, shuffle=False))
    with torch.inference_mode():
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])[0].float()
    if len(logits) == 1:
        return {"score": round(float(logits[0]), 5)}
    probability, index = logits.softmax(-1).max(-1)
    return {"label": labels[int(index)] if labels else int(index), "score": round(float(probability), 5)}


def _render(text: str, result: dict) -> str:
    if "label" in result:
        return f"{result['label']}\t{result['score']:.4f}\t{text}\n"
    return f"{result['score']:.4f}\t{text}\n"


def _json_object(text: str, keys: tuple[str, ...]) -> dict:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as err:
        raise LineError(f"not a JSON object ({err}); give one object per line with {', '.join(keys)}") from None
    if not isinstance(row, dict) or any(key not in row for key in keys):
        raise LineError(f"expected a JSON object with {', '.join(keys)}")
    return row


class QuestionAnswerer:
    """A question-answering head's answer to a JSON line {"question", "context"}: the answer cut from the context
    (`answer`, characters `start`..`end`), its probability among the n-best answers and the null one (`score`),
    and its `null_odds`: the null answer's score less the answer's (SQuAD v2.0 models answer "" above a threshold
    chosen on dev; `finetune qa` reports it as best_f1_thresh). Long contexts are read in overlapping windows."""

    def __init__(self, model, tokenizer, max_seq_length: int):
        if max_seq_length < 16:
            raise PredictError(f"--max-seq-length: {max_seq_length} leaves no room for a question and a context "
                               "window; give at least 16")
        self.model, self.tokenizer, self.max_seq_length = model, tokenizer, max_seq_length
        self.max_query_length = max_seq_length // 2
        self.doc_stride = max_seq_length // 4  # less than the room a question of max_query_length leaves

    def prepare(self, text: str):
        from encoderkit.data.squad import QAExample

        row = _json_object(text, ("question", "context"))
        if not all(isinstance(row[key], str) and row[key].strip() for key in ("question", "context")):
            raise LineError("question and context must be non-empty texts")
        return QAExample("", row["question"], row["context"], [])

    def run(self, examples: list) -> list[dict]:
        from encoderkit.data.squad import build_features
        from encoderkit.data.squad_eval import answers_from_logits
        from encoderkit.train.evaluate import span_logits

        features = build_features(examples, self.tokenizer, self.max_seq_length, self.doc_stride,
                                  self.max_query_length, training=False)
        start, end = span_logits(self.model, features.encoded, len(features))
        predictions = answers_from_logits([e.context for e in examples], features.example_index, features.offsets,
                                          start, end, version_2=True)
        return [{"answer": p.text, "score": p.probability, "start": p.span[0], "end": p.span[1],
                 "null_odds": p.null_odds} for p in predictions]

    @staticmethod
    def render(text: str, answer: dict) -> str:
        return f"{answer['answer']}\t{answer['score']:.4f}\t{answer['start']}:{answer['end']}\n"


class ChoiceScorer:
    """A multiple-choice head's answer to a JSON line {"context", "choices"}: each choice's probability
    (softmax across the choices, `scores`) and the most probable one's index (`label`)."""

    def __init__(self, model, tokenizer, max_seq_length: int):
        self.model, self.tokenizer, self.max_seq_length = model, tokenizer, max_seq_length

    def prepare(self, text: str):
        from encoderkit.data.choice import ChoiceExample

        row = _json_object(text, ("context", "choices"))
        choices = row["choices"]
        if not isinstance(row["context"], str) or not isinstance(choices, list) or not choices or \
                not all(isinstance(choice, str) for choice in choices):
            raise LineError("context must be a text and choices a non-empty list of texts")
        return ChoiceExample("", row["context"], choices, None)

    def run(self, examples: list) -> list[dict]:
        from encoderkit.data.choice import encode_choices

        answers = []
        for example in examples:  # each its own batch: examples may have different numbers of choices
            batch = next(iter_batches(encode_choices([example], self.tokenizer, self.max_seq_length), 1, False))
            with torch.inference_mode():
                scores = self.model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])[0]
            probabilities = scores.float().softmax(-1)
            answers.append({"label": int(probabilities.argmax()), "scores": probabilities.tolist()})
        return answers

    @staticmethod
    def render(text: str, answer: dict) -> str:
        return f"{answer['label']}\t{' '.join(f'{score:.4f}' for score in answer['scores'])}\n"


# The heads whose models answer JSON lines, by the architecture suffix config.json names.
JSON_ANSWERS = {"ForQuestionAnswering": ("question_answering", QuestionAnswerer),
                "ForMultipleChoice": ("multiple_choice", ChoiceScorer)}


def _json_answerer(model_dir: Path, max_seq_length: int):
    """The answerer of a question-answering or multiple-choice model dir; None for any other dir."""
    from encoderkit.models.load import load_model, max_tokens

    if not (model_dir / "config.json").is_file():
        return None
    try:
        architectures = json.loads((model_dir / "config.json").read_text()).get("architectures") or []
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None  # load_classifier says what is wrong with it
    for suffix, (head, answerer) in JSON_ANSWERS.items():
        if any(name.endswith(suffix) for name in architectures):
            model = load_model(model_dir, head).eval()
            return answerer(model, Tokenizer.load(model_dir), min(max_seq_length, max_tokens(model)))
    return None


def run(model_dir: Path, lines: Iterable[str], fmt: str, task: str | None = None, max_seq_length: int = 128,
        out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Answer each stdin line; returns the number of lines that failed."""
    if fmt not in FORMATS:
        raise PredictError(f"--format: '{fmt}' is not one of: {', '.join(FORMATS)}")
    answerer = _json_answerer(model_dir, max_seq_length)
    if answerer is not None:
        return answer_lines(lines, lambda text: answerer.run([answerer.prepare(text)])[0], answerer.render, fmt,
                            out, err)
    glue_task = get_task(task) if task else None
    model, positions = load_classifier(model_dir)
    tokenizer = Tokenizer.load(model_dir)
    if glue_task is not None:
        with torch.inference_mode():  # the head's width, which the integer-only model does not record
            outputs = model(torch.tensor([[tokenizer.cls_id, tokenizer.sep_id]])).shape[-1]
        if outputs != glue_task.num_labels:
            raise PredictError(f"--task: {glue_task.name} has {glue_task.num_labels} output(s), the model {outputs}")
    labels = glue_task.labels if glue_task else None
    max_seq_length = min(max_seq_length, positions)
    return answer_lines(lines, lambda text: classify(model, tokenizer, text, max_seq_length, labels), _render,
                        fmt, out, err)
