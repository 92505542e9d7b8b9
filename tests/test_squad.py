"""SQuAD data: readers and their errors, features against transformers' run_qa, post-processing against run_qa's
utils_qa, and the official v1.1 / v2.0 EM/F1 rules on hand-computed cases."""

import collections
import json
import random

import numpy as np
import pytest
import torch
from data_helpers import tiny_tokenizer
from test_wordpiece import write_vocab

from encoderkit.data.bpe import ByteLevelBPETokenizer
from encoderkit.data.squad import (
    Answer,
    QADataError,
    QAExample,
    answer_found,
    build_features,
    load_examples,
    window_starts,
)
from encoderkit.data.squad_eval import (
    answers_from_logits,
    exact_match,
    f1,
    normalize_answer,
    predictions_at_threshold,
    squad_v1_scores,
    squad_v2_scores,
)
from encoderkit.data.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")

WORDS = "the cat sees dog near river paris is capital of france cafe quick brown fox jump over lazy walk".split()


def generated_examples(count, seed=0, unanswerable=False):
    """Contexts of 20-60 words; the answer is 1-3 words somewhere in them (none for every third, if asked)."""
    rng = random.Random(seed)
    examples = []
    for i in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(20, 60))]
        separators = ["  " if k == 5 else " " for k in range(len(words))]  # a whitespace run too
        starts, context = [], ""
        for word, separator in zip(words, separators, strict=True):
            context += separator if context else ""
            starts.append(len(context))
            context += word
        context += "."
        first, length = rng.randrange(len(words) - 3), rng.randint(1, 3)
        text = context[starts[first] : starts[first + length - 1] + len(words[first + length - 1])]
        start = starts[first]
        answers = [] if unanswerable and i % 3 == 0 else [Answer(text, start)]
        examples.append(QAExample(f"q{i}", "  where is the cat?", context, answers))
    return examples


# ---- features against transformers' run_qa -------------------------------------------------------


def run_qa_features(tokenizer, examples, max_length, stride, training):
    """run_qa.py's prepare_train_features / prepare_validation_features (pad_on_right), transcribed."""
    tokenized = tokenizer([e.question.lstrip() for e in examples], [e.context for e in examples],
                          truncation="only_second", max_length=max_length, stride=stride,
                          return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length",
                          return_token_type_ids=True)
    sample_mapping = tokenized.pop("overflow_to_sample_mapping")
    features = []
    for i, offsets in enumerate(tokenized["offset_mapping"]):
        input_ids = tokenized["input_ids"][i]
        sequence_ids = tokenized.sequence_ids(i)
        example = examples[sample_mapping[i]]
        feature = {"input_ids": input_ids, "token_type_ids": tokenized["token_type_ids"][i],
                   "example_id": example.id}
        if training:
            cls_index = input_ids.index(tokenizer.cls_token_id)
            if not example.answers:
                feature["start_positions"] = feature["end_positions"] = cls_index
            else:
                start_char = example.answers[0].start
                end_char = start_char + len(example.answers[0].text)
                token_start_index = 0
                while sequence_ids[token_start_index] != 1:
                    token_start_index += 1
                token_end_index = len(input_ids) - 1
                while sequence_ids[token_end_index] != 1:
                    token_end_index -= 1
                if not (offsets[token_start_index][0] <= start_char and offsets[token_end_index][1] >= end_char):
                    feature["start_positions"] = feature["end_positions"] = cls_index
                else:
                    while token_start_index < len(offsets) and offsets[token_start_index][0] <= start_char:
                        token_start_index += 1
                    feature["start_positions"] = token_start_index - 1
                    while offsets[token_end_index][1] >= end_char:
                        token_end_index -= 1
                    feature["end_positions"] = token_end_index + 1
        feature["offset_mapping"] = [tuple(o) if sequence_ids[k] == 1 else None for k, o in enumerate(offsets)]
        features.append(feature)
    return features


