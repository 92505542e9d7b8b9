"""Byte-level BPE (RoBERTa's): ids and offsets equal to transformers' RobertaTokenizerFast on hard strings, from
tokenizer.json and from vocab.json + merges.txt; RoBERTa's pair format; special ids from the files; bad files
get one line."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from encoderkit.data.bpe import ByteLevelBPETokenizer
from encoderkit.data.classification import encode_examples
from encoderkit.data.glue import GlueExample
from encoderkit.data.tokenizer import Tokenizer, TokenizerError

transformers = pytest.importorskip("transformers")

GLUE = Path(__file__).parent / "fixtures" / "glue"
HARD = [
    "Hello world",
    " Hello world",  # the leading-space rule: " Hello" is another piece than "Hello"
    "  two  spaces\tand a tab\n\nand newlines  ",
    "naïve café, Straße, ﬁne, Ångström — “quotes” and ‘apostrophes’",
    "東京は日本の首都です。🤗👍🏽 emoji and CJK",
    "e\u0301 combining accent, zero\u200bwidth, \u00a0no-break space",
    "The capital of France is <mask>.",
    "<mask> at the start and<mask>glued <s> </s> <pad> <unk>",
    "don't won't it's I'm you're we've 1,234.56 $5 #tag @user http://x.y/z?q=1",
    "",
    " ",
    "word " * 700,  # longer than any model's positions
]


def corpus() -> list[str]:
    texts = []
    for path in sorted(GLUE.glob("*/train.tsv")):
        with open(path, encoding="utf-8-sig", newline="") as file:
            for row in csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE):
                texts.extend(cell for cell in row if len(cell) > 20)
    return texts + HARD[:6]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bpe")
    ByteLevelBPETokenizer.train(corpus(), vocab_size=500).save(directory)
    return directory


@pytest.fixture(scope="module")
def vocab_and_merges_only(saved, tmp_path_factory):
    directory = tmp_path_factory.mktemp("bpe-files")
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(saved / name, directory / name)
    return directory


@pytest.mark.parametrize("layout", ["tokenizer.json", "vocab.json+merges.txt"])
def test_ids_and_offsets_equal_roberta_tokenizer_fast(saved, vocab_and_merges_only, layout):
    directory = saved if layout == "tokenizer.json" else vocab_and_merges_only
    ours = Tokenizer.load(directory)
    assert isinstance(ours, ByteLevelBPETokenizer)
    theirs = transformers.RobertaTokenizerFast.from_pretrained(directory)
    for text in HARD:
        reference = theirs(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = ours.encode_with_offsets(text)
        assert ids == reference["input_ids"] == ours.encode(text), text
        assert offsets == [tuple(o) for o in reference["offset_mapping"]], text
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True), text
    assert ours.encode("Hello") != ours.encode(" Hello")[1:]  # "Hello" and "ĠHello" differ


def test_special_ids_come_from_the_files_and_mask_token_is_roberta_s(saved):
    tokenizer = Tokenizer.load(saved)
    theirs = transformers.RobertaTokenizerFast.from_pretrained(saved)
    ids = (tokenizer.cls_id, tokenizer.pad_id, tokenizer.sep_id, tokenizer.unk_id, tokenizer.mask_id)
    assert ids == (0, 1, 2, 3, 4) == (
        theirs.cls_token_id, theirs.pad_token_id, theirs.sep_token_id, theirs.unk_token_id, theirs.mask_token_id)
    assert tokenizer.mask_token == "<mask>" and tokenizer.vocab_size == len(theirs)
    # <mask> takes the space before it, as the published roberta-base tokenizer
    assert tokenizer.encode("is <mask>.")[-2:] == [tokenizer.mask_id, tokenizer.piece_to_id(".")]


def test_special_token_names_follow_tokenizer_config(vocab_and_merges_only, tmp_path):
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(vocab_and_merges_only / name, tmp_path / name)
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    vocab = {("[M]" if piece == "<mask>" else piece): i for piece, i in vocab.items()}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"mask_token": "[M]"}))
    tokenizer = Tokenizer.load(tmp_path)
    assert tokenizer.mask_token == "[M]" and tokenizer.mask_id == 4
    assert tokenizer.encode("a [M]")[-1] == 4


def test_pairs_are_roberta_s_format_with_one_token_type(saved):
    tokenizer = Tokenizer.load(saved)
    theirs = transformers.RobertaTokenizerFast.from_pretrained(saved)
    examples = [GlueExample("The cat sat.", "A dog ran away!", 0, "0"), GlueExample("Only one text", None, 1, "1")]
    encoded = encode_examples(examples, tokenizer, max_seq_length=64)
    for row, example in enumerate(examples):
        reference = theirs(example.text_a, example.text_b)["input_ids"]
        assert encoded.input_ids[row, : encoded.lengths[row]].tolist() == reference
    assert encoded.input_ids[0, : encoded.lengths[0]].tolist().count(tokenizer.sep_id) == 3  # </s></s> between
    assert not encoded.token_type_ids.any()  # RoBERTa has one token type
    # truncation leaves room for the four special tokens of a pair
    long = encode_examples([GlueExample("word " * 50, "other " * 50, 0, "0")], tokenizer, max_seq_length=16)
    assert long.lengths.tolist() == [16] and long.input_ids[0, 15] == tokenizer.sep_id
    assert torch.equal(long.input_ids[0, :16], torch.tensor(theirs("word " * 50, "other " * 50, truncation=True,
                                                                    max_length=16)["input_ids"], dtype=torch.int32))


def test_saved_tokenizer_round_trips(saved, tmp_path):
    tokenizer = Tokenizer.load(saved)
    tokenizer.save(tmp_path)
    again = Tokenizer.load(tmp_path)
    assert again.pieces == tokenizer.pieces
    assert [again.encode(text) for text in HARD] == [tokenizer.encode(text) for text in HARD]
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "RobertaTokenizer"


def test_bad_files_get_one_line(vocab_and_merges_only, tmp_path):
    shutil.copy(vocab_and_merges_only / "vocab.json", tmp_path / "vocab.json")
    with pytest.raises(TokenizerError, match="no merges.txt beside it"):
        Tokenizer.load(tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0, "b": 1}))
    with pytest.raises(TokenizerError, match="has no <pad> piece"):
        Tokenizer.load(tmp_path)
