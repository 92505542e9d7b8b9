"""GLUE loading from the TSV layouts of the GLUE download, the hub fallback, and submission files."""

import csv
import shutil
import sys
import types
from pathlib import Path

import pytest

from encoderkit.data.glue import TASKS, GlueDataError, GlueExample, get_task, load_task, write_predictions
from encoderkit.errors import UserError

FIXTURES = Path(__file__).parent / "fixtures"
GLUE = FIXTURES / "glue"
BROKEN = FIXTURES / "glue_broken"

# One example per task, read by hand from the fixture files: (split, row, text_a, text_b, label, id).
EXPECTED = {
    "cola": ("train", 1, "The cat slept the mat on.", None, 0, "1"),
    "sst2": ("train", 3, "the film 's \" twist \" works . ", None, 1, "3"),
    "mrpc": ("train", 0, 'He called him " the witness " in court .',
             'He referred to him only as " the witness " .', 1, "0"),
    "stsb": ("train", 1, "A man is playing a large flute.", "A man is playing a flute.", 3.8, "1"),
    "qqp": ("test", 1, "Which phone should I buy?", "How tall is Mount Everest?", None, "1"),
    "mnli": ("dev_matched", 1, "The museum is free", "The museum costs ten dollars", 2, "1"),
    "qnli": ("train", 1, "Who wrote the book?", "The book has three hundred pages.", 1, "1"),
    "rte": ("dev", 1, "Mary lives in Rome.", "Mary lives in Italy.", 0, "1"),
    "wnli": ("train", 1, "John couldn't see the stage with Billy in front of him because he is so short.",
             "Billy is so short.", 0, "1"),
}


@pytest.mark.parametrize("task_name", list(TASKS))
def test_every_task_loads_every_split_from_the_glue_layout(task_name):
    task = get_task(task_name)
    data = load_task(task_name, GLUE)
    assert list(data) == [split.name for split in task.splits]
    for split in task.splits:
        examples = data[split.name]
        assert examples, split.name
        for example in examples:
            assert isinstance(example, GlueExample)
            assert example.text_a
            assert (example.text_b is None) == (len(task.text_columns) == 1)
            if split.is_test:
                assert example.label is None
            elif task.labels is None:
                assert isinstance(example.label, float) and 0.0 <= example.label <= 5.0
            else:
                assert example.label in range(task.num_labels)

    split, row, text_a, text_b, label, example_id = EXPECTED[task_name]
    assert data[split][row] == GlueExample(text_a, text_b, label, example_id)


def test_mnli_has_matched_and_mismatched_dev_and_test_splits():
    task = get_task("mnli")
    assert task.dev_splits == ("dev_matched", "dev_mismatched")
    assert task.test_splits == ("test_matched", "test_mismatched")
    data = load_task("mnli", GLUE)
    # dev files have 16 columns (five annotator labels), train 12, test 10: all read by header name.
    assert [e.label for e in data["train"]] == [1, 0, 2]  # neutral, entailment, contradiction
    assert data["dev_mismatched"][1].text_a == 'She wrote "yes" twice'


def test_quotes_and_the_mrpc_byte_order_mark_are_read_as_plain_text():
    cola = load_task("cola", GLUE, splits=["train"])["train"]
    assert cola[2].text_a == 'She said "hello" and left.'  # unbalanced quoting must not join lines
    assert (GLUE / "MRPC" / "train.tsv").read_bytes().startswith(b"\xef\xbb\xbfQuality")
    assert [e.label for e in load_task("mrpc", GLUE, splits=["train"])["train"]] == [1, 0, 1]


def test_test_ids_come_from_the_files_id_column():
    assert [e.id for e in load_task("qqp", GLUE, splits=["test"])["test"]] == ["0", "1"]
    assert [e.id for e in load_task("cola", GLUE, splits=["test"])["test"]] == ["0", "1"]


@pytest.mark.parametrize("folder", ["sst-2", "sst2", "SST-2"])
def test_task_folders_may_be_lowercase_or_given_directly(tmp_path, folder):
    shutil.copytree(GLUE / "SST-2", tmp_path / folder)
    assert len(load_task("sst2", tmp_path)["train"]) == 4
    assert len(load_task("sst2", tmp_path / folder)["dev"]) == 2


def test_glue_spellings_of_task_names_are_accepted():
    assert get_task("SST-2").name == "sst2"
    assert get_task("STS-B").name == "stsb"
    assert get_task("CoLA").name == "cola"


def test_a_subset_of_splits_can_be_loaded():
    assert list(load_task("rte", GLUE, splits=["dev"])) == ["dev"]
    with pytest.raises(GlueDataError, match="no split 'validation'.*train, dev, test"):
        load_task("rte", GLUE, splits=["validation"])


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(GlueDataError, match="unknown GLUE task 'sst5'; valid tasks: cola, sst2, mrpc, stsb, qqp, mnli"):
        load_task("sst5", GLUE)


