"""`encoderkit predict`: the answer of a fine-tuned model for each stdin line. The dir's head picks the answer
(ANSWERS): a sequence classifier gives the label and its probability (a regression head: the score; a multi-label
head: every label above MULTI_LABEL_THRESHOLD), a token classifier each word's tag; from a
Hugging Face model dir (ALBERT, ELECTRA, BERT, RoBERTa, I-BERT) or the integer-only model that `encoderkit quantize`
writes (its integer/ dir), which runs without any float model.

A line with a tab is a pair: the text before the tab and the text after it (as GLUE's pair tasks).
A question-answering model (`finetune qa`) answers JSON lines {"question", "context"}; a multiple-choice model
(`finetune choice`) scores JSON lines {"context", "choices"}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import BinaryIO, TextIO

import torch

from encoderkit.commands.lines import (
    DEFAULT_BATCH_SIZE,
    InferenceOptionError,
    LineError,
    LineTask,
    Prepared,
    announce_if_slow,
    answer_stream,
    check_options,
    resolve_device,
)
from encoderkit.data.classification import encode_examples, iter_batches
from encoderkit.data.glue import GlueExample, get_task
from encoderkit.errors import UserError

MULTI_LABEL_THRESHOLD = 0.5  # a multi-label head's classes above this probability (finetune classify's default)


class PredictError(UserError):
    """A model directory or option that `encoderkit predict` cannot use."""


class SequenceClassifier:
    """The answer of a sequence-classification head: {label, score} (the most probable class, its name when
    `labels` are given, and its probability), or {score} for a regression head."""

    def __init__(self, model, tokenizer, max_seq_length: int, labels: tuple[str, ...] | None):
        self.model, self.tokenizer, self.max_seq_length, self.labels = model, tokenizer, max_seq_length, labels
        self.device = _device(model)

    def prepare(self, text: str) -> Prepared:
        text_a, tab, text_b = text.partition("\t")
        if "\t" in text_b:
            raise LineError("more than one tab: give a text, or two texts separated by one tab")
        if not text_a.strip() or (tab and not text_b.strip()):
            raise LineError("an empty text before or after the tab")
        example = GlueExample(text_a, text_b if tab else None, label=None, id="")
        length = sum(len(self.tokenizer.encode(part)) + 1 for part in (text_a, text_b) if part) + 1
        note = None
        if length > self.max_seq_length:
            note = f"{length} tokens, cut to {self.max_seq_length} (--max-seq-length, or the model's positions)"
        return Prepared(min(length, self.max_seq_length), example, note)

    def run(self, examples: list[GlueExample]) -> list[dict]:
        encoded = encode_examples(examples, self.tokenizer, self.max_seq_length)
        batch = next(iter_batches(encoded, len(examples), shuffle=False))
        with torch.inference_mode():
            logits = self.model(*(batch[k].to(self.device) for k in ("input_ids", "attention_mask",
                                                                      "token_type_ids"))).float()
        if logits.shape[-1] == 1:
            return [{"score": score} for score in logits[:, 0].tolist()]
        if getattr(getattr(self.model, "config", None), "problem_type", None) == "multi_label_classification":
            chosen = [[i for i, p in enumerate(row) if p > MULTI_LABEL_THRESHOLD] for row in logits.sigmoid().tolist()]
            return [{"labels": [self.labels[i] if self.labels else i for i in row]} for row in chosen]
        probabilities, indices = logits.softmax(-1).max(-1)
        return [{"label": self.labels[index] if self.labels else index, "score": probability}
                for probability, index in zip(probabilities.tolist(), indices.tolist())]

    @staticmethod
    def render(text: str, answer: dict) -> str:
        if "labels" in answer:  # multi-label
            return f"{','.join(map(str, answer['labels']))}\t{text}\n"
        if "label" in answer:
            return f"{answer['label']}\t{answer['score']:.4f}\t{text}\n"
        return f"{answer['score']:.4f}\t{text}\n"


class WordTagger:
    """The answer of a token-classification head: {words, tags}, the line's whitespace-separated words and each
    one's tag (config.json's names, else its index); a line longer than the model's positions is tagged in windows."""

    def __init__(self, model, tokenizer, max_seq_length: int, labels: tuple[str, ...] | None):
        self.model, self.tokenizer, self.max_seq_length, self.labels = model, tokenizer, max_seq_length, labels

    def prepare(self, text: str) -> Prepared:
        words = text.split()
        return Prepared(sum(map(len, self.tokenizer.encode_words(words))), words, None)

    def run(self, lines: list[list[str]]) -> list[dict]:
        from encoderkit.data.tokens import TaggedSentence, encode_tagged
        from encoderkit.train.evaluate import predict_tags

        encoded = encode_tagged([TaggedSentence(words, None, "stdin") for words in lines], self.tokenizer,
                                self.max_seq_length, None)
        with torch.inference_mode():
            tags = predict_tags(self.model, encoded, len(encoded))
        return [{"words": words, "tags": [self.labels[i] if self.labels else i for i in row]}
                for words, row in zip(lines, tags, strict=True)]

    @staticmethod
    def render(text: str, answer: dict) -> str:
        return " ".join(f"{word}/{tag}" for word, tag in zip(answer["words"], answer["tags"], strict=True)) + "\n"


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

    def __init__(self, model, tokenizer, max_seq_length: int, labels=None):
        if max_seq_length < 16:
            raise PredictError(f"--max-seq-length: {max_seq_length} leaves no room for a question and a context "
                               "window; give at least 16")
        self.model, self.tokenizer, self.max_seq_length = model, tokenizer, max_seq_length
        self.max_query_length = max_seq_length // 2
        self.doc_stride = max_seq_length // 4  # less than the room a question of max_query_length leaves

    def prepare(self, text: str) -> Prepared:
        from encoderkit.data.squad import QAExample

        row = _json_object(text, ("question", "context"))
        if not all(isinstance(row[key], str) and row[key].strip() for key in ("question", "context")):
            raise LineError("question and context must be non-empty texts")
        return Prepared(len(row["question"]) + len(row["context"]), QAExample("", row["question"], row["context"], []))

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

    def __init__(self, model, tokenizer, max_seq_length: int, labels=None):
        self.model, self.tokenizer, self.max_seq_length = model, tokenizer, max_seq_length
        self.device = _device(model)

    def prepare(self, text: str) -> Prepared:
        from encoderkit.data.choice import ChoiceExample

        row = _json_object(text, ("context", "choices"))
        choices = row["choices"]
        if not isinstance(row["context"], str) or not isinstance(choices, list) or not choices or \
                not all(isinstance(choice, str) for choice in choices):
            raise LineError("context must be a text and choices a non-empty list of texts")
        return Prepared(len(row["context"]) + sum(map(len, choices)), ChoiceExample("", row["context"], choices, None))

    def run(self, examples: list) -> list[dict]:
        from encoderkit.data.choice import encode_choices

        by_count: dict[int, list[int]] = {}  # a forward pass takes examples with the same number of choices
        for i, example in enumerate(examples):
            by_count.setdefault(len(example.choices), []).append(i)
        answers: list[dict | None] = [None] * len(examples)
        for rows in by_count.values():
            encoded = encode_choices([examples[i] for i in rows], self.tokenizer, self.max_seq_length)
            batch = next(iter_batches(encoded, len(rows), False))
            with torch.inference_mode():
                scores = self.model(*(batch[k].to(self.device) for k in ("input_ids", "attention_mask",
                                                                         "token_type_ids")))  # (B, choices)
            for i, probabilities in zip(rows, scores.float().softmax(-1), strict=True):
                answers[i] = {"label": int(probabilities.argmax()), "scores": probabilities.tolist()}
        return answers

    @staticmethod
    def render(text: str, answer: dict) -> str:
        return f"{answer['label']}\t{' '.join(f'{score:.4f}' for score in answer['scores'])}\n"