def reference_tokenizers(tmp_path):
    write_vocab(tmp_path / "wordpiece", pieces=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", *WORDS,
                                                 "where", "##s"])
    tiny_tokenizer().save(tmp_path / "spiece")
    bpe = ByteLevelBPETokenizer.train([e.context for e in generated_examples(40)] + ["where is the cat?"], 300)
    bpe.save(tmp_path / "bpe")
    return {"wordpiece": (Tokenizer.load(tmp_path / "wordpiece"),
                          transformers.BertTokenizerFast.from_pretrained(tmp_path / "wordpiece")),
            "sentencepiece": (tiny_tokenizer(), transformers.AlbertTokenizerFast.from_pretrained(tmp_path / "spiece")),
            "bpe": (Tokenizer.load(tmp_path / "bpe"),
                    transformers.RobertaTokenizerFast.from_pretrained(tmp_path / "bpe"))}


@pytest.mark.parametrize("kind", ["wordpiece", "sentencepiece", "bpe"])  # bpe: RoBERTa's <s> q </s></s> c </s>
@pytest.mark.parametrize("training", [True, False], ids=["train", "validation"])
def test_features_are_run_qa_features(tmp_path, kind, training):
    ours_tokenizer, reference = reference_tokenizers(tmp_path)[kind]
    examples = generated_examples(40, unanswerable=True)
    ours = build_features(examples, ours_tokenizer, max_seq_length=32, doc_stride=8, max_query_length=64,
                          training=training)
    theirs = run_qa_features(reference, examples, max_length=32, stride=8, training=training)
    assert len(ours) == len(theirs) > len(examples)  # several windows per example
    windows_with_answer = 0
    for f, feature in enumerate(theirs):
        length = int(ours.encoded.lengths[f])
        assert ours.encoded.input_ids[f].tolist() == feature["input_ids"]  # padded with the pad id to 32 both
        assert ours.encoded.token_type_ids[f, :length].tolist() == feature["token_type_ids"][:length]
        assert examples[ours.example_index[f]].id == feature["example_id"]
        assert ours.offsets[f] == feature["offset_mapping"][:length]
        if training:
            assert ours.encoded.labels[f].tolist() == [feature["start_positions"], feature["end_positions"]]
            windows_with_answer += feature["start_positions"] != 0
    assert not training or windows_with_answer > len(examples) // 2


def test_answer_positions_cover_the_answer_text():
    tokenizer = tiny_tokenizer()
    examples = generated_examples(30, seed=3)
    features = build_features(examples, tokenizer, 40, 10, 64, training=True)
    found = set()
    for f, (start, end) in enumerate(features.encoded.labels.tolist()):
        if start == 0:
            continue
        example = examples[features.example_index[f]]
        span = example.context[features.offsets[f][start][0] : features.offsets[f][end][1]]
        assert span == example.answers[0].text
        found.add(example.id)
    assert found == {e.id for e in examples}  # every answer lies whole in at least one window


def test_windows_overlap_by_doc_stride_and_reach_the_end():
    assert window_starts(10, 4, 1) == [0, 3, 6]
    assert window_starts(4, 4, 1) == [0]
    assert window_starts(0, 4, 1) == [0]
    with pytest.raises(ValueError, match="doc_stride"):
        build_features(generated_examples(1), tiny_tokenizer(), 16, 12, 64, training=False)


def test_question_is_cut_to_max_query_length():
    example = QAExample("q", "the cat " * 50, "the dog sees the cat.", [Answer("cat", 17)])
    features = build_features([example], tiny_tokenizer(), 64, 8, 5, training=True)
    assert features.encoded.token_type_ids[0].tolist().index(1) == 5 + 2  # [CLS] 5 question tokens [SEP]


# ---- post-processing against utils_qa.postprocess_qa_predictions --------------------------------


