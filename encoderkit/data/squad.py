"""Extractive question answering data: SQuAD v1.1 / v2.0 examples and the features a model reads.

Examples come from SQuAD-format JSON (`data` -> paragraphs -> qas; v2.0's `is_impossible`, whose
`plausible_answers` are not gold answers), JSON Lines (`id`, `question`, `context`, `answers` as
{"text": [...], "answer_start": [...]} or a list of {"text", "answer_start"}), or a hub dataset (`squad`,
`squad_v2`). Features are built as transformers' run_qa.py builds them (prepare_train_features /
prepare_validation_features): [CLS] question [SEP] context window [SEP] (RoBERTa's tokenizer: <s> question
</s></s> context window </s>, one token type), the question cut to
max_query_length tokens (the original run_squad's rule), the context in windows of what is left of
max_seq_length that overlap by doc_stride tokens, the answer's start and end token found through the
tokenizer's character offsets, and a window that does not hold the whole answer (or an unanswerable
question) pointing both at [CLS].
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from encoderkit.data.classification import EncodedExamples
from encoderkit.data.hub import load_split
from encoderkit.errors import UserError
from encoderkit.files import jsonl_rows

HUB_DATASETS = ("squad", "squad_v2")
Span = tuple[int, int]


class QADataError(UserError):
    """A question-answering file or dataset that cannot be used: the message names the file and the example."""


class Answer(NamedTuple):
    text: str
    start: int  # character offset in the context


@dataclass
class QAExample:
    id: str
    question: str
    context: str
    answers: list[Answer]  # gold answers; none for an unanswerable (v2.0) question
    title: str = ""


# ---- reading ------------------------------------------------------------------------------------


def load_examples(source: str | Path) -> tuple[list[QAExample], bool]:
    """The examples of a SQuAD JSON file, a JSON Lines file or a hub dataset split ("squad_v2:validation"), and
    whether they are SQuAD v2.0 (the file says so, or some question has no answer)."""
    if str(source).split(":")[0] in HUB_DATASETS and not Path(source).exists():
        examples, version_2 = _load_hub(str(source)), str(source).startswith("squad_v2")
    else:
        path = Path(source)
        if not path.is_file():
            raise QADataError(f"{path}: no such file (give a SQuAD .json file, a .jsonl file, or one of "
                              f"{', '.join(HUB_DATASETS)} with a split, e.g. squad:validation)")
        if path.suffix == ".jsonl":
            examples, version_2 = _read_jsonl(path), False
        else:
            examples, version_2 = _read_squad_json(path)
    _check(examples, str(source))
    return examples, version_2 or any(not example.answers for example in examples)


def _read_squad_json(path: Path) -> tuple[list[QAExample], bool]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        articles = document["data"]
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise QADataError(f"{path}: not valid JSON ({err})") from None
    except (KeyError, TypeError):
        raise QADataError(f"{path}: not a SQuAD file (no top-level \"data\" list of articles)") from None
    examples = []
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            for q, qa in enumerate(paragraph.get("qas", [])):
                where = f"{path}: data[{a}].paragraphs[{p}].qas[{q}]"
                gold = [] if qa.get("is_impossible") else qa.get("answers", [])  # plausible_answers are not gold
                answers = [_answer(answer, where) for answer in gold]
                examples.append(QAExample(_required(qa, "id", where), _required(qa, "question", where),
                                          _required(paragraph, "context", f"{path}: data[{a}].paragraphs[{p}]"),
                                          answers, article.get("title", "")))
    return examples, str(document.get("version", "")).startswith("v2")


def _read_jsonl(path: Path) -> list[QAExample]:
    examples = []
    for _, where, row in jsonl_rows(path, QADataError):
        if not isinstance(row, dict):
            raise QADataError(f"{where}: expected a JSON object with id, question, context, answers")
        examples.append(_example_from_row(row, where))
    return examples


def _example_from_row(row: dict, where: str) -> QAExample:
    """A JSON Lines or hub row: answers as {"text": [...], "answer_start": [...]} or a list of answers."""
    answers = row.get("answers") or []
    if isinstance(answers, dict):
        texts, starts = answers.get("text", []), answers.get("answer_start", [])
        if len(texts) != len(starts):
            raise QADataError(f"{where}: answers has {len(texts)} texts but {len(starts)} answer_start values")
        answers = [{"text": text, "answer_start": start} for text, start in zip(texts, starts, strict=True)]
    return QAExample(str(_required(row, "id", where)), _required(row, "question", where),
                     _required(row, "context", where), [_answer(answer, where) for answer in answers],
                     row.get("title", ""))


def _load_hub(source: str) -> list[QAExample]:
    name, _, split = source.partition(":")
    split = split or "train"
    rows = load_split(name, split, QADataError, "give SQuAD .json or .jsonl files instead")
    return [_example_from_row(row, f"{name} {split}, row {i}") for i, row in enumerate(rows)]


def _required(row: dict, key: str, where: str):
    if not isinstance(row, dict) or row.get(key) in (None, ""):
        raise QADataError(f"{where}: no {key!r}; every question needs an id, a question and a context")
    return row[key]


def _answer(answer, where: str) -> Answer:
    if not isinstance(answer, dict) or not isinstance(answer.get("text"), str) or \
            not isinstance(answer.get("answer_start"), int):
        raise QADataError(f"{where}: an answer needs a text and an integer answer_start, got {answer!r}")
    return Answer(answer["text"], answer["answer_start"])


def _check(examples: list[QAExample], source: str) -> None:
    """Ids are unique (predictions.json is keyed by them) and each answer lies inside its context."""
    seen = set()
    for example in examples:
        if example.id in seen:
            raise QADataError(f"{source}: question id {example.id!r} appears twice; ids must be unique")
        seen.add(example.id)
        for answer in example.answers:
            end = answer.start + len(answer.text)
            if answer.start < 0 or end > len(example.context):
                raise QADataError(f"{source}: question {example.id!r}: answer {answer.text!r} at characters "
                                  f"{answer.start}..{end}, but the context has {len(example.context)} characters")


def answer_found(example: QAExample) -> bool:
    """Whether the first answer's text is in the context at its answer_start (unanswerable questions too).

    The original run_squad skips training examples where it is not ("Could not find answer").
    """
    if not example.answers:
        return True
    answer = example.answers[0]
    return example.context[answer.start : answer.start + len(answer.text)] == answer.text


# ---- features -----------------------------------------------------------------------------------


@dataclass
class QAFeatures:
    """One feature per context window. `encoded.labels` holds (start, end) token positions for training."""

    encoded: EncodedExamples
    example_index: list[int]  # the example each feature comes from
    offsets: list[list[Span | None]]  # per token of each feature: its span in the context, None outside it

    def __len__(self) -> int:
        return len(self.example_index)


def window_starts(length: int, room: int, doc_stride: int) -> list[int]:
    """Where each window of `room` context tokens starts: consecutive windows share doc_stride tokens
    (transformers' `stride` of an overflowing tokenization); the last one reaches the end."""
    starts = [0]
    while starts[-1] + room < length:
        starts.append(starts[-1] + room - doc_stride)
    return starts


def build_features(examples: list[QAExample], tokenizer, max_seq_length: int, doc_stride: int,
                   max_query_length: int, training: bool) -> QAFeatures:
    """The windows of every example, padded to max_seq_length; with `training`, their answer positions.

    `tokenizer` needs encode, encode_with_offsets, cls_id, sep_id, pad_id; `pair_separators` and `second_type_id`
    when its pairs are not BERT's (see data.tokenizer.Tokenizer).
    """
    separators = getattr(tokenizer, "pair_separators", 1)
    second_type_id = getattr(tokenizer, "second_type_id", 1)
    rows, context_starts, labels, example_index, all_offsets = [], [], [], [], []
    for index, example in enumerate(examples):
        question = tokenizer.encode(example.question.lstrip())[:max_query_length]  # run_qa strips the left
        context, context_offsets = tokenizer.encode_with_offsets(example.context)
        room = max_seq_length - len(question) - 2 - separators
        if room <= doc_stride:
            raise ValueError(f"max_seq_length {max_seq_length} leaves {room} context tokens a window after a "
                             f"{len(question)}-token question; doc_stride ({doc_stride}) must be less")
        first = len(question) + 1 + separators  # the window's first token, after [CLS] question [SEP]
        for start in window_starts(len(context), room, doc_stride):
            window = range(start, min(start + room, len(context)))
            rows.append([tokenizer.cls_id, *question, *[tokenizer.sep_id] * separators,
                         *context[start : window.stop], tokenizer.sep_id])
            context_starts.append(first)
            offsets = [None] * first + [context_offsets[i] for i in window] + [None]
            all_offsets.append(offsets)
            example_index.append(index)
            if training:
                labels.append(answer_positions(example, offsets, first, first + len(window)))
    input_ids = torch.full((len(rows), max_seq_length), tokenizer.pad_id, dtype=torch.int32)
    token_type_ids = torch.zeros((len(rows), max_seq_length), dtype=torch.int8)
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
    for r, (row, first) in enumerate(zip(rows, context_starts, strict=True)):
        input_ids[r, : len(row)] = torch.tensor(row, dtype=torch.int32)
        token_type_ids[r, first : len(row)] = second_type_id
    encoded = EncodedExamples(input_ids, token_type_ids, lengths, torch.tensor(labels) if training else None)
    return QAFeatures(encoded, example_index, all_offsets)


def answer_positions(example: QAExample, offsets: list[Span | None], first: int, stop: int) -> tuple[int, int]:
    """(start, end) token of the first answer in the window of tokens first..stop-1; (0, 0), the [CLS] token,
    for an unanswerable question or a window that does not hold the whole answer (run_qa's rule)."""
    if not example.answers or stop == first:
        return 0, 0
    start_char = example.answers[0].start
    end_char = start_char + len(example.answers[0].text)
    if not (offsets[first][0] <= start_char and offsets[stop - 1][1] >= end_char):
        return 0, 0
    start = max(t for t in range(first, stop) if offsets[t][0] <= start_char)
    end = min(t for t in range(first, stop) if offsets[t][1] >= end_char)
    return start, end
