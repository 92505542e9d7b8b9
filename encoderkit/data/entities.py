"""Entity-level precision / recall / F1 of tag sequences, exactly as `seqeval` computes them in its default
mode (conlleval's chunking rules, which read BIO, IOB1 and BIOES tags), with a per-type table; and token
accuracy. tests/test_token_data.py checks every number against seqeval itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

# A tag's prefix: B(egin), I(nside), E(nd), S(ingle), O(utside); conlleval also knows "." (a sentence end).
ENTITY_PREFIXES = ("B-", "I-", "E-", "S-")


def is_entity_tagging(tags: Sequence[str]) -> bool:
    """Whether a tag set is BIO / BIOES (every tag O or a prefix and a type), so entity scores apply."""
    return any(tag != "O" for tag in tags) and all(tag == "O" or tag.startswith(ENTITY_PREFIXES) for tag in tags)


def _split(tag: str) -> tuple[str, str]:
    # seqeval: the first character is the prefix, the type what follows its hyphen ("_" when none)
    return tag[0], tag[1:].split("-", maxsplit=1)[-1] or "_"


# seqeval's end_of_chunk and start_of_chunk, condition for condition.
def _ends(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    return (prev_tag in ("E", "S") or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
            or (prev_tag not in ("O", ".") and prev_type != type_))


def _starts(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    return (tag in ("B", "S") or (prev_tag in ("E", "S", "O") and tag in ("E", "I"))
            or (tag not in ("O", ".") and prev_type != type_))


def entities(sentences: Sequence[Sequence[str]]) -> set[tuple[str, int, int]]:
    """(type, first, last) of every entity, positions counted over the sentences joined with an O between them."""
    found, begin = set(), 0
    prev_tag, prev_type = "O", ""
    flat = [tag for sentence in sentences for tag in [*sentence, "O"]]
    for i, each in enumerate([*flat, "O"]):
        tag, type_ = _split(each)
        if _ends(prev_tag, tag, prev_type, type_):
            found.add((prev_type, begin, i - 1))
        if _starts(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return found


def _prf(correct: int, predicted: int, true: int) -> dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / true if true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_scores(true: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """Micro precision/recall/F1 over all entities, and per type the same with its support (true entities)."""
    gold, guess = entities(true), entities(predicted)
    correct = gold & guess
    by_type = {}
    for type_ in sorted({entity[0] for entity in gold | guess}):
        count = Counter(entity[0] == type_ for entity in correct)[True]
        support = sum(entity[0] == type_ for entity in gold)
        by_type[type_] = {**_prf(count, sum(entity[0] == type_ for entity in guess), support), "support": support}
    return {**_prf(len(correct), len(guess), len(gold)), "per_type": by_type}


def token_accuracy(true: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    pairs = [(t, p) for ts, ps in zip(true, predicted, strict=True) for t, p in zip(ts, ps, strict=True)]
    return sum(t == p for t, p in pairs) / len(pairs) if pairs else 0.0


def tagging_metrics(true: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], with_entities: bool) -> dict:
    """{accuracy, and for BIO/BIOES tags precision, recall, f1}: the flat scores the best checkpoint is picked by."""
    scores = {"accuracy": token_accuracy(true, predicted)}
    if with_entities:
        scores.update({k: v for k, v in entity_scores(true, predicted).items() if k != "per_type"})
    return scores
