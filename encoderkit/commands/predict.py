"""`encoderkit predict`: the label and its probability (or, for a regression head, the score) of each stdin line,
from a fine-tuned classifier: a Hugging Face model dir (ALBERT, ELECTRA, BERT, I-BERT) or the integer-only model
that `encoderkit quantize` writes (its integer/ dir), which runs without any float model.

A line with a tab is a pair: the text before the tab and the text after it (as GLUE's pair tasks).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

import torch

from encoderkit.commands.lines import LineError, answer_lines
from encoderkit.data.classification import encode_examples, iter_batches
from encoderkit.data.glue import GlueExample, get_task
from encoderkit.errors import UserError

FORMATS = ("text", "jsonl")
CLASSIFIER = "sequence_classification"
TAGGER = "token_classification"
MULTI_LABEL_THRESHOLD = 0.5  # a multi-label head's classes above this probability (finetune classify's default)
HEADS = {"ForSequenceClassification": CLASSIFIER, "ForTokenClassification": TAGGER}  # architecture suffix -> head
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
    head = next((HEADS[suffix] for name in config.get("architectures", []) for suffix in HEADS
                 if name.endswith(suffix)), None)
    if head is None:
        raise PredictError(f"--model: {model_dir} holds no classifier (architectures: {config.get('architectures')}); "
                           "give a dir written by `encoderkit finetune` or `encoderkit quantize`")
    try:
        model = hf_format.load_pretrained(model_dir, head)
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
    if getattr(getattr(model, "config", None), "problem_type", None) == "multi_label_classification":
        chosen = [i for i, p in enumerate(logits.sigmoid().tolist()) if p > MULTI_LABEL_THRESHOLD]
        return {"labels": [labels[i] if labels else i for i in chosen]}
    probability, index = logits.softmax(-1).max(-1)
    return {"label": labels[int(index)] if labels else int(index), "score": round(float(probability), 5)}


def tag_words(model, tokenizer, text: str, max_seq_length: int) -> dict:
    """{words, tags}: the line's whitespace-separated words and each one's tag (config.json's names); a line
    longer than the model's positions is tagged in windows."""
    from encoderkit.data.tokens import TaggedSentence, encode_tagged
    from encoderkit.train.evaluate import predict_tags

    words = text.split()
    encoded = encode_tagged([TaggedSentence(words, None, "stdin")], tokenizer, max_seq_length, None)
    names = model.config.label_names()
    return {"words": words, "tags": [names[i] for i in predict_tags(model, encoded, len(encoded))[0]]}


def _render_tags(text: str, result: dict) -> str:
    return " ".join(f"{word}/{tag}" for word, tag in zip(result["words"], result["tags"], strict=True)) + "\n"


def _render(text: str, result: dict) -> str:
    if "labels" in result:  # multi-label
        return f"{','.join(map(str, result['labels']))}\t{text}\n"
    if "label" in result:
        return f"{result['label']}\t{result['score']:.4f}\t{text}\n"
    return f"{result['score']:.4f}\t{text}\n"


def run(model_dir: Path, lines: Iterable[str], fmt: str, task: str | None = None, max_seq_length: int = 128,
        out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Answer each stdin line; returns the number of lines that failed."""
    from encoderkit.data.tokenizer import Tokenizer

    if fmt not in FORMATS:
        raise PredictError(f"--format: '{fmt}' is not one of: {', '.join(FORMATS)}")
    glue_task = get_task(task) if task else None
    model, positions = load_classifier(model_dir)
    tokenizer = Tokenizer.load(model_dir)
    if glue_task is not None:
        with torch.inference_mode():  # the head's width, which the integer-only model does not record
            outputs = model(torch.tensor([[tokenizer.cls_id, tokenizer.sep_id]])).shape[-1]
        if outputs != glue_task.num_labels:
            raise PredictError(f"--task: {glue_task.name} has {glue_task.num_labels} output(s), the model {outputs}")
    max_seq_length = min(max_seq_length, positions)
    if getattr(model, "config", None) is not None and model.config.num_labels > 1 and glue_task is None:
        named = model.config.label_names()  # config.json's id2label (LABEL_<i> when the run named none)
        labels = None if named == [f"LABEL_{i}" for i in range(len(named))] else tuple(named)
    else:
        labels = glue_task.labels if glue_task else None
    if type(model).__name__.endswith("ForTokenClassification"):
        return answer_lines(lines, lambda text: tag_words(model, tokenizer, text, max_seq_length), _render_tags,
                            fmt, out, err)
    return answer_lines(lines, lambda text: classify(model, tokenizer, text, max_seq_length, labels), _render,
                        fmt, out, err)
