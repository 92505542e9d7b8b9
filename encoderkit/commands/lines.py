"""Answering stdin line by line, in batches, for the commands that answer each line (fill-mask, rtd, predict).

A command describes how it answers (`LineTask`: prepare one line, run a batch of prepared lines, render one
answer as text); `answer_stream` does the rest:

- Lines are read as bytes and split on b"\\n" only (a form feed or U+2028 inside a line is text, not a line
  break, so line numbers match `wc -l` and editors); a trailing b"\\r" is dropped; the last line needs no
  newline. Invalid UTF-8 is decoded with U+FFFD in place of the bad bytes and a note on stderr.
- Blank lines are skipped. A line that cannot be answered (LineError, or any failure of the model on it)
  gets one `line N: what is wrong` on stderr and nothing on stdout; the stream goes on, and the caller exits
  with 1 at the end if any line failed. A line answered with a caveat (bad UTF-8, cut to the model's
  positions) gets `line N: note: ...`.
- Read-ahead takes only lines already available (a select() on the pipe or TTY), up to a window of
  READ_AHEAD batches; within it lines are sorted by length so batches carry little padding, and a line much
  longer than its neighbours gets a batch of its own. Answers are written in input order and flushed after
  every batch, so a line typed alone is answered alone, at once.
- JSONL holds the line number, the text and the answer at full precision; the text format may round.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TextIO

from encoderkit.errors import UserError

FORMATS = ("text", "jsonl")
DEVICES = ("cpu", "cuda", "auto")
DTYPES = ("fp32", "bf16", "fp16")
# Batches of 32 sentences keep a 2-16 core CPU busy (GEMMs of 32 x 128 rows) at a few hundred MB of
# activations for a base-size model; larger batches gain little on a CPU and delay the first answer.
DEFAULT_BATCH_SIZE = 32
READ_AHEAD = 16  # batches read ahead and sorted by length together (stdin_throughput's: 9% padding; 30% at 4)
CHUNK_BYTES = 1 << 16


class LineError(ValueError):
    """This line cannot be answered; the stream goes on."""


class InferenceOptionError(UserError):
    """A --device, --dtype, --batch-size or --format value these commands cannot use."""


@dataclass
class Prepared:
    """A line made ready for the model: `size` (its tokens) orders the batches, `data` is the command's own,
    `note` (if any) is said on stderr though the line is answered (e.g. truncated)."""

    size: int
    data: Any
    note: str | None = None


@dataclass
class LineTask:
    """How a command answers lines: `prepare(text) -> Prepared` (raises LineError for a line it cannot
    answer), `run(list of Prepared.data) -> list of answer dicts` (one forward pass), `render(text, answer)`
    the text format of an answer (ending in a newline)."""

    prepare: Callable[[str], Prepared]
    run: Callable[[list], list[dict]]
    render: Callable[[str, dict], str]


# --------------------------------------------------------------------------------------------------
# reading


class LineReader:
    """Numbered raw lines of a binary stream, handed out in windows of what has already arrived."""

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        try:
            self.fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # an in-memory stream: everything is available
            self.fd = None
        self.buffer = bytearray()
        self.start = 0  # where the next line begins in buffer
        self.eof = False
        self.number = 0

    def window(self, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` (number, line) pairs: waits for the first line, then takes only what is available."""
        lines = []
        while len(lines) < limit:
            end = self.buffer.find(b"\n", self.start)
            if end >= 0:
                lines.append(self._take(end, end + 1))
            elif self.eof:
                if self.start < len(self.buffer):
                    lines.append(self._take(len(self.buffer), len(self.buffer)))
                break
            elif lines and not self._available():
                break
            else:
                self._read()
        return lines

    def _take(self, end: int, next_start: int) -> tuple[int, bytes]:
        self.number += 1
        line = bytes(self.buffer[self.start:end])
        self.start = next_start
        return self.number, line

    def _available(self) -> bool:
        if self.fd is None:
            return True
        try:
            return bool(select.select([self.fd], [], [], 0)[0])
        except (OSError, ValueError):  # a stream select() cannot watch: read as if it had data
            return True

    def _read(self) -> None:
        del self.buffer[:self.start]
        self.start = 0
        chunk = os.read(self.fd, CHUNK_BYTES) if self.fd is not None else self.stream.read1(CHUNK_BYTES)
        if chunk:
            self.buffer += chunk
        else:
            self.eof = True


def decode_line(raw: bytes) -> tuple[str, str | None]:
    """The text of a raw line (no trailing \\r) and a note if it was not valid UTF-8."""
    raw = raw.removesuffix(b"\r")
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as err:
        note = (f"invalid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1}), read with U+FFFD "
                "in place of the bad bytes")
        return raw.decode("utf-8", errors="replace"), note


# --------------------------------------------------------------------------------------------------
# answering


@dataclass
class _Slot:
    """One line of a window: what goes to stdout and stderr once it is its turn."""

    number: int
    text: str
    messages: list[str] = field(default_factory=list)
    answer: dict | None = None
    failed: bool = False
    done: bool = False


