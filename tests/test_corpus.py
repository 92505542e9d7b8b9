"""Corpus sources: documents stay apart, files/globs/errors, the sentence splitter, the default corpus."""

import itertools
import json
import os

import datasets
import huggingface_hub
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_helpers import random_documents, write_txt

from encoderkit.data import corpus
from encoderkit.data.corpus import CorpusError, iter_documents, split_sentences


def test_a_blank_line_ends_a_txt_document(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("First one. Still first!\nAlso first.\n\nSecond.\n\n\n\nThird, after blank lines.\n")
    assert list(iter_documents(str(path))) == [
        ["First one.", "Still first!", "Also first."],
        ["Second."],
        ["Third, after blank lines."],
    ]


def test_txt_documents_survive_chunked_reading(tmp_path, monkeypatch):
    # datasets reads text files in chunks: a document must not be cut where a chunk ends
    documents = random_documents(1, 200)
    path = write_txt(tmp_path / "big.txt", documents)
    load_dataset = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kw: load_dataset(*args, chunksize=1000, **kw))
    assert list(iter_documents(path)) == documents


def test_each_jsonl_row_is_one_document(tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [{"id": 1, "text": "One. Two."}, {"id": 2, "text": "Three.\n\nFour."}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert list(iter_documents(path)) == [["One.", "Two."], ["Three.", "Four."]]


def test_each_parquet_row_is_one_document(tmp_path):
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": ["Alpha beta. Gamma.", "Delta."], "n": [1, 2]}), path)
    assert list(iter_documents(str(path))) == [["Alpha beta.", "Gamma."], ["Delta."]]


def test_globs_and_lists_read_every_file_in_order(tmp_path):
    for name in ("b", "a", "c"):
        write_txt(tmp_path / f"{name}.txt", [[f"From {name}."]])
    assert list(iter_documents(str(tmp_path / "*.txt"))) == [["From a."], ["From b."], ["From c."]]
    listed = [tmp_path / "c.txt", str(tmp_path / "a.txt")]
    assert list(iter_documents(listed)) == [["From c."], ["From a."]]


def test_missing_files_and_empty_globs_name_the_path(tmp_path):
    missing = tmp_path / "missing.txt"
    with pytest.raises(CorpusError, match="missing.txt"):
        corpus.load_corpus(missing)
    with pytest.raises(CorpusError, match=r"nothing-\*\.jsonl"):
        corpus.load_corpus(str(tmp_path / "nothing-*.jsonl"))


def test_a_jsonl_without_text_column_names_the_path(tmp_path):
    path = tmp_path / "no_text.jsonl"
    path.write_text(json.dumps({"body": "Hello."}) + "\n")
    with pytest.raises(CorpusError, match="no 'text' column in .*no_text.jsonl"):
        corpus.load_corpus(path)


def test_unsupported_and_mixed_file_types_are_refused(tmp_path):
    (tmp_path / "notes.csv").write_text("text\nhello\n")
    with pytest.raises(CorpusError, match="unsupported corpus file"):
        corpus.load_corpus(str(tmp_path / "*.csv"))
    write_txt(tmp_path / "a.txt", [["A."]])
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "B."}) + "\n")
    with pytest.raises(CorpusError, match="mixed file types"):
        corpus.load_corpus([tmp_path / "a.txt", tmp_path / "b.jsonl"])


def test_an_unreachable_hub_dataset_is_a_clear_error(monkeypatch):
    # offline mode fails at once, as a machine without network does after its retries
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        CorpusError, match=r"could not load 'someone/corpus' \(train\) from the Hugging Face hub: .*'default'"
    ):
        corpus.load_corpus("someone/corpus")


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("It works. It still works! Does it? Yes.", ["It works.", "It still works!", "Does it?", "Yes."]),
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
        (
            "Values like 3.14 and e.g. this stay. Mr. Smith agrees.",
            ["Values like 3.14 and e.g. this stay.", "Mr. Smith agrees."],
        ),
        ("one line\nanother line", ["one line", "another line"]),
        ("lower case after a stop. stays together", ["lower case after a stop. stays together"]),
        ("  \n\n  ", []),
    ],
)
def test_split_sentences(text, sentences):
    assert split_sentences(text) == sentences


def test_module_prose_keeps_docstrings_and_comments_in_order_and_drops_code():
    source = b'''"""The module docstring tells what this module is for.

>>> example_call(1, 2)
3
"""

# A comment block that explains the next function
# across two lines of plain English words.
def f(x):
    """Return the value of x after doing something rather useful with it.

    result = compute(x) + offset_value * 2
    """
    y = x  # short
    return y
'''
    assert corpus.module_prose(source) == [
        "The module docstring tells what this module is for.",
        "A comment block that explains the next function across two lines of plain English words.",
        "Return the value of x after doing something rather useful with it.",
    ]


@pytest.mark.slow
def test_the_default_corpus_is_built_once_cleaned_and_streamed(tmp_path, monkeypatch):
    monkeypatch.setenv("ENCODERKIT_CACHE", str(tmp_path))
    path = corpus.default_corpus_path()
    assert path == tmp_path / "default_corpus.txt" and os.listdir(tmp_path) == ["default_corpus.txt"]
    assert path.stat().st_size > 2_000_000
    text = path.read_text()
    lines = [line for line in text.splitlines() if line]
    assert not any(line.startswith(">>>") for line in lines)
    assert len(set(lines)) == len(lines)  # deduplicated
    documents = list(itertools.islice(iter_documents("default"), 50))
    assert len(documents) == 50 and all(len(document) >= 2 for document in documents)
    # deterministic: the same documents in the same order
    first = list(itertools.islice(corpus.default_corpus_documents(), 20))
    assert first == list(itertools.islice(corpus.default_corpus_documents(), 20))
    assert text.startswith("\n".join(first[0]) + "\n")
    # the cache is reused, not rebuilt
    mtime = path.stat().st_mtime_ns
    assert corpus.default_corpus_path() == path and path.stat().st_mtime_ns == mtime
