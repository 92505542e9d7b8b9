"""Token classification data (NER, POS, chunking): tagged sentences from CoNLL-style files, JSON Lines or a hub
dataset; words aligned to subword pieces; windows for sentences longer than the model's positions.

Alignment follows transformers' `is_split_into_words` and its run_ner script: each word is encoded on its own
(WordPiece and SentencePiece then give the pieces they give inside a sentence; byte-level BPE encodes it with the
space before it, as run_ner's RoBERTa tokenizer with add_prefix_space does), the word's tag goes on its first
piece and the other pieces are left out of the loss (label -100), or with `label_all_pieces` get the tag too
(a B- tag as its I- tag, as run_ner does). A sentence with more pieces than fit between [CLS] and [SEP] is split
into consecutive windows at word boundaries, so every word is tagged once; only a single word longer than a
whole window loses its last pieces.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from encoderkit.data.classification import EncodedExamples
from encoderkit.data.hub import load_split
from encoderkit.errors import UserError
from encoderkit.files import jsonl_rows

IGNORED = -100  # the label of positions outside the loss (torch's cross_entropy ignore_index default)
DOCSTART = "-DOCSTART-"


class TokenDataError(UserError):
    """A tagged file or dataset that cannot be read; the message names the file and line."""


@dataclass
class TaggedSentence:
    words: list[str]
    tags: list[str] | None  # None when unlabeled
    where: str  # "file:line" of its first word, for messages


# ---- readers ---------------------------------------------------------------------------------------


def read_tagged(path: Path, tag_column: int = -1) -> list[TaggedSentence]:
    """A .jsonl/.json file of {"tokens": [...], "tags": [...]} lines, else a CoNLL-style file."""
    path = Path(path)
    if not path.is_file():
        raise TokenDataError(f"{path}: file not found")
    reader = read_jsonl if path.suffix in (".jsonl", ".json") else read_conll
    sentences = reader(path) if reader is read_jsonl else read_conll(path, tag_column)
    if not sentences:
        raise TokenDataError(f"{path}: no sentences (an empty split)")
    return sentences


def read_conll(path: Path, tag_column: int = -1) -> list[TaggedSentence]:
    """One token per line, whitespace-separated columns (the word first, the tag in `tag_column`), a blank line
    between sentences, -DOCSTART- lines skipped. Every line has as many columns as the file's first one."""
    sentences, words, tags, start, columns = [], [], [], 0, None
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            fields = line.split()
            if not fields or fields[0] == DOCSTART:
                if words:
                    sentences.append(TaggedSentence(words, tags, f"{path}:{start}"))
                words, tags = [], []
                continue
            if columns is None:
                columns = len(fields)
                if not -columns <= tag_column < columns or columns < 2:
                    raise TokenDataError(f"{path}:{number}: {columns} column(s), no tag column {tag_column} "
                                         "(--tag-column counts from 0; -1 is the last)")
            if len(fields) != columns:
                raise TokenDataError(f"{path}:{number}: {len(fields)} columns, the file's first line has {columns}")
            start = start if words else number
            words.append(fields[0])
            tags.append(fields[tag_column])
    if words:
        sentences.append(TaggedSentence(words, tags, f"{path}:{start}"))
    return sentences


def read_jsonl(path: Path) -> list[TaggedSentence]:
    """{"tokens": [...], "tags": [...]} per line (tags may be left out for unlabeled data)."""
    rows = ((row if isinstance(row, dict) else {}, where) for _, where, row in jsonl_rows(path, TokenDataError))
    return [_sentence(row.get("tokens"), row.get("tags"), where) for row, where in rows]


def load_hub_tagged(name: str, split: str, tag_column: str) -> list[TaggedSentence]:
    """A hub dataset's split with a `tokens` column and a tag column (strings, or class indices whose names the
    dataset's features give, as conll2003's ner_tags)."""
    rows = load_split(name, split, TokenDataError, "pass local files instead")
    for column in ("tokens", tag_column):
        if column not in rows.column_names:
            raise TokenDataError(f"{name} ({split}): no column {column!r} (columns: {', '.join(rows.column_names)})")
    feature = rows.features[tag_column]
    names = getattr(getattr(feature, "feature", None), "names", None)
    return [_sentence(row["tokens"], [names[t] for t in row[tag_column]] if names else row[tag_column],
                      f"{name} ({split}) row {i}") for i, row in enumerate(rows)]


def read_tagged_splits(train: Path | None, validation: Path | None, test: Path | None = None, tag_column: int = -1,
                       hub: str | None = None, hub_splits: tuple[str, str, str | None] = ("train", "validation", None),
                       hub_tags: str = "ner_tags") -> dict[str, list[TaggedSentence]]:
    """{split: sentences} from files (CoNLL or JSON Lines) or a hub dataset's named splits."""
    if hub is not None:
        names = dict(zip(("train", "validation", "test"), hub_splits, strict=True))
        return {split: load_hub_tagged(hub, name, hub_tags) for split, name in names.items() if name}
    if train is None or validation is None:
        raise TokenDataError("--train and --validation: both files are needed (or --hub with a dataset name)")
    files = {"train": train, "validation": validation, "test": test}
    return {split: read_tagged(path, tag_column) for split, path in files.items() if path is not None}


