"""Tiny corpora and a tiny tokenizer shared by the data pipeline tests."""

import functools
import random

from encoderkit.data.tokenizer import Tokenizer

WORDS = (
    "the a an cat dog bird fish sees likes chases follows runs sleeps sits on under near over big small red "
    "blue green old young happy house garden river tree road hill quickly slowly and but then because when "
    "morning evening night every some many few water stone light shadow"
).split()
# made-up longer words, so that many words are several pieces (whole-word masking has work to do)
_SYLLABLES = "ka lo mi ren tu sha vo pel dri nox qua zim".split()
WORDS += ["".join(random.Random(i).choices(_SYLLABLES, k=2 + i % 3)) for i in range(150)]


def random_sentence(rng: random.Random, min_words: int = 4, max_words: int = 12) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))]
    return " ".join(words).capitalize() + rng.choice(".!?")


def random_documents(seed: int, count: int, min_sentences: int = 2, max_sentences: int = 8) -> list[list[str]]:
    rng = random.Random(seed)
    return [[random_sentence(rng) for _ in range(rng.randint(min_sentences, max_sentences))] for _ in range(count)]


def write_txt(path, documents: list[list[str]]):
    """One sentence a line, a blank line after each document."""
    path.write_text("".join("\n".join(document) + "\n\n" for document in documents))
    return path


@functools.cache
def tiny_tokenizer() -> Tokenizer:
    """A 200-piece unigram tokenizer trained on the tiny vocabulary above (once per test session)."""
    sentences = [sentence for document in random_documents(0, 300) for sentence in document]
    return Tokenizer.train(sentences, vocab_size=200, num_threads=1)