def postprocess_qa_predictions(examples, features, predictions, version_2_with_negative=False, n_best_size=20,
                               max_answer_length=30, null_score_diff_threshold=0.0):
    """A transcription of transformers' examples/pytorch/question-answering/utils_qa.py postprocess_qa_predictions
    (commit 31f57e9e), read with a code-search tool: the logic unchanged, logging and file writing left out;
    returns the predictions and the null score differences."""
    all_start_logits, all_end_logits = predictions
    example_id_to_index = {k: i for i, k in enumerate(examples["id"])}
    features_per_example = collections.defaultdict(list)
    for i, feature in enumerate(features):
        features_per_example[example_id_to_index[feature["example_id"]]].append(i)
    all_predictions = collections.OrderedDict()
    scores_diff_json = collections.OrderedDict()
    for example_index, example in enumerate(examples["rows"]):
        feature_indices = features_per_example[example_index]
        min_null_prediction = None
        prelim_predictions = []
        for feature_index in feature_indices:
            start_logits = all_start_logits[feature_index]
            end_logits = all_end_logits[feature_index]
            offset_mapping = features[feature_index]["offset_mapping"]
            feature_null_score = start_logits[0] + end_logits[0]
            if min_null_prediction is None or min_null_prediction["score"] > feature_null_score:
                min_null_prediction = {"offsets": (0, 0), "score": feature_null_score,
                                       "start_logit": start_logits[0], "end_logit": end_logits[0]}
            start_indexes = np.argsort(start_logits)[-1 : -n_best_size - 1 : -1].tolist()
            end_indexes = np.argsort(end_logits)[-1 : -n_best_size - 1 : -1].tolist()
            for start_index in start_indexes:
                for end_index in end_indexes:
                    if (start_index >= len(offset_mapping) or end_index >= len(offset_mapping)
                            or offset_mapping[start_index] is None or offset_mapping[end_index] is None):
                        continue
                    if end_index < start_index or end_index - start_index + 1 > max_answer_length:
                        continue
                    prelim_predictions.append(
                        {"offsets": (offset_mapping[start_index][0], offset_mapping[end_index][1]),
                         "score": start_logits[start_index] + end_logits[end_index],
                         "start_logit": start_logits[start_index], "end_logit": end_logits[end_index]})
        if version_2_with_negative:
            prelim_predictions.append(min_null_prediction)
            null_score = min_null_prediction["score"]
        predictions = sorted(prelim_predictions, key=lambda x: x["score"], reverse=True)[:n_best_size]
        if version_2_with_negative and not any(p["offsets"] == (0, 0) for p in predictions):
            predictions.append(min_null_prediction)
        context = example["context"]
        for pred in predictions:
            offsets = pred.pop("offsets")
            pred["text"] = context[offsets[0] : offsets[1]]
        if len(predictions) == 0 or (len(predictions) == 1 and predictions[0]["text"] == ""):
            predictions.insert(0, {"text": "empty", "start_logit": 0.0, "end_logit": 0.0, "score": 0.0})
        scores = np.array([pred.pop("score") for pred in predictions])
        exp_scores = np.exp(scores - np.max(scores))
        probs = exp_scores / exp_scores.sum()
        for prob, pred in zip(probs, predictions):
            pred["probability"] = prob
        if not version_2_with_negative:
            all_predictions[example["id"]] = predictions[0]["text"]
        else:
            i = 0
            while predictions[i]["text"] == "":
                i += 1
            best_non_null_pred = predictions[i]
            score_diff = null_score - best_non_null_pred["start_logit"] - best_non_null_pred["end_logit"]
            scores_diff_json[example["id"]] = float(score_diff)
            if score_diff > null_score_diff_threshold:
                all_predictions[example["id"]] = ""
            else:
                all_predictions[example["id"]] = best_non_null_pred["text"]
    return all_predictions, scores_diff_json


