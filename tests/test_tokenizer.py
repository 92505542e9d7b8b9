"""The SentencePiece tokenizer: ALBERT's special ids, normalisation, files transformers reads, word starts."""

import io
import json

import pytest
import sentencepiece as spm
from data_helpers import random_documents, tiny_tokenizer

from encoderkit.data.tokenizer import Tokenizer

SENTENCES = [
    "The cat sees a dog near the river.",
    "Kadrivo tumiloqua   vovo KADRIVO, noxpeldrika!",
    "Café ``quoted'' NAÏVE résumé über 9,000 things?",
    "Unknown symbols: 42 % ∑ 漢字 and tabs\tinside.",
]


def test_special_tokens_have_albert_ids():
    tokenizer = tiny_tokenizer()
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == (
        0,
        1,
        2,
        3,
        4,
    )
    assert [tokenizer.id_to_piece(i) for i in range(5)] == ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
    assert tokenizer.special_ids == frozenset(range(5))
    assert tokenizer.vocab_size == 200


def test_text_is_lowercased_without_accents_and_mask_is_kept():
    tokenizer = tiny_tokenizer()
    assert tokenizer.encode("THE Cat") == tokenizer.encode("the cat")
    assert tokenizer.encode("café") == tokenizer.encode("cafe")
    ids = tokenizer.encode("the [MASK] sees a [MASK].")
    assert ids.count(tokenizer.mask_id) == 2 and ids[0] == tokenizer.encode("the")[0]
    assert tokenizer.decode(tokenizer.encode("The cat sees a dog.")) == "the cat sees a dog."
    assert tokenizer.encode_batch(["the cat", "[MASK]"]) == [tokenizer.encode("the cat"), [tokenizer.mask_id]]


def test_word_start_marks_pieces_that_begin_a_word():
    tokenizer = tiny_tokenizer()
    for token_id in range(tokenizer.vocab_size):
        piece = tokenizer.id_to_piece(token_id)
        expected = token_id in tokenizer.special_ids or piece.startswith("▁") or piece in {".", "!", "?", ","}
        assert tokenizer.word_start[token_id] == expected, piece
    assert not all(tokenizer.word_start)  # the tiny corpus has words of several pieces


def test_save_and_load_round_trip(tmp_path):
    tokenizer = tiny_tokenizer()
    tokenizer.save(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "AlbertTokenizer" and config["do_lower_case"] is True
    for loaded in (Tokenizer.load(tmp_path), Tokenizer.load(tmp_path / "spiece.model")):
        assert [loaded.encode(s) for s in SENTENCES] == [tokenizer.encode(s) for s in SENTENCES]
    with pytest.raises(FileNotFoundError, match="no SentencePiece model"):
        Tokenizer.load(tmp_path / "elsewhere")


def test_ids_agree_with_transformers_albert_tokenizer(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("google.protobuf", reason="transformers needs protobuf to read a spiece.model")
    tokenizer = tiny_tokenizer()
    tokenizer.save(tmp_path)
    reference = transformers.AlbertTokenizer.from_pretrained(tmp_path)
    sentences = SENTENCES + [s for document in random_documents(7, 20) for s in document]
    sentences.append("Paris is the [MASK] of France.")
    for sentence in sentences:
        assert tokenizer.encode(sentence) == reference(sentence, add_special_tokens=False)["input_ids"], sentence
    assert reference.mask_token_id == tokenizer.mask_id and reference.pad_token_id == tokenizer.pad_id


def test_reads_a_spiece_model_trained_like_albert(tmp_path):
    # ALBERT's published spiece.model: these trainer flags, punctuation as user-defined symbols, no config file
    sentences = [s.lower() for document in random_documents(3, 200) for s in document]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=150,
        pad_id=0,
        unk_id=1,
        bos_id=-1,
        eos_id=-1,
        control_symbols=["[CLS]", "[SEP]", "[MASK]"],
        user_defined_symbols=["(", ")", '"', "-", "."],
        minloglevel=2,
    )
    (tmp_path / "albert.model").write_bytes(model.getvalue())
    tokenizer = Tokenizer.load(tmp_path / "albert.model")
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == (
        0,
        1,
        2,
        3,
        4,
    )
    ids = tokenizer.encode("The (big) cat [MASK].")
    assert tokenizer.mask_id in ids and tokenizer.piece_to_id("(") in ids
    assert tokenizer.word_start[tokenizer.piece_to_id("(")]


def test_a_model_without_albert_pieces_is_refused(tmp_path):
    model = io.BytesIO()
    sentences = [s for document in random_documents(4, 50) for s in document]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model, vocab_size=60, minloglevel=2)
    with pytest.raises(ValueError, match=r"no <pad> piece"):
        Tokenizer(model.getvalue())
