"""Tokenizer.encode_with_offsets: the ids of encode and the character spans transformers' fast tokenizers give."""

import pytest
from data_helpers import random_documents, tiny_tokenizer
from test_wordpiece import SENTENCES as WORDPIECE_SENTENCES
from test_wordpiece import write_vocab

from encoderkit.data.offsets import normalize_with_origins
from encoderkit.data.tokenizer import Tokenizer, normalize_text

transformers = pytest.importorskip("transformers")

TEXTS = [
    "The cat sees a dog.",
    "  The   cat\tsees\n a  dóg  ",  # whitespace runs, at both ends too
    "Café NAÏVE résumé ``quoted'' ∑ 漢字 x",  # accents, ALBERT's quote rule, unknown characters
    "ﬁne ½ Ｆｕｌｌ",  # ligature, fraction, full-width letters: one character becomes several
    "a\u00a0b \u00a8 x e\u0301 ÅΣΑΣ İi ǅ",  # no-break space, lone diaeresis, combining accent, final sigma, İ
    "Paris is the [MASK] of France.",
    "[MASK][MASK] x[SEP]y",
    "\u200bzero width",
    "",
    "   ",
]


def assert_same_as_fast(tokenizer, reference, texts):
    for text in texts:
        expected = reference(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = tokenizer.encode_with_offsets(text)
        assert ids == tokenizer.encode(text) == expected["input_ids"], text
        assert offsets == [tuple(span) for span in expected["offset_mapping"]], text


def test_sentencepiece_offsets_are_transformers_fast_albert_offsets(tmp_path):
    pytest.importorskip("google.protobuf", reason="transformers needs protobuf to read a spiece.model")
    tokenizer = tiny_tokenizer()
    tokenizer.save(tmp_path)
    reference = transformers.AlbertTokenizerFast.from_pretrained(tmp_path)
    assert reference.is_fast
    assert_same_as_fast(tokenizer, reference, TEXTS + [s for doc in random_documents(5, 20) for s in doc])


@pytest.mark.parametrize("config", [{}, {"do_lower_case": False}, {"strip_accents": False}], ids=str)
def test_wordpiece_offsets_are_transformers_fast_bert_offsets(tmp_path, config):
    write_vocab(tmp_path, config)
    reference = transformers.BertTokenizerFast.from_pretrained(tmp_path)
    assert_same_as_fast(Tokenizer.load(tmp_path), reference, TEXTS + WORDPIECE_SENTENCES)


@pytest.mark.parametrize("options", [(True, False), (False, True), (True, True)])
def test_normalisation_with_origins_is_albert_normalisation(options):
    for text in TEXTS:
        normalized, origins = normalize_with_origins(text, 0, *options)
        assert normalized == normalize_text(text, *options)
        assert len(origins) == len(normalized)
        assert all(0 <= start < end <= len(text) for start, end in origins)


def test_offsets_cut_the_words_out_of_the_text():
    text = "  Where   is the  cat?  "
    tokenizer = tiny_tokenizer()
    ids, offsets = tokenizer.encode_with_offsets(text)
    # a lone "▁" spans the first character of the piece after it (transformers' rule), so it is left out here
    words = [text[start:end] for i, (start, end) in zip(ids, offsets, strict=True) if tokenizer.id_to_piece(i) != "▁"]
    assert "".join(words).lower() == "whereisthecat?"
