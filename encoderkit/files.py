"""Files that appear whole or not at all, JSON records, and Python's RNG state as JSON.

Every writer in encoderkit goes through `atomic_write`: the content goes to a temporary file beside
the target, which is then renamed over it, so a crash or a full disk never leaves a half-written file
where a complete one is expected. This module sits below data/, models/ and train/, which all write.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call `write(temporary_path)`, then rename the temporary file to `path` (its folder is created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's file is private (0600); the file gets what open() would give
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def cache_dir() -> Path:
    """Where encoderkit keeps what it builds once and reuses (the default corpus, compiled kernels):
    $ENCODERKIT_CACHE, else ~/.cache/encoderkit."""
    return Path(os.environ.get("ENCODERKIT_CACHE") or Path.home() / ".cache" / "encoderkit")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8, newlines as given) atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as file:
            file.write(text)

    atomic_write(path, write)


def write_json(path: str | os.PathLike, data) -> None:
    """Write `data` as indented JSON atomically."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def replace_dir(directory: Path, fill: Callable[[Path], None]) -> None:
    """Build a new `directory` with `fill(new_dir)` beside the old one, then swap it in by renames.

    At every moment `directory` holds either the old complete content or the new complete content.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}-new-"))
    try:
        fill(new)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    old = directory.with_name(f".{directory.name}-old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(new, directory)
    shutil.rmtree(old, ignore_errors=True)


def jsonl_rows(path: Path, error: type[Exception]) -> Iterator[tuple[int, str, object]]:
    """(line number, where, parsed value) for each non-blank line of a JSON Lines file, `where` naming the file
    and the line; a line that is not JSON raises `error` saying so there."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                yield number, where, json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{where}: not valid JSON ({err})") from None


def rng_state_to_json(state: tuple) -> list:
    """`random.Random.getstate()` as JSON-ready lists."""
    version, internal, gauss_next = state
    return [version, list(internal), gauss_next]


def rng_state_from_json(state: list) -> tuple:
    """The inverse of rng_state_to_json, ready for `random.Random.setstate`."""
    version, internal, gauss_next = state
    return version, tuple(internal), gauss_next