def answer_stream(stream: BinaryIO, task: LineTask, fmt: str, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
                  batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """Answer every line of `stream` (see the module's docstring); returns the number of lines that failed."""
    reader = LineReader(stream)
    failed = 0
    while window := reader.window(batch_size * READ_AHEAD):
        failed += _answer_window(window, task, fmt, out, err, batch_size)
    return failed


def _answer_window(window: Sequence[tuple[int, bytes]], task: LineTask, fmt: str, out: TextIO, err: TextIO,
                   batch_size: int) -> int:
    slots, pending = [], []
    for number, raw in window:
        text, note = decode_line(raw)
        slot = _Slot(number, text, [f"note: {note}"] if note else [])
        slots.append(slot)
        if not text.strip():
            slot.done = True
            continue
        try:
            prepared = task.prepare(text)
        except LineError as error:
            slot.messages.append(str(error))
            slot.failed = slot.done = True
            continue
        if prepared.note:
            slot.messages.append(f"note: {prepared.note}")
        pending.append((slot, prepared))
    pending.sort(key=lambda item: item[1].size)
    written = 0
    for batch in _length_batches(pending, batch_size):
        for (slot, _), answer in zip(batch, _run_guarded(task, [prepared.data for _, prepared in batch])):
            if isinstance(answer, Exception):
                slot.messages.append(f"the model failed on this line ({type(answer).__name__}: {answer})")
                slot.failed = True
            else:
                slot.answer = answer
            slot.done = True
        written = _write_ready(slots, written, fmt, task.render, out, err)
    _write_ready(slots, written, fmt, task.render, out, err)
    return sum(slot.failed for slot in slots)


def _length_batches(pending: list[tuple[_Slot, Prepared]], batch_size: int) -> list[list[tuple[_Slot, Prepared]]]:
    """Batches of up to `batch_size` lines, in order of size, cut early where the next line would make the
    batch more than half padding: a line much longer than the rest then runs apart instead of padding 31
    others to its length (attention works on the padded batch)."""
    batches, batch, tokens = [], [], 0
    for item in pending:
        size = item[1].size
        if batch and (len(batch) == batch_size or (len(batch) + 1) * size > 2 * (tokens + size)):
            batches.append(batch)
            batch, tokens = [], 0
        batch.append(item)
        tokens += size
    return [*batches, batch] if batch else batches


def _run_guarded(task: LineTask, batch: list) -> list:
    """The answers of a batch; if the batch fails, each line alone, so one bad line cannot take the others
    (or the stream) with it: a line that fails alone gets its exception as its answer."""
    try:
        answers = task.run(batch)
    except Exception as error:  # noqa: BLE001 (any failure stays with its line)
        if len(batch) == 1:
            return [error]
        return [answer for data in batch for answer in _run_guarded(task, [data])]
    return answers


def _write_ready(slots: list[_Slot], written: int, fmt: str, render: Callable[[str, dict], str], out: TextIO,
                 err: TextIO) -> int:
    """Write the finished lines that follow the last written one, in input order; returns the new count."""
    while written < len(slots) and slots[written].done:
        slot = slots[written]
        for message in slot.messages:
            err.write(f"line {slot.number}: {message}\n")
        if slot.answer is not None:
            if fmt == "jsonl":
                out.write(json.dumps({"line": slot.number, "text": slot.text, **slot.answer}) + "\n")
            else:
                out.write(render(slot.text, slot.answer))
        written += 1
    out.flush()
    err.flush()
    return written


# --------------------------------------------------------------------------------------------------
# options and batches shared by the three commands


def check_options(fmt: str, batch_size: int) -> None:
    if fmt not in FORMATS:
        raise InferenceOptionError(f"--format: '{fmt}' is not one of: {', '.join(FORMATS)}")
    if batch_size < 1:
        raise InferenceOptionError(f"--batch-size: {batch_size} lines; give 1 or more")


def resolve_device(device: str, dtype: str):
    """(torch.device, torch.dtype) for --device and --dtype, or one line saying why not."""
    import torch

    if device not in DEVICES:
        raise InferenceOptionError(f"--device: '{device}' is not one of: {', '.join(DEVICES)}")
    if dtype not in DTYPES:
        raise InferenceOptionError(f"--dtype: '{dtype}' is not one of: {', '.join(DTYPES)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InferenceOptionError("--device: cuda is not available here (torch sees no CUDA GPU); use --device "
                                   "cpu or auto")
    if device == "cuda" and dtype == "bf16" and not torch.cuda.is_bf16_supported():
        raise InferenceOptionError("--dtype: this GPU has no bf16 support; use fp16 or fp32")
    return torch.device(device), {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, device) -> tuple:
    """(input_ids, attention_mask) of sequences padded on the right to the longest, on `device`."""
    import torch

    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, :len(ids)] = 1
    return input_ids.to(device), attention_mask.to(device)


@contextlib.contextmanager
def announce_if_slow(message: str, err: TextIO | None = None, after_s: float = 1.0):
    """Say `message` on `err` (one line) if the block runs longer than `after_s`: loading a model or
    compiling kernels, so a user at a terminal knows the command is not stuck.

    By default `err` is stderr, and only when it is a terminal: in a pipeline or a log a usage error then stays
    the one line it is, however slow the machine."""
    if err is None:
        err = sys.stderr if sys.stderr.isatty() else None
    if err is None:
        yield
        return
    timer = threading.Timer(after_s, lambda: (err.write(f"{message}\n"), err.flush()))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
