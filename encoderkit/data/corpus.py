"""Documents from a text corpus: local files, a Hugging Face hub dataset, or the embedded default corpus.

A document is a list of sentence strings. Every source is streamed through `datasets`, one document
per row of a "text" column: in .txt files a blank line ends a document; in .jsonl/.json/.parquet files
each row's "text" field is one document.
"""

from __future__ import annotations

import ast
import glob
import os
import re
import sysconfig
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import datasets

from encoderkit.data.hub import load_split
from encoderkit.errors import UserError
from encoderkit.files import atomic_write, cache_dir

SourceLike = str | os.PathLike | Iterable[str | os.PathLike]

# file suffix -> datasets builder that streams it
FILE_BUILDERS = {".txt": "text", ".text": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


class CorpusError(UserError):
    """A corpus source that cannot be read: missing file, no "text" column, unreachable hub."""


# ---------------------------------------------------------------------------------------------------
# Sources -> streamed datasets


def load_corpus(source: SourceLike, split: str = "train") -> datasets.IterableDataset:
    """Stream `source` as an IterableDataset with one document (raw text) per row in its "text" column.

    `source` is "default" (the embedded corpus), a hub dataset name ("owner/name" or "owner/name:config"),
    or local .txt/.jsonl/.json/.parquet files: a path, a glob, or a list of them.
    """
    if isinstance(source, str | os.PathLike) and str(source) == "default":
        return _load_files("text", [str(default_corpus_path())])
    files = local_files(source)
    if files is None:
        return _load_hub(str(source), split)
    return _load_files(FILE_BUILDERS[Path(files[0]).suffix.lower()], files)


def local_files(source: SourceLike) -> list[str] | None:
    """The files a local `source` names (a path, a glob, or a list of them), each checked to exist and all of one
    type; None for "default" and hub names. A recipe is checked with it before anything runs."""
    if isinstance(source, str | os.PathLike):
        if str(source) == "default" or not _is_local(str(source)):
            return None
        source = [source]
    files = _expand_files([str(path) for path in source])
    if not files:
        raise CorpusError("an empty list of files; give 'default', a hub dataset name, or files")
    builders = {FILE_BUILDERS[Path(file).suffix.lower()] for file in files}
    if len(builders) > 1:
        raise CorpusError(f"mixed file types in one corpus ({', '.join(sorted(builders))}): {files}")
    return files


def iter_documents(source: SourceLike, split: str = "train") -> Iterator[list[str]]:
    """Yield the documents of `source` (see `load_corpus`), each as a list of sentences."""
    for row in load_corpus(source, split):
        sentences = split_sentences(row["text"] or "")
        if sentences:
            yield sentences


def _is_local(source: str) -> bool:
    return os.path.exists(source) or glob.has_magic(source) or Path(source).suffix.lower() in FILE_BUILDERS


def _expand_files(patterns: list[str]) -> list[str]:
    files = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise CorpusError(f"no file matches the glob {pattern!r}")
        elif not os.path.isfile(pattern):
            raise CorpusError(f"no such corpus file: {pattern!r}")
        else:
            matches = [pattern]
        for file in matches:
            if Path(file).suffix.lower() not in FILE_BUILDERS:
                raise CorpusError(f"unsupported corpus file {file!r}: expected one of {sorted(FILE_BUILDERS)}")
        files.extend(matches)
    return files


def _load_files(builder: str, files: list[str]) -> datasets.IterableDataset:
    # a blank line ends a document in text files
    options = {"sample_by": "paragraph"} if builder == "text" else {}
    dataset = datasets.load_dataset(builder, data_files=files, split="train", streaming=True, **options)
    return _require_text_column(dataset, f"{files[0]}" if len(files) == 1 else f"{files}")


def _load_hub(name: str, split: str) -> datasets.IterableDataset:
    dataset = load_split(name, split, CorpusError, "use local files or 'default'", streaming=True)
    return _require_text_column(dataset, name)


def _require_text_column(dataset: datasets.IterableDataset, where: str) -> datasets.IterableDataset:
    # streamed json has no features until read: peek at the first row
    columns = dataset.column_names or list(next(iter(dataset), {"text": None}))
    if "text" not in columns:
        raise CorpusError(f"no 'text' column in {where} (columns: {columns})")
    return dataset.select_columns(["text"])


# ---------------------------------------------------------------------------------------------------
# Text -> sentences

# end of sentence: . ! ? (and closing quotes/brackets) before whitespace and a capital or opening quote
_SENTENCE_END = re.compile(r"""[.!?]+["')\]]*(?=\s+["'(\[]?[A-Z])""")
_ABBREVIATIONS = frozenset("mr mrs ms dr prof st jr sr vs etc e.g i.e cf fig no vol approx".split())


def split_sentences(text: str) -> list[str]:
    """Split text into sentences at line breaks and at . ! ? followed by a capitalised word."""
    sentences = []
    for line in text.splitlines():
        start = 0
        for end in _SENTENCE_END.finditer(line):
            last_word = line[start : end.start()].rsplit(maxsplit=1)[-1:]
            if last_word and last_word[0].lower().lstrip("(\"'") in _ABBREVIATIONS:
                continue
            sentences.append(line[start : end.end()].strip())
            start = end.end()
        sentences.append(line[start:].strip())
    return [sentence for sentence in sentences if sentence]


# ---------------------------------------------------------------------------------------------------
# The embedded default corpus: English prose that ships with Python itself

MIN_PARAGRAPH_WORDS = 5
MIN_DOCUMENT_WORDS = 30


def default_corpus_path() -> Path:
    """Path of the default corpus text file, built on first use (a few seconds) and cached.

    The cache directory is $ENCODERKIT_CACHE, else ~/.cache/encoderkit.
    """
    path = cache_dir() / "default_corpus.txt"
    if not path.exists():
        write_default_corpus(path)
    return path


def write_default_corpus(path: Path) -> None:
    """Write the default corpus to `path` atomically: one paragraph a line, a blank line after each document."""

    def write(tmp: str) -> None:  # each process writes its own temporary file; the last rename wins
        with open(tmp, "w", encoding="utf-8") as file:
            for document in default_corpus_documents():
                file.write("\n".join(document) + "\n\n")

    atomic_write(path, write)


def default_corpus_documents() -> Iterator[list[str]]:
    """Documents (lists of one-line paragraphs) of the default corpus, deduplicated, in a fixed order.

    One document per source file: the docstrings and prose comments of a standard-library module (and
    of the modules in the pip/setuptools wheels bundled with ensurepip) in source order; one per
    `pydoc_data.topics` topic. Nothing is imported: sources are parsed with `ast`.
    """
    seen = set()
    for document in _raw_default_documents():
        unique = []
        for paragraph in document:
            if paragraph not in seen:
                seen.add(paragraph)
                unique.append(paragraph)
        if sum(len(paragraph.split()) for paragraph in unique) >= MIN_DOCUMENT_WORDS:
            yield unique


def _raw_default_documents() -> Iterator[list[str]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for file in _stdlib_sources(stdlib):
        yield module_prose(file.read_bytes())
    for wheel in sorted((stdlib / "ensurepip" / "_bundled").glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            for name in sorted(name for name in archive.namelist() if name.endswith(".py")):
                yield module_prose(archive.read(name))
    topics = _pydoc_topics(stdlib / "pydoc_data" / "topics.py")
    for name in sorted(topics):
        yield prose_paragraphs(topics[name], indented_is_code=True)


def _stdlib_sources(stdlib: Path) -> list[Path]:
    # tests are code more than prose; pydoc_data's topics are read apart
    skipped_dirs = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test", "pydoc_data"}
    files = []
    for directory, subdirs, names in os.walk(stdlib):
        subdirs[:] = [name for name in subdirs if name not in skipped_dirs]
        files.extend(Path(directory) / name for name in names if name.endswith(".py"))
    return sorted(files)


def _pydoc_topics(path: Path) -> dict[str, str]:
    # topics.py is a single assignment `topics = {...}` of string literals
    for node in ast.parse(path.read_bytes()).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            return ast.literal_eval(node.value)
    return {}


_COMMENT_LINE = re.compile(r"^\s*#\s?(.*)$")


def module_prose(source: bytes) -> list[str]:
    """Prose of a Python module in source order: its docstrings and comment blocks."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    texts = [(getattr(node, "lineno", 0), ast.get_docstring(node)) for node in _documented_nodes(tree)]
    # consecutive comment lines form one block of text
    block: list[str] = []
    for number, line in enumerate(source.decode("utf-8", "replace").splitlines()):
        comment = _COMMENT_LINE.match(line)
        if comment:
            block.append(comment.group(1))
        elif block:
            texts.append((number, "\n".join(block)))
            block = []
    return [paragraph for _, text in sorted(texts) if text for paragraph in prose_paragraphs(text)]


def _documented_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """The module, class and function nodes under `node`, visiting statements only (much faster than ast.walk)."""
    if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        yield node
    for field in ("body", "orelse", "finalbody", "handlers", "cases"):
        for child in getattr(node, field, ()):
            if isinstance(child, ast.stmt | ast.excepthandler | ast.match_case):
                yield from _documented_nodes(child)


# a plain word, maybe capitalised, hyphenated or wrapped in punctuation: "word", "(Word,", "don't."
_PLAIN_WORD = re.compile(r"""[("'*]*[A-Za-z][a-z]*(?:['-][a-z]+)*[.,;:!?)"'*]*""")
MIN_PLAIN_WORD_FRACTION = 0.75


def _is_prose(paragraph: str) -> bool:
    words = paragraph.split()
    plain = sum(bool(_PLAIN_WORD.fullmatch(word)) for word in words)
    return len(words) >= MIN_PARAGRAPH_WORDS and plain >= MIN_PLAIN_WORD_FRACTION * len(words)


def prose_paragraphs(text: str, indented_is_code: bool = False) -> list[str]:
    """Blank-line separated paragraphs of `text` that read as English prose, each joined into one line.

    Doctest blocks and code-like paragraphs go, as do (with `indented_is_code`, for reStructuredText)
    paragraphs whose first line is indented.
    """
    paragraphs = []
    for block in re.split(r"\n[ \t]*\n", text):
        lines = block.strip("\n").splitlines()
        if not lines or any(line.lstrip().startswith(">>>") for line in lines):
            continue
        if indented_is_code and lines[0][:1].isspace():
            continue
        paragraph = " ".join(block.split())  # also folds form feeds and other odd line breaks
        if _is_prose(paragraph):
            paragraphs.append(paragraph)
    return paragraphs
