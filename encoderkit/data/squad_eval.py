"""From start/end logits to answers, and the official SQuAD v1.1 / v2.0 evaluation of them.

`answers_from_logits` is transformers' run_qa post-processing (utils_qa.postprocess_qa_predictions): per example,
the n_best_size best start and end tokens of every window, pairs inside the context with
end >= start and at most max_answer_length tokens, the text cut from the context by character offsets; for
v2.0 the null answer, scored by the lowest [CLS] start + end logit over the example's windows, and each
example's null odds (null score - the best non-null answer's score), which `predictions_at_threshold` turns
into "" above a threshold. `squad_v1_scores` and `squad_v2_scores` compute exact match and F1 as the official
evaluation scripts (evaluate-v1.1.py, evaluate-v2.0.py) do, v2.0 with its HasAns/NoAns split and the best
null threshold (find_best_thresh).
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class QAPrediction:
    """An example's best non-null answer, its probability among the n-best, its character span in the context,
    and (v2.0) its null odds: null score - the answer's score; the answer is "" where these pass the threshold."""

    text: str
    probability: float
    span: tuple[int, int]
    null_odds: float | None = None


def answers_from_logits(contexts: Sequence[str], example_index: Sequence[int], offsets: Sequence[list],
                        start_logits: torch.Tensor, end_logits: torch.Tensor, version_2: bool,
                        n_best_size: int = 20, max_answer_length: int = 30) -> list[QAPrediction]:
    """The prediction of each example (contexts[i]) from the logits of its features (features f with
    example_index[f] == i, with their token offsets); logits are (features, tokens), padding ignored."""
    features = collections.defaultdict(list)
    for feature, example in enumerate(example_index):
        features[example].append(feature)
    predictions = []
    for example, context in enumerate(contexts):
        candidates, null = [], None  # (score, start logit, end logit, span); null: the lowest [CLS] score
        for feature in features[example]:
            start, end, spans = start_logits[feature].tolist(), end_logits[feature].tolist(), offsets[feature]
            if null is None or start[0] + end[0] < null[0]:
                null = (start[0] + end[0], start[0], end[0], None)
            best_starts = torch.argsort(start_logits[feature], descending=True)[:n_best_size].tolist()
            best_ends = torch.argsort(end_logits[feature], descending=True)[:n_best_size].tolist()
            for s in best_starts:
                for e in best_ends:
                    if s >= len(spans) or e >= len(spans) or spans[s] is None or spans[e] is None:
                        continue  # outside the context
                    if e < s or e - s + 1 > max_answer_length:
                        continue
                    candidates.append((start[s] + end[e], start[s], end[e], (spans[s][0], spans[e][1])))
        if version_2 and null is not None:
            candidates.append(null)
        best = sorted(candidates, key=lambda c: c[0], reverse=True)[:n_best_size]
        if version_2 and null is not None and not any(c[3] is None for c in best):
            best.append(null)  # the null answer stays among the n-best even when it scores lower
        texts = ["" if c[3] is None else context[c[3][0] : c[3][1]] for c in best]
        if not best or (len(best) == 1 and texts[0] == ""):  # run_qa's placeholder when nothing else is left
            best.insert(0, (0.0, 0.0, 0.0, (0, 0)))
            texts.insert(0, "empty")
        probabilities = torch.tensor([c[0] for c in best], dtype=torch.float64).softmax(0).tolist()
        chosen = next(i for i, text in enumerate(texts) if text != "") if version_2 else 0
        null_odds = None
        if version_2:
            null_odds = null[0] - best[chosen][1] - best[chosen][2]
        predictions.append(QAPrediction(texts[chosen], probabilities[chosen], best[chosen][3] or (0, 0), null_odds))
    return predictions


def predictions_at_threshold(ids: Sequence[str], predictions: Sequence[QAPrediction],
                             threshold: float = 0.0) -> dict[str, str]:
    """{id: answer text}, "" where the null odds exceed `threshold` (v2.0): predictions.json's content."""
    return {id_: "" if p.null_odds is not None and p.null_odds > threshold else p.text
            for id_, p in zip(ids, predictions, strict=True)}


# ---- the official evaluation --------------------------------------------------------------------


PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, collapse whitespace (both official scripts)."""
    text = "".join(char for char in text.lower() if char not in PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text, flags=re.UNICODE).split())


def exact_match(gold: str, prediction: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(prediction))


def f1(gold: str, prediction: str, version_2: bool) -> float:
    """Token F1 of the normalised answers. v2.0 scores two empty answers 1 (an unanswerable question answered
    with ""); v1.1 scores any pair with no token in common 0."""
    gold_tokens, predicted_tokens = normalize_answer(gold).split(), normalize_answer(prediction).split()
    if version_2 and (not gold_tokens or not predicted_tokens):
        return float(gold_tokens == predicted_tokens)
    same = sum((collections.Counter(gold_tokens) & collections.Counter(predicted_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_v1_scores(golds: dict[str, list[str]], predictions: dict[str, str]) -> dict[str, float]:
    """evaluate-v1.1.py: the best EM and F1 over each question's gold answers, in percent; a question without a
    prediction scores 0."""
    exact = [max(exact_match(g, predictions.get(q, "")) for g in answers) if q in predictions else 0
             for q, answers in golds.items()]
    f1s = [max(f1(g, predictions[q], False) for g in answers) if q in predictions else 0.0
           for q, answers in golds.items()]
    return {"exact_match": 100.0 * sum(exact) / len(golds), "f1": 100.0 * sum(f1s) / len(golds)}


def squad_v2_scores(golds: dict[str, list[str]], predictions: dict[str, str],
                    null_odds: dict[str, float] | None = None) -> dict[str, float]:
    """evaluate-v2.0.py: exact and f1 (percent) over the predicted questions, the HasAns / NoAns split, and with
    `null_odds` (its --na-prob-file, threshold 1.0) best_exact / best_f1 at the best threshold on these odds."""
    has_answer = {}
    exact, f1s = {}, {}
    for q, answers in golds.items():
        answers = _golds_v2(answers)
        has_answer[q] = answers != [""]
        if q not in predictions:
            continue  # the official script reports it missing and leaves it out
        exact[q] = max(exact_match(a, predictions[q]) for a in answers)
        f1s[q] = max(f1(a, predictions[q], True) for a in answers)
    if null_odds is not None:  # apply_no_ans_threshold at the script's default --na-prob-thresh 1.0
        exact = {q: float(not has_answer[q]) if null_odds[q] > 1.0 else s for q, s in exact.items()}
        f1s = {q: float(not has_answer[q]) if null_odds[q] > 1.0 else s for q, s in f1s.items()}
    scores = _percentages(exact, f1s, list(exact))
    for name, wanted in (("HasAns", True), ("NoAns", False)):
        subset = [q for q in exact if has_answer[q] == wanted]
        if subset:
            scores.update({f"{name}_{key}": value for key, value in _percentages(exact, f1s, subset).items()})
    if null_odds is not None:
        raw_exact = {q: max(exact_match(a, predictions[q]) for a in _golds_v2(golds[q])) for q in exact}
        raw_f1 = {q: max(f1(a, predictions[q], True) for a in _golds_v2(golds[q])) for q in exact}
        for name, raw in (("exact", raw_exact), ("f1", raw_f1)):
            best, threshold = best_threshold(predictions, raw, null_odds, has_answer)
            scores[f"best_{name}"], scores[f"best_{name}_thresh"] = best, threshold
    return scores


def _golds_v2(answers: list[str]) -> list[str]:
    """The gold answers that normalise to something; none: "" is the right answer."""
    return [a for a in answers if normalize_answer(a)] or [""]


def _percentages(exact: dict, f1s: dict, questions: list[str]) -> dict[str, float]:
    total = len(questions)
    return {"exact": 100.0 * sum(exact[q] for q in questions) / total if total else 0.0,
            "f1": 100.0 * sum(f1s[q] for q in questions) / total if total else 0.0, "total": total}


def best_threshold(predictions: dict[str, str], scores: dict[str, float], null_odds: dict[str, float],
                   has_answer: dict[str, bool]) -> tuple[float, float]:
    """find_best_thresh of evaluate-v2.0.py: answering the questions in increasing null odds, the best total
    score (percent of the scored questions) and the odds of the last question answered there (0.0 if none)."""
    score = best = sum(1 for q in has_answer if not has_answer[q])
    threshold = 0.0
    for q in sorted(null_odds, key=lambda q: null_odds[q]):
        if q not in scores:
            continue
        if has_answer[q]:
            score += scores[q]
        elif predictions[q]:
            score -= 1
        if score > best:
            best, threshold = score, null_odds[q]
    return 100.0 * best / len(scores), threshold
