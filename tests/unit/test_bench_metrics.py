"""The benchmark's metrics on tiny hand-made masks, each answer worked out by hand in the comments."""
import numpy as np
import pytest

from concept_attention_pack.cli.bench import metrics, protocol
from concept_attention_pack.cli.bench.metrics import VOID, BinaryScores, MultiClassScores

# 4 x 4 ground truth: the left half is the object.
TRUTH = np.array([[1, 1, 0, 0]] * 4, dtype=np.uint8)


def scores_of(mask, soft=None, truth=TRUTH):
    scores = BinaryScores()
    scores.add(np.asarray(mask, bool), np.asarray(mask if soft is None else soft, float), truth)
    return scores.summary()


def test_perfect_prediction_scores_one_everywhere():
    result = scores_of(TRUTH == 1)
    assert result["accuracy"] == 1 and result["miou"] == 1 and result["paper_miou"] == 1 and result["map"] == 1


def test_empty_prediction():
    # acc 8/16; background IoU 8/16, object IoU 0 -> mIoU 0.25; paper: 0.5 / 1.5.
    # AP: scores [1 - 0, 0] = sixteen 1s (8 positives) then sixteen 0s (8 positives): 0.5.
    result = scores_of(np.zeros((4, 4)))
    assert result["accuracy"] == 0.5
    assert result["miou"] == pytest.approx(0.25)
    assert result["paper_miou"] == pytest.approx(1 / 3)
    assert result["map"] == pytest.approx(0.5)


def test_half_overlap_top_half_against_left_half():
    # Correct: top-left and bottom-right quarters = 8/16; each class's IoU 4/12; AP 0.5.
    result = scores_of(np.array([[1] * 4] * 2 + [[0] * 4] * 2))
    assert result["accuracy"] == 0.5
    assert result["iou_foreground"] == pytest.approx(1 / 3) and result["iou_background"] == pytest.approx(1 / 3)
    assert result["map"] == pytest.approx(0.5)


def test_paper_miou_differs_from_the_standard_one():
    # Prediction: the left three quarters. acc 12/16; object IoU 8/12, background 4/8 -> mIoU 7/12;
    # the authors' acc / (2 - acc) = 0.75 / 1.25 = 0.6.
    result = scores_of(np.array([[1, 1, 1, 0]] * 4))
    assert result["miou"] == pytest.approx(7 / 12)
    assert result["paper_miou"] == pytest.approx(0.6)
    assert metrics.paper_miou(0.8307) == pytest.approx(0.7104, abs=1e-4)  # Table 1's ImageNet pair


def test_void_pixels_are_ignored_and_counted_for_the_authors_voc_accuracy():
    truth = TRUTH.copy()
    truth[:, 3] = VOID                       # the last column is void; predicted "object" there
    mask = np.array([[1, 1, 0, 1]] * 4)
    result = scores_of(mask, truth=truth)
    assert result["accuracy"] == 1 and result["miou"] == 1 and result["map"] == 1
    # authors' VOC script: 2 * 12 correct / (2 * 12 labelled + 4 void)
    assert result["accuracy_authors_voc"] == pytest.approx(24 / 28)


def test_dataset_totals_are_summed_not_averaged_per_image():
    scores = BinaryScores()
    scores.add(TRUTH == 1, (TRUTH == 1).astype(float), TRUTH)            # 16 of 16 correct
    big_truth = np.zeros((8, 8), np.uint8)
    big_truth[:, :4] = 1
    scores.add(np.zeros((8, 8), bool), np.zeros((8, 8)), big_truth)     # 32 of 64 correct
    result = scores.summary()
    assert result["accuracy"] == pytest.approx(48 / 80)                  # not (1 + 0.5) / 2
    assert result["map"] == pytest.approx((1 + 0.5) / 2)                 # AP: mean over images


def test_average_precision_matches_a_hand_ranking_with_ties():
    # ranked: 0.9 (+), 0.8 (-), 0.8 (+), 0.1 (-): thresholds 0.9 -> P 1, R 1/2; 0.8 -> P 2/3, R 1.
    assert metrics.average_precision([0.9, 0.8, 0.8, 0.1], [1, 0, 1, 0]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert metrics.average_precision([0.3, 0.2], [0, 0]) == 0.0


def test_multi_class_iou_over_the_dataset_with_void():
    truth = np.array([[0, 0, 8, 8],
                      [0, 0, 8, 8],
                      [15, 15, VOID, VOID]], np.uint8)
    prediction = np.array([[0, 8, 8, 8],
                           [0, 0, 8, 8],
                           [15, 0, 15, 15]])
    scores = MultiClassScores()
    scores.add(prediction, truth)
    result = scores.summary()
    # non-void: 10 pixels, 8 correct. bg: inter 3, union 4 + 4 - 3 = 5; cat: 4 / 5; person: 1 / 2.
    assert result["accuracy"] == pytest.approx(8 / 10)
    assert result["miou"] == pytest.approx((3 / 5 + 4 / 5 + 1 / 2) / 3)
    assert result["classes_scored"] == 3


def test_protocol_argmax_maps_concepts_to_classes_and_mean_threshold_takes_the_target():
    # concepts: background, sky, cat, person -> classes 0, 0, 8, 15 (multi-class arg-max)
    soft = np.zeros((4, 2, 2), np.float32)
    soft[:, 0, 0] = [0.40, 0.35, 0.15, 0.10]   # background wins
    soft[:, 0, 1] = [0.30, 0.05, 0.34, 0.31]   # cat, by a hair
    soft[:, 1, 0] = [0.10, 0.45, 0.05, 0.40]   # sky -> background
    soft[:, 1, 1] = [0.20, 0.20, 0.29, 0.31]   # person
    truth = np.array([[0, 8], [0, 15]], np.uint8)
    scores = MultiClassScores()
    protocol.VOC_MULTI.score(scores, [0, 0, 8, 15], soft, np.asarray(protocol.resize_maps(truth[None])[0], np.uint8))
    assert scores.summary()["accuracy"] == 1.0
    # ImageNet: the cat map [0.15, 0.34; 0.05, 0.29] > its own mean (0.2075): the right column.
    binary = BinaryScores()
    target_first = soft[[2, 0, 1, 3]]
    protocol.IMAGENET.score(binary, [1, 0, 0, 0], target_first,
                            np.asarray(protocol.resize_maps(np.array([[[0, 1], [0, 1]]]))[0], np.uint8))
    assert binary.summary()["accuracy"] == 1.0


def test_mismatched_shapes_are_refused_with_both_sizes():
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(3, 3\)"):
        BinaryScores().add(np.zeros((4, 4), bool), np.zeros((4, 4)), np.zeros((3, 3), np.uint8))
