"""Tokenizers: text <-> token ids, with the special tokens and word starts the data pipeline needs.

`Tokenizer.load(path)` reads whichever kind a directory holds:

- `SentencePieceTokenizer` (`spiece.model`): ALBERT's published models and the ones encoderkit trains.
  Ids of the special tokens are those of ALBERT's published spiece.model: <pad>=0, <unk>=1, [CLS]=2,
  [SEP]=3, [MASK]=4. Text is normalised as transformers' AlbertTokenizer does before SentencePiece
  (collapse whitespace, `` and '' to ", strip accents, lowercase), so both give the same ids.
- `WordPieceTokenizer` (`tokenizer.json` or `vocab.txt`): BERT's WordPiece, as published BERT and ELECTRA
  checkpoints have it, run by the `tokenizers` library and configured as transformers' BertTokenizer is
  (`do_lower_case`, `strip_accents`, `tokenize_chinese_chars` from tokenizer_config.json), so both give
  the same ids.

Both write files transformers reads (`save`), and map special tokens written in text ("[MASK]") to their ids.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import sentencepiece as spm

from encoderkit.errors import UserError
from encoderkit.files import atomic_write, write_json, write_text

if TYPE_CHECKING:
    import tokenizers

MODEL_FILE = "spiece.model"
TOKENIZER_JSON = "tokenizer.json"
VOCAB_FILE = "vocab.txt"
CONFIG_FILE = "tokenizer_config.json"
BYTE_BPE = "byte_bpe"  # train_on_corpus's model_type for RoBERTa's byte-level BPE (data/bpe.py)
PAD, UNK, CLS, SEP, MASK = "<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", CLS, SEP, MASK)  # pad, unk, cls, sep, mask
WORD_START = "\u2581"  # SentencePiece's "▁": the piece begins a new word
CONTINUATION = "##"  # WordPiece's prefix of a piece that continues a word
# pieces ALBERT's whole-word masking treats as words of their own (create_pretraining_data._is_start_piece)
PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;?@[\\]^_`{|}~")


class TokenizerError(UserError):
    """A tokenizer file that cannot be used: the message names the file and what is wrong."""


class TokenizerNotFoundError(TokenizerError, FileNotFoundError):
    """No tokenizer file where one was expected: the message names the path and the files looked for."""


def normalize_text(text: str, do_lower_case: bool = True, keep_accents: bool = False) -> str:
    """transformers' AlbertTokenizer preprocessing, applied before SentencePiece's own nmt_nfkc."""
    text = " ".join(text.split()).replace("``", '"').replace("''", '"')
    if not keep_accents and not text.isascii():
        text = "".join(char for char in unicodedata.normalize("NFKD", text) if not unicodedata.combining(char))
    return text.lower() if do_lower_case else text


def read_config(directory: Path) -> dict[str, Any]:
    """`tokenizer_config.json` of `directory`, or {} when there is none."""
    config_file = directory / CONFIG_FILE
    if not config_file.is_file():
        return {}
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TokenizerError(f"{config_file}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise TokenizerError(f"{config_file}: expected a JSON object")
    return config


def train_on_corpus(source, vocab_size: int, model_type: str = "unigram",
                    sample_documents: int = 20_000) -> Tokenizer:
    """A new tokenizer trained on the sentences of the first `sample_documents` documents of a corpus source (see
    data.corpus.load_corpus): SentencePiece's `unigram` or `bpe`, or RoBERTa's byte-level BPE (`byte_bpe`)."""
    from encoderkit.data.corpus import iter_documents

    documents = itertools.islice(iter_documents(source), sample_documents)
    if model_type == BYTE_BPE:
        from encoderkit.data.bpe import ByteLevelBPETokenizer

        return ByteLevelBPETokenizer.train((sentence for doc in documents for sentence in doc), vocab_size)
    try:
        return Tokenizer.train((sentence for doc in documents for sentence in doc), vocab_size, model_type=model_type)
    except RuntimeError as err:  # sentencepiece: e.g. more pieces asked for than the sample holds
        limit = re.search(r"value <= (\d+)", str(err))
        hint = f"; this corpus sample allows at most {limit.group(1)}" if limit else f" ({err})"
        raise TokenizerError(f"cannot train {vocab_size} pieces{hint}") from None


# --------------------------------------------------------------------------------------------------
# what every tokenizer offers


class Tokenizer(ABC):
    """Text <-> ids, special ids (`cls_id`, `sep_id`, `pad_id`, `mask_id`, `unk_id`) and word starts.

    `Tokenizer.load(path)` returns a `SentencePieceTokenizer` or a `WordPieceTokenizer`; `Tokenizer.train`
    trains a SentencePiece one.
    """

    kind: ClassVar[str] = "SentencePiece model or WordPiece vocabulary"  # for error messages
    files: ClassVar[tuple[str, ...]] = (MODEL_FILE, TOKENIZER_JSON, VOCAB_FILE)  # looked for, by preference
    special_tokens: ClassVar[tuple[str, str, str, str, str]]  # pad, unk, cls, sep, mask
    expected: ClassVar[str]  # what a usable file is, for error messages

    # The pair format: BERT's [CLS] A [SEP] B [SEP], token types 0 then 1; RoBERTa's differ (data/bpe.py).
    pair_separators: ClassVar[int] = 1  # [SEP] tokens between the two texts
    second_type_id: ClassVar[int] = 1  # token type of the second text and its [SEP]

    pad_id: int
    unk_id: int
    cls_id: int
    sep_id: int
    mask_id: int

    def __new__(cls, *args, **kwargs):
        # `Tokenizer(model_proto)` builds a SentencePiece tokenizer, as it did before WordPiece was read
        return super().__new__(SentencePieceTokenizer if cls is Tokenizer else cls)

    # ----------------------------------------------------------------------------------------------
    # loading, training, saving

    @classmethod
    def load(cls, path: str | os.PathLike, vocab_size: int | None = None) -> Tokenizer:
        """The tokenizer in a directory (or the file itself): spiece.model, else tokenizer.json (WordPiece or
        byte-level BPE), else vocab.json + merges.txt (byte-level BPE, data/bpe.py), else vocab.txt.

        `tokenizer_config.json` beside it, if there, gives the options (lowercasing, accents). `vocab_size`, where
        given (the model's), must be the tokenizer's: a SentencePiece file cut at a record boundary still loads,
        as a smaller vocabulary, and a larger one would give ids the model has no embedding for.
        """
        from encoderkit.data.bpe import VOCAB_JSON, ByteLevelBPETokenizer, is_bpe_json

        path = Path(path)
        if path.is_dir() and not (path / MODEL_FILE).is_file() and (path / VOCAB_JSON).is_file():
            file = ByteLevelBPETokenizer._locate(path)  # its tokenizer.json, else vocab.json + merges.txt
            tokenizer = ByteLevelBPETokenizer.load(file)
        else:
            file = cls._locate(path)
            if file.name == VOCAB_JSON or (file.suffix == ".json" and is_bpe_json(file)):
                tokenizer = ByteLevelBPETokenizer.load(file)
            else:
                is_wordpiece = file.suffix in (".json", ".txt")  # tokenizer.json, vocab.txt
                tokenizer = (WordPieceTokenizer if is_wordpiece else SentencePieceTokenizer).load(file)
        if vocab_size is not None and tokenizer.vocab_size != vocab_size:
            raise TokenizerError(f"{file}: {tokenizer.vocab_size} pieces, but the model's vocab_size is {vocab_size}: "
                                 "the file is damaged or belongs to another model; copy the model's own tokenizer")
        return tokenizer

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, **options) -> Tokenizer:
        """A new SentencePiece tokenizer (the kind encoderkit trains): see `SentencePieceTokenizer.train`."""
        return SentencePieceTokenizer.train(texts, vocab_size, **options)

    @abstractmethod
    def save(self, directory: str | os.PathLike) -> None:
        """Write the tokenizer's files and a `tokenizer_config.json` transformers reads."""

    @classmethod
    def _locate(cls, path: str | os.PathLike) -> Path:
        """`path` if it is a file, else the first of `cls.files` in the directory `path`."""
        path = Path(path)
        if path.is_file():
            return path
        if not path.is_dir():
            raise TokenizerNotFoundError(f"no {cls.kind} at {path}: no such file or directory")
        for name in cls.files:
            if (path / name).is_file():
                return path / name
        raise TokenizerNotFoundError(f"no {cls.kind} in {path}: looked for {', '.join(cls.files)}")

    # ----------------------------------------------------------------------------------------------
    # text <-> ids

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no [CLS]/[SEP] added; special tokens written in the text ("[MASK]") keep their id."""
        return self.encode_batch([text])[0]

    @abstractmethod
    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """`encode` for many texts at once."""

    def encode_words(self, words: list[str]) -> list[list[int]]:
        """Each word's pieces as a sentence of these words gives them: transformers' `is_split_into_words`.
        WordPiece and SentencePiece pieces do not depend on what is around a word, so each word is encoded alone."""
        return self.encode_batch(words)

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """`encode(text)` and each token's (start, end) character span in `text`: what transformers' fast
        tokenizers return as `offset_mapping` (question answering maps answers through them)."""
        raise NotImplementedError(f"{type(self).__name__} gives no character offsets")

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; special tokens are dropped."""

    def id_to_piece(self, token_id: int) -> str:
        return self.pieces[int(token_id)]

    def token_text(self, token_id: int) -> str:
        """One token as a reader sees it: its piece without the word-start mark (fill-mask's candidates)."""
        piece = self.id_to_piece(token_id)
        return piece.replace(WORD_START, " ").strip() or piece

    @property
    def mask_token(self) -> str:
        """The piece of `mask_id`: how this tokenizer writes a mask in text ("[MASK]", RoBERTa's "<mask>")."""
        return self.id_to_piece(self.mask_id)

    def piece_to_id(self, piece: str) -> int:
        """Id of `piece`; `unk_id` when the vocabulary has no such piece."""
        token_id = self._lookup(piece)
        return self.unk_id if token_id is None else token_id

    # ----------------------------------------------------------------------------------------------
    # vocabulary

    @property
    @abstractmethod
    def pieces(self) -> list[str]:
        """The piece of every id."""

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    @cached_property
    def special_ids(self) -> frozenset[int]:
        """Ids of the special tokens: pad, unk, [CLS], [SEP], [MASK]."""
        return frozenset((self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id))

    @cached_property
    def word_start(self) -> list[bool]:
        """Per vocab id: the piece starts a new word, or is special.

        Whole-word masking treats a word start and the pieces after it up to the next word start as one word.
        """
        return [i in self.special_ids or self._starts_word(piece) for i, piece in enumerate(self.pieces)]

    @abstractmethod
    def _starts_word(self, piece: str) -> bool:
        """Whether a (non-special) piece begins a word."""

    @abstractmethod
    def _lookup(self, piece: str) -> int | None:
        """Id of `piece`, None when the vocabulary lacks it."""

    def _find_special_ids(self, source: str) -> None:
        """Set `pad_id` ... `mask_id` from `special_tokens`; a missing one is an error naming `source`."""
        ids = []
        for piece in self.special_tokens:
            token_id = self._lookup(piece)
            if token_id is None:
                raise TokenizerError(f"{source} has no {piece} piece (not {self.expected})")
            ids.append(token_id)
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = ids


# --------------------------------------------------------------------------------------------------
# SentencePiece: ALBERT and encoderkit's own


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model plus ALBERT's text normalisation."""

    kind = "SentencePiece model"
    files = (MODEL_FILE,)
    special_tokens = (PAD, UNK, CLS, SEP, MASK)
    expected = "an ALBERT-style spiece.model"

    def __init__(self, model_proto: bytes, do_lower_case: bool = True, keep_accents: bool = False):
        self.model_proto = model_proto
        self.do_lower_case = do_lower_case
        self.keep_accents = keep_accents
        self.processor = spm.SentencePieceProcessor(model_proto=model_proto)
        self._find_special_ids("the SentencePiece model")
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
    ) -> SentencePieceTokenizer:
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
    def load(cls, path: str | os.PathLike) -> SentencePieceTokenizer:
        """Load `spiece.model` (and `tokenizer_config.json` if there) from a directory, or a .model file."""
        model_file = cls._locate(path)
        config = read_config(model_file.parent)
        model_proto = model_file.read_bytes()
        if not model_proto:  # sentencepiece parses it as a model without pieces
            raise TokenizerError(f"{model_file}: an empty file, not a SentencePiece model; copy the model's own "
                                 "spiece.model")
        try:
            return cls(
                model_proto,
                do_lower_case=config.get("do_lower_case", True),
                keep_accents=config.get("keep_accents", False),
            )
        except RuntimeError:  # sentencepiece: a file it cannot parse
            raise TokenizerError(f"{model_file}: not a SentencePiece model") from None

    def save(self, directory: str | os.PathLike) -> None:
        """Write `spiece.model` and a `tokenizer_config.json` that transformers' AlbertTokenizer reads."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # Atomic: a spiece.model cut short at a record boundary still parses, as a smaller vocabulary.
        atomic_write(directory / MODEL_FILE, lambda tmp: Path(tmp).write_bytes(self.model_proto))
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
        write_json(directory / CONFIG_FILE, config)

    # ----------------------------------------------------------------------------------------------
    # text <-> ids

    def normalize(self, text: str) -> str:
        return normalize_text(text, self.do_lower_case, self.keep_accents)

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

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        from encoderkit.data.offsets import map_spans, normalize_with_origins, piece_spans

        ids, offsets, position = [], [], 0
        for special in [*self._special_in_text.finditer(text), None]:  # the text between special tokens
            end = special.start() if special else len(text)
            normalized, origins = normalize_with_origins(text[position:end], position, self.do_lower_case,
                                                         self.keep_accents)
            spans = piece_spans(self.processor.encode(normalized, out_type="serialized_proto"))
            ids += [piece_id for piece_id, _, _ in spans]
            offsets += map_spans(normalized, origins, spans)
            if special:
                ids.append(self.processor.piece_to_id(special.group()))
                offsets.append(special.span())
                position = special.end()
        return ids, offsets

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; special tokens are dropped."""
        return self.processor.decode([int(i) for i in ids])

    # ----------------------------------------------------------------------------------------------
    # vocabulary

    @cached_property
    def pieces(self) -> list[str]:
        return self.processor.id_to_piece(list(range(self.processor.get_piece_size())))

    @cached_property
    def special_ids(self) -> frozenset[int]:
        """Ids of control and unknown pieces: <pad>, <unk>, [CLS], [SEP], [MASK]."""
        return frozenset(
            i for i in range(self.vocab_size) if self.processor.is_control(i) or self.processor.is_unknown(i)
        )

    def _starts_word(self, piece: str) -> bool:
        return piece.startswith(WORD_START) or piece in PUNCTUATION

    def _lookup(self, piece: str) -> int | None:
        token_id = self.processor.piece_to_id(piece)
        return token_id if self.processor.id_to_piece(token_id) == piece else None