def _sentence(words, tags, where: str) -> TaggedSentence:
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and w for w in words):
        raise TokenDataError(f"{where}: 'tokens' must be a non-empty list of words")
    if tags is not None:
        if not isinstance(tags, list) or len(tags) != len(words):
            raise TokenDataError(f"{where}: 'tags' must be a list with one tag per token ({len(words)})")
        tags = [str(tag) for tag in tags]
    return TaggedSentence(words, tags, where)


def tag_vocabulary(train: Sequence[TaggedSentence], others: dict[str, Sequence[TaggedSentence]]) -> list[str]:
    """The training set's tags, sorted (as run_ner); a tag that only another split has is an error."""
    if any(sentence.tags is None for sentence in train):
        raise TokenDataError(f"{next(s.where for s in train if s.tags is None)}: a training sentence has no tags")
    names = sorted({tag for sentence in train for tag in sentence.tags})
    for sentences in others.values():
        check_tags(sentences, names, "the training data")
    return names


def check_tags(sentences: Sequence[TaggedSentence], names: Sequence[str], whose: str) -> None:
    """Every tag of the (labelled) sentences is one of `names`, `whose` tags ("the training data")."""
    known = set(names)
    for sentence in sentences:
        unknown = [tag for tag in sentence.tags or () if tag not in known]
        if unknown:
            raise TokenDataError(f"{sentence.where}: tag {unknown[0]!r} is not in {whose} "
                                 f"(its tags: {', '.join(names)})")


# ---- words -> pieces -> windows -------------------------------------------------------------------


@dataclass
class EncodedTokens(EncodedExamples):
    """Windows of [CLS] pieces [SEP]; labels [N, max_seq_length] (IGNORED off the tagged pieces) or None."""

    labels_per_token: ClassVar[bool] = True
    word_starts: torch.Tensor = None  # [N, max_seq_length] bool: the first piece of each word
    sentence: torch.Tensor = None  # [N] the sentence each window belongs to (a sentence's windows are in order)


def word_pieces(tokenizer, words: Sequence[str]) -> list[list[int]]:
    """Each word's pieces as transformers' is_split_into_words gives them ([UNK] where none)."""
    return [pieces or [tokenizer.unk_id] for pieces in tokenizer.encode_words(list(words))]


def encode_tagged(sentences: Sequence[TaggedSentence], tokenizer, max_seq_length: int,
                  tag_names: Sequence[str] | None, label_all_pieces: bool = False) -> EncodedTokens:
    """Windows of every sentence; labels from `tag_names` (None: leave unlabeled)."""
    if max_seq_length < 3:
        raise ValueError(f"max_seq_length must leave room for [CLS] and [SEP] tokens, got {max_seq_length}")
    capacity = max_seq_length - 2
    tag_id = {name: i for i, name in enumerate(tag_names or ())}
    inside = {i: tag_id.get("I-" + name[2:], i) if name.startswith("B-") else i for name, i in tag_id.items()}
    windows = []  # (sentence index, pieces, labels, starts)
    for index, sentence in enumerate(sentences):
        pieces, labels, starts = [], [], []
        for word, ids in enumerate(word_pieces(tokenizer, sentence.words)):
            ids = ids[:capacity]
            if len(pieces) + len(ids) > capacity:
                windows.append((index, pieces, labels, starts))
                pieces, labels, starts = [], [], []
            label = tag_id[sentence.tags[word]] if tag_names is not None and sentence.tags else IGNORED
            rest = inside.get(label, label) if label_all_pieces else IGNORED
            pieces += ids
            labels += [label] + [rest] * (len(ids) - 1)
            starts += [True] + [False] * (len(ids) - 1)
        windows.append((index, pieces, labels, starts))
    count = len(windows)
    input_ids = torch.full((count, max_seq_length), tokenizer.pad_id, dtype=torch.int32)
    label_ids = torch.full((count, max_seq_length), IGNORED, dtype=torch.long)
    word_starts = torch.zeros((count, max_seq_length), dtype=torch.bool)
    lengths = torch.zeros(count, dtype=torch.long)
    for row, (_, pieces, labels, starts) in enumerate(windows):
        end = len(pieces) + 1
        input_ids[row, : end + 1] = torch.tensor([tokenizer.cls_id, *pieces, tokenizer.sep_id], dtype=torch.int32)
        label_ids[row, 1:end] = torch.tensor(labels, dtype=torch.long)
        word_starts[row, 1:end] = torch.tensor(starts)
        lengths[row] = end + 1
    labelled = tag_names is not None and all(sentence.tags is not None for sentence in sentences)
    return EncodedTokens(input_ids, torch.zeros_like(input_ids, dtype=torch.int8), lengths,
                         label_ids if labelled else None, word_starts,
                         torch.tensor([index for index, *_ in windows], dtype=torch.long))


def sentence_predictions(encoded: EncodedTokens, predictions: Iterable[torch.Tensor]) -> list[list[int]]:
    """Per sentence, one prediction per word: the prediction at each word's first piece, windows joined.

    `predictions` are [B, width] tensors over the windows in order (as iter_batches(shuffle=False) gives them).
    """
    sentences: list[list[int]] = []
    row = 0
    for batch in predictions:
        for values in batch:
            width = values.shape[0]
            tags = values[encoded.word_starts[row, :width]].tolist()
            if row and encoded.sentence[row] == encoded.sentence[row - 1]:
                sentences[-1] += tags
            else:
                sentences.append(tags)
            row += 1
    return sentences