def test_missing_task_folder_and_missing_file_are_named(tmp_path):
    with pytest.raises(GlueDataError, match="no folder for GLUE task cola"):
        load_task("cola", tmp_path)
    with pytest.raises(GlueDataError, match=r"QNLI/dev\.tsv: file not found"):
        load_task("qnli", BROKEN / "missing_file")


def test_row_with_wrong_column_count_names_file_and_line():
    with pytest.raises(GlueDataError, match=r"RTE/train\.tsv:3: 3 tab-separated columns, expected 4"):
        load_task("rte", BROKEN / "wrong_column_count", splits=["train"])


def test_label_outside_the_task_names_file_line_and_valid_labels():
    with pytest.raises(GlueDataError, match=r"SST-2/train\.tsv:4: label '2' is not one of 0, 1"):
        load_task("sst2", BROKEN / "bad_label", splits=["train"])
    with pytest.raises(GlueDataError, match=r"STS-B/train\.tsv:2: score 'high' is not a number"):
        load_task("stsb", BROKEN / "bad_score", splits=["train"])


def test_a_header_without_the_tasks_columns_is_reported():
    with pytest.raises(GlueDataError, match=r"QQP/train\.tsv:1: no column 'question1'"):
        load_task("qqp", BROKEN / "wrong_header", splits=["train"])


def test_errors_are_user_errors_with_one_line_messages():
    with pytest.raises(UserError) as caught:
        load_task("sst2", BROKEN / "bad_label", splits=["train"])
    assert "\n" not in str(caught.value)


def _fake_datasets(monkeypatch, load_dataset):
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))


def test_without_data_dir_an_unreachable_hub_says_to_pass_data_dir(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)\nmore detail")

    _fake_datasets(monkeypatch, offline)
    expected = r"could not load 'nyu-mll/glue:rte' \(train\) from the Hugging Face hub: .*pass --data-dir"
    with pytest.raises(GlueDataError, match=expected) as caught:
        load_task("rte")
    assert "\n" not in str(caught.value)


def test_hub_rows_become_the_same_examples_as_tsv_rows(monkeypatch):
    requests = []

    def load_dataset(path, name, split, streaming):
        requests.append((path, name, split))
        label = -1 if split.startswith("test") else 2
        return [{"premise": "P", "hypothesis": "H", "label": label, "idx": 7}]

    _fake_datasets(monkeypatch, load_dataset)
    data = load_task("mnli", splits=["dev_mismatched", "test_matched"])
    assert requests == [("nyu-mll/glue", "mnli", "validation_mismatched"), ("nyu-mll/glue", "mnli", "test_matched")]
    assert data["dev_mismatched"] == [GlueExample("P", "H", 2, "7")]
    assert data["test_matched"] == [GlueExample("P", "H", None, "7")]


def _read_submission(path):
    with open(path, encoding="utf-8", newline="") as file:
        return list(csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_predictions_file_round_trip_in_glue_submission_format(tmp_path):
    test_set = load_task("mnli", GLUE, splits=["test_matched"])["test_matched"]
    path = tmp_path / "submission" / "MNLI-m.tsv"
    write_predictions(path, "mnli", [e.id for e in test_set], [2, 0])
    assert _read_submission(path) == [["index", "prediction"], ["0", "contradiction"], ["1", "entailment"]]

    write_predictions(path.with_name("STS-B.tsv"), "stsb", ["0", "1"], [4.25, 0.1234])
    rows = _read_submission(path.with_name("STS-B.tsv"))
    assert rows[0] == ["index", "prediction"] and [float(score) for _, score in rows[1:]] == [4.25, 0.123]
    assert sorted(p.name for p in path.parent.iterdir()) == ["MNLI-m.tsv", "STS-B.tsv"]  # no temp files left


def test_submission_file_names_follow_the_glue_leaderboard():
    names = [split.submission_file for task in TASKS.values() for split in task.splits if split.is_test]
    assert names == ["CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv",
                     "QNLI.tsv", "RTE.tsv", "WNLI.tsv"]


def test_bad_predictions_leave_an_existing_file_untouched(tmp_path):
    path = tmp_path / "RTE.tsv"
    write_predictions(path, "rte", ["0"], [1])
    with pytest.raises(ValueError, match="prediction 2 is not a class of task rte"):
        write_predictions(path, "rte", ["0"], [2])
    with pytest.raises(ValueError, match="1 ids but 2 predictions"):
        write_predictions(path, "rte", ["0"], [0, 1])
    assert _read_submission(path) == [["index", "prediction"], ["0", "not_entailment"]]
    assert [p.name for p in tmp_path.iterdir()] == ["RTE.tsv"]
