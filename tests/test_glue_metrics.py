"""GLUE metrics against values worked out by hand, and the published reference scores."""

import math

import numpy as np
import pytest

from encoderkit.data.glue import (
    METRICS,
    PUBLISHED_DEV_SCORES,
    TASKS,
    accuracy,
    compute_metrics,
    f1_score,
    matthews_corrcoef,
    pearson,
    spearman,
)

# A 2x2 example: true positives 3, true negatives 2, false positives 1, false negatives 1.
LABELS = [1, 1, 1, 1, 0, 0, 0]
PREDICTIONS = [1, 1, 1, 0, 1, 0, 0]


def test_accuracy_f1_and_mcc_on_a_confusion_table_worked_by_hand():
    assert accuracy(PREDICTIONS, LABELS) == pytest.approx(5 / 7)
    # F1 = 2 TP / (2 TP + FP + FN) = 6 / 8
    assert f1_score(PREDICTIONS, LABELS) == pytest.approx(0.75)
    # MCC = (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (6 - 1) / sqrt(4 * 4 * 3 * 3) = 5 / 12
    assert matthews_corrcoef(PREDICTIONS, LABELS) == pytest.approx(5 / 12)


def test_mcc_limits_and_degenerate_cases():
    assert matthews_corrcoef(LABELS, LABELS) == pytest.approx(1.0)
    assert matthews_corrcoef([1 - y for y in LABELS], LABELS) == pytest.approx(-1.0)
    assert matthews_corrcoef([1] * 7, LABELS) == 0.0  # constant predictor: undefined, reported as 0
    # Multi-class form: a perfect 3-class prediction still scores 1.
    assert matthews_corrcoef([0, 1, 2, 2], [0, 1, 2, 2]) == pytest.approx(1.0)


def test_f1_is_zero_when_there_is_no_positive_anywhere():
    assert f1_score([0, 0], [0, 0]) == 0.0
    assert f1_score([0, 0], [1, 1]) == 0.0


def test_pearson_worked_by_hand():
    # x = 1, 2, 3 and y = 1, 2, 4: deviations (-1, 0, 1) and (-4/3, -1/3, 5/3);
    # covariance sum 3, squared sums 2 and 42/9, so r = 3 / sqrt(2 * 42 / 9) = 9 / sqrt(84).
    assert pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(9 / math.sqrt(84))
    assert pearson([2.0, 2.0, 2.0], [1, 2, 3]) == 0.0  # constant side: undefined, reported as 0


def test_spearman_gives_tied_values_their_average_rank():
    # ranks of x = 1, 2, 2, 3 are 1, 2.5, 2.5, 4; of y = 1, 3, 2, 4 are 1, 3, 2, 4.
    # Deviations from 2.5: (-1.5, 0, 0, 1.5) and (-1.5, .5, -.5, 1.5): r = 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10).
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))
    # Any monotone map of the predictions keeps the ranks.
    assert spearman([1, 10, 100, 1000], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(1.0)


def test_compute_metrics_reports_each_tasks_official_metrics_and_their_mean():
    assert compute_metrics("cola", PREDICTIONS, LABELS) == pytest.approx({"mcc": 5 / 12})
    assert compute_metrics("mrpc", PREDICTIONS, LABELS) == pytest.approx(
        {"accuracy": 5 / 7, "f1": 0.75, "accuracy_f1_mean": (5 / 7 + 0.75) / 2}
    )
    stsb = compute_metrics("stsb", [1, 2, 2, 3], [1, 3, 2, 4])
    assert stsb["spearman"] == pytest.approx(3 / math.sqrt(10))
    assert stsb["pearson_spearman_mean"] == pytest.approx((stsb["pearson"] + stsb["spearman"]) / 2)
    assert compute_metrics("mnli", np.array([0, 1, 2]), np.array([0, 2, 2])) == pytest.approx({"accuracy": 2 / 3})


@pytest.mark.parametrize("task_name", list(TASKS))
def test_every_tasks_primary_metric_is_computed(task_name):
    task = TASKS[task_name]
    labels = [0.0, 2.5, 5.0] if task.labels is None else [0, 1, 1]
    assert task.primary_metric in compute_metrics(task_name, labels, labels)


def test_compute_metrics_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="equally long"):
        compute_metrics("sst2", [1, 0], [1])


def test_published_scores_name_real_tasks_splits_and_metrics():
    assert len(PUBLISHED_DEV_SCORES) == 3 * 8 + 2 + 2 * 2 + 2 * 9
    for score in PUBLISHED_DEV_SCORES:
        assert score.source and 0 < score.value <= 100
        if score.task == "average":
            assert score.metric == "glue_score"
            continue
        task = TASKS[score.task]
        assert score.split in task.dev_splits
        assert score.metric in compute_metrics(score.task, [0, 1, 1], [0, 1, 1])
    electra_small_cola = [s for s in PUBLISHED_DEV_SCORES if (s.model, s.task) == ("electra-small++", "cola")]
    assert [(s.metric, s.value) for s in electra_small_cola] == [("mcc", 57.0)]


def test_metrics_agree_with_sklearn_and_scipy():
    from scipy import stats
    from sklearn import metrics as sklearn_metrics

    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    assert METRICS["mcc"](predictions, labels) == pytest.approx(sklearn_metrics.matthews_corrcoef(labels, predictions))
    assert METRICS["f1"](predictions, labels) == pytest.approx(sklearn_metrics.f1_score(labels, predictions))
    scores, gold = rng.integers(0, 6, 40).astype(float), rng.integers(0, 6, 40).astype(float)  # many ties
    assert spearman(scores, gold) == pytest.approx(stats.spearmanr(scores, gold)[0])
    assert pearson(scores, gold) == pytest.approx(stats.pearsonr(scores, gold)[0])