@pytest.mark.parametrize("version_2", [False, True], ids=["v1.1", "v2.0"])
@pytest.mark.parametrize(("n_best_size", "max_answer_length"), [(20, 30), (3, 2)])
def test_post_processing_gives_run_qa_answers(version_2, n_best_size, max_answer_length):
    examples = generated_examples(25, seed=5, unanswerable=version_2)
    features = build_features(examples, tiny_tokenizer(), 32, 8, 64, training=False)
    g = torch.Generator().manual_seed(0)
    start_logits, end_logits = torch.randn(2, len(features), 32, generator=g, dtype=torch.float64)
    start_logits[:, 0] += 3.5  # the null answer wins some examples
    end_logits[:, 0] += 3.5
    ids = [e.id for e in examples]
    ours = answers_from_logits([e.context for e in examples], features.example_index, features.offsets,
                               start_logits, end_logits, version_2, n_best_size, max_answer_length)
    reference_features = [{"example_id": ids[i], "offset_mapping": offsets}
                          for i, offsets in zip(features.example_index, features.offsets, strict=True)]
    rows = [{"id": e.id, "context": e.context} for e in examples]
    for threshold in (0.0, 1.0):
        expected, diffs = postprocess_qa_predictions({"id": ids, "rows": rows}, reference_features,
                                                     (start_logits.numpy(), end_logits.numpy()), version_2,
                                                     n_best_size, max_answer_length, threshold)
        assert predictions_at_threshold(ids, ours, threshold) == expected
    if version_2:
        assert [p.null_odds for p in ours] == pytest.approx(list(diffs.values()), abs=1e-9)
        assert 0 < sum(text == "" for text in expected.values()) < len(examples)
    for example, prediction in zip(examples, ours, strict=True):
        cut = example.context[prediction.span[0] : prediction.span[1]]
        assert cut == prediction.text or (prediction.text, prediction.span) == ("empty", (0, 0))  # run_qa's filler
        assert 0 < prediction.probability <= 1


# ---- the official evaluation: hand-computed cases ------------------------------------------------


def test_normalisation_drops_case_punctuation_articles_and_extra_spaces():
    assert normalize_answer("  The  Denver-Broncos, an  A-team!") == "denverbroncos ateam"
    assert normalize_answer("theatre and a cat") == "theatre and cat"  # "the" inside a word stays


def test_v1_exact_match_and_f1_by_hand():
    golds = {"q1": ["The Cat", "a dog"], "q2": ["Denver Broncos"], "q3": ["Denver Broncos", "Broncos"],
             "q4": ["x y z"]}
    predictions = {"q1": "cat", "q2": "Broncos of Denver", "q3": "Broncos"}  # q4 unanswered: 0
    # q2: 2 tokens in common, precision 2/3, recall 1 -> F1 0.8; q3: the second gold matches exactly
    assert squad_v1_scores(golds, predictions) == pytest.approx({"exact_match": 50.0, "f1": 70.0})
    assert f1("x y", "", version_2=False) == 0.0 and f1("", "", version_2=False) == 0.0
    assert exact_match("", "") == 1


