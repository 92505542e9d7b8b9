"""Reading stdin line by line for the commands that answer each line (fill-mask, rtd)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TextIO


class LineError(ValueError):
    """This line cannot be answered; the stream goes on."""


def answer_lines(lines: Iterable[str], answer: Callable[[str], dict], render_text: Callable[[str, dict], str],
                 fmt: str, out: TextIO, err: TextIO) -> int:
    """Answer each non-blank line as it arrives, in text or jsonl; a LineError goes to `err` as
    `line N: ...` and the stream goes on. Returns the number of lines that failed."""
    failed = 0
    for number, raw in enumerate(lines, start=1):
        text = raw.rstrip("\n")
        if not text.strip():
            continue
        try:
            result = answer(text)
        except LineError as error:
            err.write(f"line {number}: {error}\n")
            failed += 1
            continue
        if fmt == "jsonl":
            out.write(json.dumps({"line": number, "text": text, **result}) + "\n")
        else:
            out.write(render_text(text, result))
        out.flush()
    return failed
