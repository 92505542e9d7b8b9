"""Multiple-choice data: SWAG CSV, RACE JSON and JSON Lines readers, their errors, the encoding against
transformers' run_swag tokenization, and batches of (B, C, S)."""

import json

import pytest
import torch
from test_wordpiece import write_vocab

from encoderkit.data.choice import ChoiceDataError, encode_choices, load_examples
from encoderkit.data.classification import iter_batches
from encoderkit.data.tokenizer import Tokenizer

SWAG = """video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,ending2,ending3,label
v1,5,x,The cat sees a dog.,The dog,gold,runs near the river.,sleeps.,jumps over the lazy fox.,walks.,2
v2,6,x,A quick brown fox.,It,gold,jumps.,sees the cat near the river and the dog.,walks.,sleeps.,0
"""


def test_swag_choices_are_sent2_and_each_ending(tmp_path):
    (tmp_path / "train.csv").write_text(SWAG)
    examples = load_examples(tmp_path / "train.csv")
    assert [e.label for e in examples] == [2, 0] and [e.id for e in examples] == ["0", "1"]
    assert examples[0].context == "The cat sees a dog."
    assert examples[0].choices == ["The dog runs near the river.", "The dog sleeps.",
                                   "The dog jumps over the lazy fox.", "The dog walks."]
    (tmp_path / "test.csv").write_text(SWAG.replace(",2\n", ",\n").replace(",0\n", ",\n"))
    assert [e.label for e in load_examples(tmp_path / "test.csv")] == [None, None]


def test_race_fills_the_blank_or_appends_the_option(tmp_path):
    (tmp_path / "high").mkdir()
    (tmp_path / "high" / "1.txt").write_text(json.dumps({
        "id": "high1.txt", "article": "The cat sat.", "answers": ["B", "A"],
        "questions": ["The cat _ .", "Who sat?"], "options": [["ran", "sat", "slept"], ["cat", "dog", "fox"]]}))
    examples = load_examples(tmp_path)
    assert [(e.id, e.label) for e in examples] == [("high1.txt-0", 1), ("high1.txt-1", 0)]
    assert examples[0].choices == ["The cat ran .", "The cat sat .", "The cat slept ."]
    assert examples[1].choices == ["Who sat? cat", "Who sat? dog", "Who sat? fox"]
    assert examples[1].context == "The cat sat."


def test_jsonl_takes_any_number_of_choices(tmp_path):
    rows = [{"id": "a", "context": "c", "choices": list("vwxyz"), "label": 4},
            {"context": "d", "choices": list("vwxyz"), "label": 0}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = load_examples(tmp_path / "d.jsonl")
    assert [(e.id, len(e.choices), e.label) for e in examples] == [("a", 5, 4), ("1", 5, 0)]


@pytest.mark.parametrize(("rows", "message"), [
    ([{"id": "a", "context": "c", "choices": ["x", "y"], "label": 0}, {"id": "b", "context": "c", "choices": ["x"],
                                                                        "label": 0}],
     "example 'b' has 1 choices, the first example 2"),
    ([{"id": "a", "context": "c", "choices": ["x", "y"], "label": 2}], "example 'a': label 2 is not one of its 2"),
    ([{"id": "a", "context": "c", "choices": "xy", "label": 0}], r"bad\.jsonl:1: expected a JSON object with a"),
    ([{"id": "a", "context": "c", "choices": ["x", "y"], "label": 0},
      {"id": "b", "context": "c", "choices": ["x", "y"]}], "some examples have a label and some do not"),
])
def test_bad_rows_are_one_line_errors_naming_the_example(tmp_path, rows, message):
    (tmp_path / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ChoiceDataError, match=message):
        load_examples(tmp_path / "bad.jsonl")


def test_bad_files_are_errors(tmp_path):
    (tmp_path / "bad.csv").write_text("sent1,ending0\nx,y\n")
    with pytest.raises(ChoiceDataError, match="needs the columns sent1, sent2, ending0"):
        load_examples(tmp_path / "bad.csv")
    (tmp_path / "race.json").write_text(json.dumps({"article": "a", "questions": ["q"], "options": [["x", "y"]],
                                                    "answers": ["C"]}))
    with pytest.raises(ChoiceDataError, match="answer 'C' is not the letter of one of its 2 options"):
        load_examples(tmp_path / "race.json")
    with pytest.raises(ChoiceDataError, match="no such file"):
        load_examples(tmp_path / "missing.csv")


def test_encoding_is_run_swag_tokenization_and_batches_are_cut_per_choice(tmp_path):
    transformers = pytest.importorskip("transformers")
    (tmp_path / "train.csv").write_text(SWAG)
    examples = load_examples(tmp_path / "train.csv")
    write_vocab(tmp_path / "vocab")
    tokenizer = Tokenizer.load(tmp_path / "vocab")
    encoded = encode_choices(examples, tokenizer, max_seq_length=32)
    assert encoded.input_ids.shape == (2, 4, 32) and encoded.labels.tolist() == [2, 0]
    reference = transformers.BertTokenizerFast.from_pretrained(tmp_path / "vocab")
    # run_swag.py: first sentences = the context per choice, second = "sent2 ending"
    expected = reference([e.context for e in examples for _ in e.choices], [c for e in examples for c in e.choices])
    for row, (ids, types) in enumerate(zip(expected["input_ids"], expected["token_type_ids"], strict=True)):
        example, choice = divmod(row, 4)
        length = int(encoded.lengths[example, choice])
        assert encoded.input_ids[example, choice, :length].tolist() == ids
        assert encoded.token_type_ids[example, choice, :length].tolist() == types
    batch = next(iter_batches(encoded, 2, shuffle=False))
    width = int(encoded.lengths.max())
    assert batch["input_ids"].shape == (2, 4, width) and torch.equal(batch["labels"], torch.tensor([2, 0]))
    assert batch["attention_mask"].sum(-1).tolist() == encoded.lengths.tolist()
    # Longer pairs are cut as GLUE's are: BERT's _truncate_seq_pair, the longer text first (the choice on a tie;
    # transformers' fast tokenizers cut the context on a tie).
    short = encode_choices(examples, tokenizer, max_seq_length=12)
    assert short.lengths.max() == 12 and short.input_ids[0, 0, :12].tolist() == [
        tokenizer.cls_id, *tokenizer.encode("The cat sees a dog")[:5], tokenizer.sep_id,
        *tokenizer.encode("The dog runs near")[:4], tokenizer.sep_id]
