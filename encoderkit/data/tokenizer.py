"""SentencePiece tokenizer with ALBERT's special tokens, readable by transformers' AlbertTokenizer.

Ids of the special tokens are those of ALBERT's published spiece.model: <pad>=0, <unk>=1, [CLS]=2,
[SEP]=3, [MASK]=4. Text is normalised as transformers' AlbertTokenizer does before SentencePiece
(collapse whitespace, `` and '' to ", strip accents, lowercase), so both give the same ids.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import unicodedata
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

import sentencepiece as spm

MODEL_FILE = "spiece.model"
CONFIG_FILE = "tokenizer_config.json"
PAD, UNK, CLS, SEP, MASK = "<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"
WORD_START = "\u2581"  # SentencePiece's "▁": the piece begins a new word
# pieces ALBERT's whole-word masking treats as words of their own (create_pretraining_data._is_start_piece)
PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;?@[\\]^_`{|}~")


def normalize_text(text: str, do_lower_case: bool = True, keep_accents: bool = False) -> str:
    """transformers' AlbertTokenizer preprocessing, applied before SentencePiece's own nmt_nfkc."""
    text = " ".join(text.split()).replace("``", '"').replace("''", '"')
    if not keep_accents and not text.isascii():
        text = "".join(char for char in unicodedata.normalize("NFKD", text) if not unicodedata.combining(char))
    return text.lower() if do_lower_case else text


class Tokenizer:
    """A SentencePiece model plus ALBERT's text normalisation."""

    def __init__(self, model_proto: bytes, do_lower_case: bool = True, keep_accents: bool = False):
        self.model_proto = model_proto
        self.do_lower_case = do_lower_case
        self.keep_accents = keep_accents
        self.processor = spm.SentencePieceProcessor(model_proto=model_proto)
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            self._special_id(piece) for piece in (PAD, UNK, CLS, SEP, MASK)
        )
        special_pieces = sorted((self.id_to_piece(i) for i in self.special_ids), key=len, reverse=True)
        # special tokens written literally in text ("Paris is the [MASK] of France.") map to their ids
        self._special_in_text = re.compile("(" + "|".join(map(re.escape, special_pieces)) + ")")

    # ----------------------------------------------------------------------------------------------
    # training, loading, saving

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        model_type: str = "unigram",
        *,
        sample_size: int = 2_000_000,
        character_coverage: float = 0.9999,
        do_lower_case: bool = True,
        keep_accents: bool = False,
        num_threads: int | None = None,
    ) -> Tokenizer:
        """Train on the first `sample_size` texts (sentences) of `texts`."""
        sample = (normalize_text(text, do_lower_case, keep_accents) for text in itertools.islice(texts, sample_size))
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=(text for text in sample if text),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            normalization_rule_name="nmt_nfkc",
            pad_id=0,
            unk_id=1,
            bos_id=-1,
            eos_id=-1,
            pad_piece=PAD,
            unk_piece=UNK,
            control_symbols=[CLS, SEP, MASK],
            num_threads=num_threads or os.cpu_count() or 1,
            minloglevel=2,
        )
        return cls(model.getvalue(), do_lower_case, keep_accents)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Load `spiece.model` (and `tokenizer_config.json` if there) from a directory, or a .model file."""
        path = Path(path)
        model_file = path / MODEL_FILE if path.is_dir() else path
        if not model_file.is_file():
            raise FileNotFoundError(f"no SentencePiece model at {model_file}")
        config_file = model_file.parent / CONFIG_FILE
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        return cls(
            model_file.read_bytes(),
            do_lower_case=config.get("do_lower_case", True),
            keep_accents=config.get("keep_accents", False),
        )

    def save(self, directory: str | os.PathLike) -> None:
        """Write `spiece.model` and a `tokenizer_config.json` that transformers' AlbertTokenizer reads."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MODEL_FILE).write_bytes(self.model_proto)
        config = {
            "tokenizer_class": "AlbertTokenizer",
            "do_lower_case": self.do_lower_case,
            "remove_space": True,
            "keep_accents": self.keep_accents,
            "bos_token": CLS,
            "eos_token": SEP,
            "unk_token": UNK,
            "sep_token": SEP,
            "pad_token": PAD,
            "cls_token": CLS,
            "mask_token": {
                "content": MASK,
                "lstrip": True,
                "rstrip": False,
                "normalized": False,
                "single_word": False,
                "special": True,
                "__type": "AddedToken",
            },
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")

    # ----------------------------------------------------------------------------------------------
    # text <-> ids

    def normalize(self, text: str) -> str:
        return normalize_text(text, self.do_lower_case, self.keep_accents)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no [CLS]/[SEP] added; special tokens written in the text ("[MASK]") keep their id."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """`encode` for many texts at once (SentencePiece encodes the batch in C++)."""
        parts = [self._special_in_text.split(text) for text in texts]
        # split() puts the special tokens at odd positions
        plain = [self.normalize(part) for text_parts in parts for part in text_parts[::2]]
        encoded = iter(self.processor.encode(plain))
        ids = []
        for text_parts in parts:
            text_ids = list(next(encoded))
            for special in text_parts[1::2]:
                text_ids.append(self.processor.piece_to_id(special))
                text_ids.extend(next(encoded))
            ids.append(text_ids)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; special tokens are dropped."""
        return self.processor.decode([int(i) for i in ids])

    def id_to_piece(self, token_id: int) -> str:
        return self.processor.id_to_piece(int(token_id))

    def piece_to_id(self, piece: str) -> int:
        return self.processor.piece_to_id(piece)

    # ----------------------------------------------------------------------------------------------
    # vocabulary

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    @cached_property
    def special_ids(self) -> frozenset[int]:
        """Ids of control and unknown pieces: <pad>, <unk>, [CLS], [SEP], [MASK]."""
        return frozenset(
            i for i in range(self.vocab_size) if self.processor.is_control(i) or self.processor.is_unknown(i)
        )

    @cached_property
    def word_start(self) -> list[bool]:
        """Per vocab id: the piece starts a new word ("▁..."), is punctuation, or is special.

        Whole-word masking treats a word start and the pieces after it up to the next word start as one word.
        """
        return [
            i in self.special_ids or piece.startswith(WORD_START) or piece in PUNCTUATION
            for i, piece in enumerate(self.processor.id_to_piece(list(range(self.vocab_size))))
        ]

    def _special_id(self, piece: str) -> int:
        token_id = self.processor.piece_to_id(piece)
        if self.processor.id_to_piece(token_id) != piece:
            raise ValueError(f"the SentencePiece model has no {piece} piece (not an ALBERT-style spiece.model)")
        return token_id
