"""Segmentation metrics of the paper's benchmark, numpy only.

Ground truth is an integer array: class indices, VOID (255) for pixels nobody scores. How the
authors' scripts compute each number (helblazer811/ConceptAttention, experiments/):

- pixel accuracy: correct / labelled pixels, summed over the whole dataset (not a mean of
  per-image accuracies);
- binary IoU (ImageNet-Segmentation, VOC single-class): intersection and union of background and
  foreground, each summed over the dataset, then the mean of the two (standard two-class mIoU);
- the ImageNet script's "mIoU" feeds [1 - mask, mask] against [1 - truth, truth] into a two-class
  IoU, which makes both classes' IoU equal acc / (2 - acc). `paper_miou` is that formula;
- mAP: per image, the average precision of the scores [1 - map, map] against [1 - truth, truth]
  (both channels pooled, as their `get_ap_scores` does), void pixels left out; then the mean over
  images;
- multi-class VOC: per-class intersection and union summed over the dataset, the mean over the
  classes that occur (union > 0); void pixels are ignored (the authors' script counts a void
  pixel predicted as class k in k's union; we follow the standard VOC rule instead).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

VOID = 255


def paper_miou(accuracy: float) -> float:
    """The authors' ImageNet-Segmentation "mIoU": acc / (2 - acc), what their two-channel IoU of a
    binary mask reduces to. Not the standard two-class mIoU."""
    return accuracy / (2.0 - accuracy)


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision of `scores` ranking the positive `labels` (0/1), as scikit-learn's
    average_precision_score: sum over distinct score thresholds of (recall step) x precision.
    0.0 when there is no positive (the authors turn that NaN into 0)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels differ in size: {scores.size} vs {labels.size}")
    positives = int(labels.sum())
    if positives == 0:
        return 0.0
    order = np.argsort(-scores, kind="mergesort")
    ranked, hits = scores[order], labels[order]
    true_pos = np.cumsum(hits)
    false_pos = np.cumsum(~hits)
    last_of_each_score = np.r_[np.nonzero(np.diff(ranked))[0], ranked.size - 1]
    tp, fp = true_pos[last_of_each_score], false_pos[last_of_each_score]
    precision = tp / (tp + fp)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def binary_ap(soft: np.ndarray, truth: np.ndarray) -> float:
    """The authors' per-image AP: scores [1 - soft, soft] against [1 - truth, truth], pooled,
    void pixels left out. `soft` in 0..1, `truth` 0/1 with VOID."""
    keep = truth != VOID
    score, target = soft[keep].astype(np.float64), truth[keep] == 1
    return average_precision(np.r_[1.0 - score, score], np.r_[~target, target])


def min_max(values: np.ndarray) -> np.ndarray:
    """Rescale to 0..1 (the ImageNet script does this to the target's map before its AP)."""
    low, high = float(values.min()), float(values.max())
    return np.zeros_like(values, dtype=np.float64) if high == low else (values - low) / (high - low)


def _check_shapes(prediction: np.ndarray, truth: np.ndarray) -> None:
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and ground truth {truth.shape} differ in shape")


@dataclass
class BinaryScores:
    """Accumulates a binary split (ImageNet-Segmentation, VOC single-class) image by image."""

    correct: int = 0
    labelled: int = 0
    void: int = 0
    intersection: np.ndarray = field(default_factory=lambda: np.zeros(2, np.int64))
    union: np.ndarray = field(default_factory=lambda: np.zeros(2, np.int64))
    per_image_ap: list = field(default_factory=list)

    def add(self, mask: np.ndarray, soft: np.ndarray, truth: np.ndarray) -> None:
        """mask: bool [H, W] (the prediction), soft: [H, W] scores for the AP, truth: 0/1/VOID."""
        _check_shapes(mask, truth)
        _check_shapes(soft, truth)
        keep = truth != VOID
        predicted, target = mask[keep].astype(bool), truth[keep] == 1
        self.correct += int(np.sum(predicted == target))
        self.labelled += int(keep.sum())
        self.void += int((~keep).sum())
        for cls, (p, t) in enumerate(((~predicted, ~target), (predicted, target))):
            self.intersection[cls] += int(np.sum(p & t))
            self.union[cls] += int(np.sum(p | t))
        self.per_image_ap.append(binary_ap(soft, truth))

    @property
    def images(self) -> int:
        return len(self.per_image_ap)

    def summary(self) -> dict:
        if self.labelled == 0:
            return {"images": self.images}
        accuracy = self.correct / self.labelled
        ious = self.intersection / np.maximum(self.union, 1)
        return {
            "images": self.images,
            "accuracy": accuracy,
            "miou": float(np.mean(ious)),
            "iou_background": float(ious[0]),
            "iou_foreground": float(ious[1]),
            "paper_miou": paper_miou(accuracy),
            "map": float(np.mean(self.per_image_ap)),
            # The authors' VOC script stacks [1 - truth, truth] with void = -1, so a void pixel
            # counts as labelled and wrong in one of the two channels: 2c / (2n + v).
            "accuracy_authors_voc": 2 * self.correct / (2 * self.labelled + self.void),
        }


@dataclass
class MultiClassScores:
    """Accumulates the multi-class VOC split: a confusion matrix over non-void pixels."""

    classes: int = 21
    confusion: np.ndarray = None
    images: int = 0

    def __post_init__(self):
        if self.confusion is None:
            self.confusion = np.zeros((self.classes, self.classes), np.int64)

    def add(self, prediction: np.ndarray, truth: np.ndarray) -> None:
        """prediction: class index per pixel, truth: class index or VOID."""
        _check_shapes(prediction, truth)
        keep = truth != VOID
        target, predicted = truth[keep].astype(np.int64), prediction[keep].astype(np.int64)
        for name, values in (("ground truth", target), ("prediction", predicted)):
            if values.size and (values.min() < 0 or values.max() >= self.classes):
                raise ValueError(f"{name} has class {int(values.max())}, outside 0..{self.classes - 1}")
        self.confusion += np.bincount(target * self.classes + predicted,
                                      minlength=self.classes ** 2).reshape(self.classes, self.classes)
        self.images += 1

    def per_class_iou(self) -> np.ndarray:
        """IoU per class; NaN for a class that neither occurs nor is predicted."""
        inter = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(0) + self.confusion.sum(1) - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, inter / union, np.nan)

    def summary(self) -> dict:
        total = int(self.confusion.sum())
        if total == 0:
            return {"images": self.images}
        ious = self.per_class_iou()
        return {
            "images": self.images,
            "accuracy": float(np.trace(self.confusion) / total),
            "miou": float(np.nanmean(ious)),
            "classes_scored": int(np.sum(~np.isnan(ious))),
        }
