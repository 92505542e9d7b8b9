"""Multiple-choice data: examples of a context and its choices, encoded one (context, choice) pair per choice.

Readers, by file:
- SWAG-style CSV (`.csv`): `sent1`, `sent2`, `ending0`..`endingK`, `label` (empty or absent on a test set),
  an optional `id`; each choice is "sent2 ending", paired with sent1, as transformers' run_swag.py builds them.
- RACE-style JSON (a `.json` / `.txt` file or a directory of them, as the RACE download has them): `article`,
  `questions`, `options`, `answers` (letters), `id`; each choice is the question with the option in place of
  its "_" blank, or the question followed by the option, paired with the article (ALBERT's run_race).
- JSON Lines (`.jsonl`): `context`, `choices` (a list), `label` (index; absent on a test set), an optional `id`.
Any number of choices, the same for every example of a file.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from encoderkit.data.classification import EncodedExamples, encode_examples
from encoderkit.errors import UserError
from encoderkit.files import jsonl_rows


class ChoiceDataError(UserError):
    """A multiple-choice file that cannot be used: the message names the file and the example."""


@dataclass
class ChoiceExample:
    id: str
    context: str
    choices: list[str]
    label: int | None  # index of the right choice; None on a test set


def load_examples(source: str | Path) -> list[ChoiceExample]:
    path = Path(source)
    if path.is_dir():
        examples = [e for file in sorted(path.rglob("*")) if file.suffix in (".json", ".txt") for e in _read_race(file)]
        if not examples:
            raise ChoiceDataError(f"{path}: no RACE .json or .txt files in this directory")
    elif not path.is_file():
        raise ChoiceDataError(f"{path}: no such file (give a SWAG .csv, a RACE .json file or directory, or a .jsonl)")
    elif path.suffix == ".csv":
        examples = _read_swag(path)
    elif path.suffix == ".jsonl":
        examples = _read_jsonl(path)
    else:
        examples = _read_race(path)
    _check(examples, path)
    return examples


def _read_swag(path: Path) -> list[ChoiceExample]:
    with path.open(encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file)
        columns = reader.fieldnames or []
        endings = sorted((c for c in columns if re.fullmatch(r"ending\d+", c)), key=lambda c: int(c[6:]))
        missing = [c for c in ("sent1", "sent2") if c not in columns]
        if missing or not endings or endings != [f"ending{i}" for i in range(len(endings))]:
            raise ChoiceDataError(f"{path}: a SWAG file needs the columns sent1, sent2, ending0, ending1, ...; "
                                  f"it has {', '.join(columns) or 'none'}")
        examples = []
        for number, row in enumerate(reader, 2):  # line 1 is the header
            label = (row.get("label") or "").strip()
            if label and not label.isdigit():
                raise ChoiceDataError(f"{path}:{number}: label {label!r} is not a choice index")
            examples.append(ChoiceExample(row.get("id") or str(number - 2), row["sent1"],
                                          [f"{row['sent2']} {row[ending]}" for ending in endings],
                                          int(label) if label else None))
    return examples


def _read_race(path: Path) -> list[ChoiceExample]:
    try:
        passage = json.loads(path.read_text(encoding="utf-8"))
        article, questions, options, answers = (passage[k] for k in ("article", "questions", "options", "answers"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ChoiceDataError(f"{path}: not valid JSON ({err})") from None
    except (KeyError, TypeError):
        raise ChoiceDataError(f"{path}: a RACE file is a JSON object with article, questions, options and "
                              "answers") from None
    if not len(questions) == len(options) == len(answers):
        raise ChoiceDataError(f"{path}: {len(questions)} questions, {len(options)} option lists and "
                              f"{len(answers)} answers; they must match")
    examples = []
    for i, (question, choices, answer) in enumerate(zip(questions, options, answers, strict=True)):
        where = f"{path}, question {i}"
        if not isinstance(answer, str) or len(answer) != 1 or not 0 <= ord(answer) - ord("A") < len(choices):
            raise ChoiceDataError(f"{where}: answer {answer!r} is not the letter of one of its "
                                  f"{len(choices)} options")
        texts = [question.replace("_", option) if "_" in question else f"{question} {option}" for option in choices]
        examples.append(ChoiceExample(f"{passage.get('id', path.stem)}-{i}", article, texts, ord(answer) - ord("A")))
    return examples


def _read_jsonl(path: Path) -> list[ChoiceExample]:
    examples = []
    for number, where, row in jsonl_rows(path, ChoiceDataError):
        if not isinstance(row, dict) or not isinstance(row.get("context"), str) or \
                not isinstance(row.get("choices"), list) or not all(isinstance(c, str) for c in row["choices"]):
            raise ChoiceDataError(f"{where}: expected a JSON object with a context (text) and choices (texts)")
        label = row.get("label")
        if label is not None and not isinstance(label, int):
            raise ChoiceDataError(f"{where}: label {label!r} is not a choice index")
        examples.append(ChoiceExample(str(row.get("id", number - 1)), row["context"], row["choices"], label))
    return examples


def _check(examples: list[ChoiceExample], source: Path) -> None:
    """The same number of choices (at least 2) everywhere, labels among them, on all examples or none."""
    if not examples:
        raise ChoiceDataError(f"{source}: no examples")
    count = len(examples[0].choices)
    for example in examples:
        if len(example.choices) != count or count < 2:
            raise ChoiceDataError(f"{source}: example {example.id!r} has {len(example.choices)} choices, the first "
                                  f"example {count}; every example needs the same number, at least 2")
        if example.label is not None and not 0 <= example.label < count:
            raise ChoiceDataError(f"{source}: example {example.id!r}: label {example.label} is not one of its "
                                  f"{count} choices (0..{count - 1})")
    if len({example.label is None for example in examples}) > 1:
        raise ChoiceDataError(f"{source}: some examples have a label and some do not")


class _Pair(NamedTuple):
    text_a: str
    text_b: str
    label: None = None


def encode_choices(examples: list[ChoiceExample], tokenizer, max_seq_length: int) -> EncodedExamples:
    """`[CLS] context [SEP] choice [SEP]` for each choice, truncated longest-first: ids [N, C, max_seq_length],
    lengths [N, C], labels [N] (None on a test set)."""
    count, choices = len(examples), len(examples[0].choices)
    pairs = [_Pair(example.context, choice) for example in examples for choice in example.choices]
    flat = encode_examples(pairs, tokenizer, max_seq_length)
    labels = None if examples[0].label is None else torch.tensor([example.label for example in examples])
    return EncodedExamples(flat.input_ids.view(count, choices, -1), flat.token_type_ids.view(count, choices, -1),
                           flat.lengths.view(count, choices), labels)