def test_v2_scores_has_ans_no_ans_and_best_threshold_by_hand():
    golds = {"q1": ["Paris"], "q2": [], "q3": ["blue whale"], "q4": ["a"]}  # "a" normalises to nothing: no answer
    predictions = {"q1": "Paris", "q2": "", "q3": "whale", "q4": "something"}
    scores = squad_v2_scores(golds, predictions)
    # q3: precision 1, recall 1/2 -> F1 2/3; q2 "" for no answer: 1; q4 an answer for no answer: 0
    assert scores == pytest.approx({"exact": 50.0, "f1": 100 * (1 + 1 + 2 / 3) / 4, "total": 4,
                                    "HasAns_exact": 50.0, "HasAns_f1": 100 * (1 + 2 / 3) / 2, "HasAns_total": 2,
                                    "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2})
    null_odds = {"q1": -5.0, "q2": 3.0, "q3": 0.5, "q4": 2.0}
    scores = squad_v2_scores(golds, predictions, null_odds)
    # at the script's threshold 1.0, q2 and q4 count as answered "": both right
    assert scores["exact"] == pytest.approx(75.0) and scores["f1"] == pytest.approx(100 * (3 + 2 / 3) / 4)
    # answering in increasing odds from 2 (the unanswerable count): q1 +1 -> 3, q3 +0 (exact) or +2/3 (F1),
    # q4 -1, q2 +0; the best counts are 3 at odds -5 (exact) and 3 2/3 at odds 0.5 (F1)
    assert scores["best_exact"] == pytest.approx(75.0) and scores["best_exact_thresh"] == -5.0
    assert scores["best_f1"] == pytest.approx(100 * (3 + 2 / 3) / 4) and scores["best_f1_thresh"] == 0.5


def test_v2_leaves_out_unpredicted_questions():
    assert squad_v2_scores({"q1": ["x"], "q2": ["y"]}, {"q1": "x"})["total"] == 1


# ---- readers -------------------------------------------------------------------------------------


def squad_file(path, qas, version="v2.0", context="The cat sat on the mat."):
    path.write_text(json.dumps({"version": version, "data": [{"title": "T", "paragraphs": [
        {"context": context, "qas": qas}]}]}))
    return path


def test_squad_json_v2_reads_unanswerable_questions_without_their_plausible_answers(tmp_path):
    path = squad_file(tmp_path / "dev.json", [
        {"id": "a", "question": "Who sat?", "answers": [{"text": "The cat", "answer_start": 0}]},
        {"id": "b", "question": "Who stood?", "answers": [], "is_impossible": True,
         "plausible_answers": [{"text": "cat", "answer_start": 4}]}])
    examples, version_2 = load_examples(path)
    assert version_2 and [e.answers for e in examples] == [[Answer("The cat", 0)], []]
    v1, is_v2 = load_examples(squad_file(tmp_path / "v1.json", [{"id": "a", "question": "Who?", "answers": [
        {"text": "cat", "answer_start": 4}]}], version="1.1"))
    assert not is_v2 and v1[0].answers == [Answer("cat", 4)]


def test_jsonl_takes_both_answer_layouts(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in [
        {"id": "1", "question": "q?", "context": "a b c", "answers": {"text": ["b"], "answer_start": [2]}},
        {"id": "2", "question": "q?", "context": "a b c", "answers": [{"text": "c", "answer_start": 4}]}]) + "\n")
    examples, version_2 = load_examples(path)
    assert [e.answers for e in examples] == [[Answer("b", 2)], [Answer("c", 4)]] and not version_2


@pytest.mark.parametrize(("qa", "message"), [
    ({"question": "Who?", "answers": []}, r"qas\[0\]: no 'id'"),
    ({"id": "x", "question": "Who?", "answers": [{"text": "mat.", "answer_start": 30}]},
     "question 'x': answer 'mat.' at characters 30..34, but the context has 23 characters"),
    ({"id": "x", "question": "Who?", "answers": [{"text": "cat"}]}, "integer answer_start"),
])
def test_bad_examples_are_one_line_errors_naming_them(tmp_path, qa, message):
    with pytest.raises(QADataError, match=message):
        load_examples(squad_file(tmp_path / "bad.json", [qa]))


def test_repeated_id_and_missing_file_are_errors(tmp_path):
    qa = {"id": "x", "question": "Who?", "answers": []}
    with pytest.raises(QADataError, match="'x' appears twice"):
        load_examples(squad_file(tmp_path / "twice.json", [qa, qa]))
    with pytest.raises(QADataError, match="no such file"):
        load_examples(tmp_path / "missing.json")


def test_training_answers_not_at_their_offset_are_found_out():
    context = "The cat sat on the mat."
    assert answer_found(QAExample("a", "q", context, [Answer("cat", 4)]))
    assert answer_found(QAExample("b", "q", context, []))  # unanswerable: nothing to find
    assert not answer_found(QAExample("c", "q", context, [Answer("mat", 4)]))  # run_squad: "Could not find answer"


def test_hub_rows_are_read_and_hub_failures_are_one_line(monkeypatch):
    datasets = pytest.importorskip("datasets")
    rows = [{"id": "5733be28", "title": "T", "context": "The cat sat.", "question": "Who sat?",
             "answers": {"text": ["The cat"], "answer_start": [0]}},
            {"id": "5733be29", "title": "T", "context": "The cat sat.", "question": "Who stood?",
             "answers": {"text": [], "answer_start": []}}]
    asked = []
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda path, config, split, streaming: asked.append((path, split)) or rows)
    examples, version_2 = load_examples("squad_v2:validation")
    assert asked == [("squad_v2", "validation")] and version_2
    assert [(e.id, e.answers) for e in examples] == [("5733be28", [Answer("The cat", 0)]), ("5733be29", [])]

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'squad' on the Hub (LocalEntryNotFoundError)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(QADataError, match=r"could not load 'squad' \(train\) from the Hugging Face hub: "
                                          r"ConnectionError: Couldn't reach 'squad'.*give SQuAD \.json or \.jsonl"):
        load_examples("squad")
