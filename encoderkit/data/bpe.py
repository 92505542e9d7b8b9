"""Byte-level BPE (GPT-2, RoBERTa, I-BERT): `vocab.json` + `merges.txt`, or a BPE `tokenizer.json`, run by the
`tokenizers` library and built as transformers' RobertaTokenizerFast builds it, so both give the same ids and
offsets.

RoBERTa's rules, which differ from BERT's:
- Special tokens `<s>` `</s>` `<pad>` `<unk>` `<mask>` (names from tokenizer_config.json when it gives others),
  their ids from the vocabulary; a sequence is `<s> A </s>`, a pair `<s> A </s></s> B </s>`, one token type.
- No normalisation, and a space belongs to the word after it ("Ġworld"): "Hello" at the start of a text and
  " Hello" inside one are different pieces. `add_prefix_space` (default false, as RoBERTa was pretrained)
  adds a space before each text.
- `<mask>` strips the space before it where the files say so (lstrip, as the published roberta-base tokenizer
  and the ones saved here do), so "capital is <mask>." predicts the piece "Ġparis", space included.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import tokenizers
from tokenizers import AddedToken, decoders, pre_tokenizers, processors
from tokenizers.models import BPE

from encoderkit.data.tokenizer import CONFIG_FILE, TOKENIZER_JSON, Tokenizer, TokenizerError, read_config
from encoderkit.files import atomic_write, write_json

VOCAB_JSON, MERGES_FILE = "vocab.json", "merges.txt"
# RoBERTa's names, by role: pad, unk, cls, sep, mask (Tokenizer.special_tokens' order); bos is cls, eos is sep.
ROBERTA_SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", "<mask>")
_CONFIG_KEYS = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
# The order fairseq's dictionary (and so roberta-base's vocab.json) gives them: <s>=0, <pad>=1, </s>=2, <unk>=3.
_TRAINED_ORDER = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
WORD_START = "\u0120"  # "Ġ": byte-level BPE's picture of a space, so the piece begins a word


def is_bpe_json(file: Path) -> bool:
    """Whether a tokenizer.json holds a BPE model (else WordPiece's, say)."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))["model"]["type"] == "BPE"
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        return False


def _special_token_names(config: dict) -> tuple[str, ...]:
    """pad, unk, cls, sep, mask as tokenizer_config.json names them (a string, or an AddedToken dict with its
    content), RoBERTa's where it does not."""
    names = []
    for key, default in zip(_CONFIG_KEYS, ROBERTA_SPECIAL_TOKENS, strict=True):
        value = config.get(key)
        names.append((value.get("content") if isinstance(value, dict) else value) or default)
    return tuple(names)


class ByteLevelBPETokenizer(Tokenizer):
    """RoBERTa's byte-level BPE (see the module docstring)."""

    kind = "byte-level BPE vocabulary"
    files = (TOKENIZER_JSON, VOCAB_JSON)
    expected = "a RoBERTa-style byte-level BPE"
    pair_separators: ClassVar[int] = 2  # <s> A </s></s> B </s>
    second_type_id: ClassVar[int] = 0  # RoBERTa has one token type

    def __init__(self, backend: tokenizers.Tokenizer, special_tokens: tuple[str, ...] = ROBERTA_SPECIAL_TOKENS,
                 add_prefix_space: bool = False, trim_offsets: bool = True, model_max_length: int | None = None,
                 source: str = "the BPE vocabulary"):
        """`backend`: the `tokenizers` BPE tokenizer, its special tokens added; `special_tokens`: their names, by role
        (pad, unk, cls, sep, mask)."""
        self.backend = backend
        self.special_tokens = special_tokens
        self.add_prefix_space, self.trim_offsets = add_prefix_space, trim_offsets
        self.model_max_length = model_max_length
        self._ids = backend.get_vocab(with_added_tokens=True)
        self._find_special_ids(source)

    @classmethod
    def from_vocab_and_merges(cls, vocab: dict[str, int], merges: list[tuple[str, str]], config: dict | None = None,
                              source: str = "the BPE vocabulary") -> ByteLevelBPETokenizer:
        """The tokenizer transformers' RobertaTokenizerFast builds from vocab.json and merges.txt, with the options
        and special token names of a tokenizer_config.json (`config`)."""
        config = config or {}
        names = _special_token_names(config)
        add_prefix_space = bool(config.get("add_prefix_space", False))
        trim_offsets = bool(config.get("trim_offsets", True))
        backend = tokenizers.Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                                           end_of_word_suffix="", fuse_unk=False))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
        backend.decoder = decoders.ByteLevel()
        missing = [name for name in names if name not in vocab]
        if missing:
            raise TokenizerError(f"{source} has no {missing[0]} piece (not {cls.expected})")
        mask = config.get("mask_token")
        # transformers' RobertaTokenizer strips the space before <mask> only where tokenizer_config.json says so
        mask_lstrip = bool(mask.get("lstrip", False)) if isinstance(mask, dict) else False
        backend.add_special_tokens([AddedToken(name, special=True, normalized=False, lstrip=(i == 4 and mask_lstrip))
                                    for i, name in enumerate(names)])
        _, _, cls_token, sep, _ = names
        backend.post_processor = processors.RobertaProcessing((sep, vocab[sep]), (cls_token, vocab[cls_token]),
                                                              trim_offsets=trim_offsets,
                                                              add_prefix_space=add_prefix_space)
        return cls(backend, names, add_prefix_space, trim_offsets, config.get("model_max_length"), source)

    # ----------------------------------------------------------------------------------------------
    # loading, training, saving

    @classmethod
    def load(cls, path: str | os.PathLike) -> ByteLevelBPETokenizer:
        """tokenizer.json (a BPE model), else vocab.json + merges.txt, from a directory or the file itself;
        tokenizer_config.json beside it gives the options and special token names."""
        file = cls._locate(path)
        config = read_config(file.parent)
        if file.name != VOCAB_JSON:  # a tokenizer.json carries its pre-tokenizer, special tokens and pair format
            try:
                backend = tokenizers.Tokenizer.from_file(str(file))
            except Exception as err:  # tokenizers raises a bare Exception for a file it cannot parse
                raise TokenizerError(f"{file}: not a tokenizers JSON file ({err})") from None
            return cls(backend, _special_token_names(config), bool(config.get("add_prefix_space", False)),
                       bool(config.get("trim_offsets", True)), config.get("model_max_length"), str(file))
        merges_file = file.parent / MERGES_FILE
        if not merges_file.is_file():
            raise TokenizerError(f"{file}: no {MERGES_FILE} beside it (a byte-level BPE needs both files)")
        try:
            vocab, merges = BPE.read_file(str(file), str(merges_file))
        except Exception as err:
            raise TokenizerError(f"{file}, {merges_file}: cannot read a BPE vocabulary ({err})") from None
        return cls.from_vocab_and_merges(vocab, merges, config, str(file))

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, *, sample_size: int = 2_000_000,
              min_frequency: int = 2) -> ByteLevelBPETokenizer:
        """A new byte-level BPE (RoBERTa's kind) trained on the first `sample_size` texts, its special tokens at
        RoBERTa's ids: <s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=4; <mask> strips the space before it (roberta-base's)."""
        from tokenizers.trainers import BpeTrainer

        backend = tokenizers.Tokenizer(BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                             special_tokens=list(_TRAINED_ORDER), initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        backend.train_from_iterator(itertools.islice(texts, sample_size), trainer)
        model = json.loads(backend.to_str())["model"]
        merges = [tuple(merge.split(" ", 1)) if isinstance(merge, str) else tuple(merge) for merge in model["merges"]]
        return cls.from_vocab_and_merges(model["vocab"], merges, {"mask_token": {"content": "<mask>", "lstrip": True}})

    def save(self, directory: str | os.PathLike) -> None:
        """Write tokenizer.json, vocab.json, merges.txt and a tokenizer_config.json that transformers'
        RobertaTokenizer reads."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / TOKENIZER_JSON, self.backend.save)
        with tempfile.TemporaryDirectory(dir=directory, prefix=".bpe-") as tmp:  # each file whole or not at all
            for written in self.backend.model.save(tmp):  # vocab.json, merges.txt
                os.replace(written, directory / Path(written).name)
        pad, unk, cls_token, sep, mask = self.special_tokens
        config = {
            "tokenizer_class": "RobertaTokenizer",
            "add_prefix_space": self.add_prefix_space,
            "trim_offsets": self.trim_offsets,
            "bos_token": cls_token, "eos_token": sep, "cls_token": cls_token, "sep_token": sep,
            "unk_token": unk, "pad_token": pad,
            "mask_token": {"content": mask, "lstrip": self.backend.get_added_tokens_decoder()[self.mask_id].lstrip,
                           "rstrip": False, "normalized": False,
                           "single_word": False, "special": True, "__type": "AddedToken"},
        }
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        write_json(directory / CONFIG_FILE, config)

    # ----------------------------------------------------------------------------------------------
    # text <-> ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.backend.encode_batch(texts, add_special_tokens=False)]

    def encode_words(self, words: list[str]) -> list[list[int]]:
        """Each word with the space before it, the first one too ("Ġword"): how words inside a text are pieced.
        transformers' RobertaTokenizerFast(add_prefix_space=True), which run_ner asks for with is_split_into_words,
        gives the same."""
        return self.encode_batch([" " + word for word in words])

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids of `text` (no special tokens added) and each one's (start, end) character offsets into `text`,
        trimmed of the space a piece carries, as transformers' offset_mapping."""
        encoding = self.backend.encode(text, add_special_tokens=False)
        return encoding.ids, [tuple(offset) for offset in encoding.offsets]

    def decode(self, ids: Iterable[int]) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_text(self, token_id: int) -> str:
        """The text of one token, its space stripped (fill-mask's display)."""
        return self.backend.decode([int(token_id)], skip_special_tokens=False).strip() or self.id_to_piece(token_id)

    # ----------------------------------------------------------------------------------------------
    # vocabulary

    @cached_property
    def pieces(self) -> list[str]:
        pieces = [""] * (max(self._ids.values()) + 1)
        for piece, token_id in self._ids.items():
            pieces[token_id] = piece
        return pieces

    def _starts_word(self, piece: str) -> bool:
        return piece.startswith(WORD_START)

    def _lookup(self, piece: str) -> int | None:
        return self._ids.get(piece)