# --------------------------------------------------------------------------------------------------
# WordPiece: published BERT and ELECTRA checkpoints


class WordPieceTokenizer(Tokenizer):
    """BERT's WordPiece with its special tokens [PAD] [UNK] [CLS] [SEP] [MASK], run by the `tokenizers` library.

    Built as transformers' BertTokenizer builds it (BertNormalizer, BertPreTokenizer, WordPiece with "##"
    continuations), so both give the same ids. Options follow tokenizer_config.json as in transformers:
    `do_lower_case` (default True), `strip_accents` (default: as `do_lower_case`), `tokenize_chinese_chars`.
    """

    kind = "WordPiece vocabulary"
    files = (TOKENIZER_JSON, VOCAB_FILE)  # transformers also prefers tokenizer.json
    special_tokens = BERT_SPECIAL_TOKENS
    expected = "a BERT-style WordPiece vocabulary"

    def __init__(
        self,
        pieces: list[str],
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        model_max_length: int | None = None,
        source: str = "the WordPiece vocabulary",
    ):
        """`pieces`: the piece of every id (vocab.txt's lines); `source` names them in error messages."""
        self._pieces = list(pieces)
        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.model_max_length = model_max_length
        self._ids = {piece: i for i, piece in enumerate(pieces)}  # a repeated piece: its last id, as in BERT
        self._find_special_ids(source)
        self.backend = self._build_backend()

    def _build_backend(self) -> tokenizers.Tokenizer:
        from tokenizers import Tokenizer as Backend
        from tokenizers import decoders, normalizers, pre_tokenizers, processors
        from tokenizers.models import WordPiece

        pad, unk, cls, sep, mask = self.special_tokens
        backend = Backend(WordPiece(self._ids, unk_token=unk, continuing_subword_prefix=CONTINUATION))
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=self.tokenize_chinese_chars,
            strip_accents=self.strip_accents,
            lowercase=self.do_lower_case,
        )
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix=CONTINUATION)
        # special tokens written in text are matched before normalisation and keep their id
        backend.add_special_tokens([pad, unk, cls, sep, mask])
        # [CLS] A [SEP] (B [SEP]) for whoever reads the saved tokenizer.json; `encode` adds no special tokens
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0",
            pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, self.cls_id), (sep, self.sep_id)],
        )
        return backend

    # ----------------------------------------------------------------------------------------------
    # loading, saving

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordPieceTokenizer:
        """Load tokenizer.json, else vocab.txt (and `tokenizer_config.json` if there) from a directory, or the file."""
        file = cls._locate(path)
        pieces = _read_tokenizer_json(file) if file.suffix == ".json" else _read_vocab_txt(file)
        config = read_config(file.parent)
        return cls(
            pieces,
            do_lower_case=config.get("do_lower_case", True),
            strip_accents=config.get("strip_accents"),
            tokenize_chinese_chars=config.get("tokenize_chinese_chars", True),
            model_max_length=config.get("model_max_length"),
            source=str(file),
        )

    def save(self, directory: str | os.PathLike) -> None:
        """Write vocab.txt, tokenizer.json and a tokenizer_config.json transformers' BertTokenizer reads."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_text(directory / VOCAB_FILE, "".join(piece + "\n" for piece in self.pieces))
        atomic_write(directory / TOKENIZER_JSON, self.backend.save)
        pad, unk, cls, sep, mask = self.special_tokens
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.do_lower_case,
            "strip_accents": self.strip_accents,
            "tokenize_chinese_chars": self.tokenize_chinese_chars,
            "unk_token": unk,
            "sep_token": sep,
            "pad_token": pad,
            "cls_token": cls,
            "mask_token": mask,
        }
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        write_json(directory / CONFIG_FILE, config)

    # ----------------------------------------------------------------------------------------------
    # text <-> ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """`encode` for many texts at once (`tokenizers` encodes the batch in Rust)."""
        return [encoding.ids for encoding in self.backend.encode_batch(texts, add_special_tokens=False)]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        encoding = self.backend.encode(text, add_special_tokens=False)  # `tokenizers` aligns through its normalizer
        return encoding.ids, [tuple(span) for span in encoding.offsets]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; special tokens are dropped and "##" continuations joined to their word."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=True)

    # ----------------------------------------------------------------------------------------------
    # vocabulary

    @property
    def pieces(self) -> list[str]:
        return self._pieces

    def _starts_word(self, piece: str) -> bool:
        return not piece.startswith(CONTINUATION)

    def _lookup(self, piece: str) -> int | None:
        return self._ids.get(piece)


def _read_vocab_txt(file: Path) -> list[str]:
    """The pieces of a BERT vocab.txt, one a line, read as the `tokenizers` library reads them."""
    from tokenizers.models import WordPiece

    try:
        ids = WordPiece.read_file(str(file))
    except Exception as err:  # tokenizers raises a bare Exception for unreadable files
        raise TokenizerError(f"{file}: cannot read a WordPiece vocabulary ({err})") from None
    return _pieces_in_id_order(ids, file)


def _read_tokenizer_json(file: Path) -> list[str]:
    """The pieces of a WordPiece tokenizer.json (its options come from tokenizer_config.json, as in transformers)."""
    try:
        model = json.loads(file.read_text(encoding="utf-8"))["model"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise TokenizerError(f"{file}: not a tokenizers JSON file ({err!r})") from None
    if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
        raise TokenizerError(f"{file}: a {model.get('type')} model, not WordPiece (not {WordPieceTokenizer.expected})")
    return _pieces_in_id_order(model["vocab"], file)


def _pieces_in_id_order(ids: dict[str, int], file: Path) -> list[str]:
    """The piece of every id 0..N-1; an id no piece has (vocab.txt repeats a line) gets an empty piece."""
    if not ids:
        raise TokenizerError(f"{file}: empty vocabulary")
    pieces = [""] * (max(ids.values()) + 1)
    for piece, token_id in ids.items():
        pieces[token_id] = piece
    return pieces