# The head of a model dir -> its answer.
ANSWERS = {"sequence_classification": SequenceClassifier, "token_classification": WordTagger,
           "question_answering": QuestionAnswerer, "multiple_choice": ChoiceScorer}


def _device(model) -> torch.device:
    tensor = next(model.parameters(), None)
    return (tensor if tensor is not None else next(model.buffers())).device  # the integer model has buffers only


def load_for_predict(model_dir: Path, device: torch.device, dtype: torch.dtype):
    """The model of `model_dir` with a head `predict` answers, on `device` in `dtype`."""
    from encoderkit.models.load import is_integer_dir, load_model, read_model_config, saved_head, what_it_holds

    _, head = saved_head(model_dir)
    if head not in ANSWERS:
        holds = "; it is an integer-only encoder" if is_integer_dir(model_dir) else \
            what_it_holds(model_dir, read_model_config(model_dir))
        raise PredictError(f"--model: {model_dir} holds no classifier or other head that `encoderkit predict` "
                           f"answers ({', '.join(ANSWERS)}){holds}")
    if is_integer_dir(model_dir):
        if device.type != "cpu" or dtype != torch.float32:
            raise InferenceOptionError("--device/--dtype: the integer-only model runs on the CPU in integers; "
                                       "leave --device cpu and --dtype fp32")
        return load_model(model_dir, head, require_head=True), head
    with announce_if_slow(f"loading {model_dir} ..."):
        return load_model(model_dir, head, require_head=True).eval().to(device=device, dtype=dtype), head


def _prepare_integer_kernels(model) -> None:
    """Run the integer model once on two short sequences, so its kernels are built (or read from the
    compile cache) before the first line, with a status line if that takes a while."""
    from encoderkit.models.ibert.kernels import kernel_cache_dir

    with announce_if_slow(f"preparing the integer-only kernels (compiled once, then cached in {kernel_cache_dir()})"
                          " ..."):
        model(torch.ones((2, 3), dtype=torch.long), torch.tensor([[1, 1, 1], [1, 1, 0]]))


def run(model_dir: Path, stream: BinaryIO, fmt: str, task: str | None = None, max_seq_length: int = 128,
        out: TextIO = sys.stdout, err: TextIO = sys.stderr, batch_size: int = DEFAULT_BATCH_SIZE,
        device: str = "cpu", dtype: str = "fp32") -> int:
    """Answer each line of the binary `stream`; returns the number of lines that failed."""
    from encoderkit.data.tokenizer import Tokenizer
    from encoderkit.models.load import is_integer_dir, label_names, max_tokens, vocab_size

    check_options(fmt, batch_size)
    glue_task = get_task(task) if task else None
    model, head = load_for_predict(model_dir, *resolve_device(device, dtype))
    tokenizer = Tokenizer.load(model_dir, vocab_size(model))
    if is_integer_dir(model_dir):  # after the tokenizer, so a damaged dir fails before any compiling
        _prepare_integer_kernels(model)
    if glue_task is not None:
        with torch.inference_mode():  # the head's width, which the integer-only model does not record
            ids = torch.tensor([[tokenizer.cls_id, tokenizer.sep_id]], device=_device(model))
            outputs = model(ids).shape[-1]
        if outputs != glue_task.num_labels:
            raise PredictError(f"--task: {glue_task.name} has {glue_task.num_labels} output(s), the model {outputs}")
    if glue_task is not None:
        labels = glue_task.labels
    else:  # config.json's id2label (an integer-only dir: its description's), unless the run named no classes
        named = label_names(model)
        labels = None if named == [f"LABEL_{i}" for i in range(len(named))] else tuple(named)
    answer = ANSWERS[head](model, tokenizer, min(max_seq_length, max_tokens(model)), labels)
    return answer_stream(stream, LineTask(answer.prepare, answer.run, answer.render), fmt, out, err, batch_size)

