"""The paper's zero-shot segmentation protocol, one description per split, and how a prediction
is scored.

Taken from the authors' scripts (helblazer811/ConceptAttention: experiments/imagenet_segmentation/
run_experiment.py with run_cross_self_ablation.sh, experiments/pascal_voc_segmentation/
run_single_class_split_experiment.py with run_concept_attention.sh, and
run_multi_class_seg_experiment.py), mapped onto the pack's Concept Saliency settings. Where the
pack cannot do exactly what the scripts do, `deviations` says so; the report carries them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .datasets import SCORE_SIZE, Sample, resize_labels
from .metrics import BinaryScores, MultiClassScores, min_max

MODEL_SIZE = 1024  # the authors' encode_image resizes every picture to 1024 x 1024 (nearest)

COMMON_DEVIATIONS = [
    "Maps are the pack's: softmax over concepts per block, then the mean (float32); the authors "
    "run in bfloat16.",
    "Concept embeddings: the mean of the concept's own T5 tokens (the authors keep token 0; the "
    "same for one-token words).",
    "The predicted maps come at image size (bilinear from the token grid) and are resized to "
    "224 x 224 (nearest); the authors resize the 64 x 64 token grid to 224 (nearest), and take "
    "the mean threshold on the token grid.",
    "Noise comes from ComfyUI's seeded generator, not the authors' get_noise: the same seed "
    "numbers give other noises.",
]


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    blocks: str
    noise_level: float
    seed_count: int
    blur: bool
    decision: str                 # "mean": target map > its mean; "argmax": the strongest concept
    binary: bool
    resize: tuple                 # (size, PIL resample) steps applied to the picture in order
    min_max_ap: bool              # rescale the target's map to 0..1 before the AP (ImageNet script)
    paper: dict                   # Table 1, ConceptAttention on Flux (percent)
    paper_miou_is: str            # which of our numbers the paper's mIoU column corresponds to
    deviations: list = field(default_factory=list)

    def settings_fields(self) -> dict:
        """The engine Settings that carry this protocol."""
        return {"blocks": self.blocks, "noise_level": self.noise_level, "seed": 0,
                "seed_count": self.seed_count, "blur": self.blur, "refine": "none",
                "normalize_concepts": True}

    def prepare_image(self, image: Image.Image) -> Image.Image:
        for size, resample in self.resize:
            image = image.resize((size, size), resample)
        return image

    def new_scores(self):
        return BinaryScores() if self.binary else MultiClassScores()

    def score(self, scores, sample_labels: list[int], soft: np.ndarray, truth: np.ndarray) -> None:
        """Add one image: `soft` [C, H, W] concept shares from the engine (any size), `truth` the
        ground truth already at 224 x 224."""
        if soft.ndim != 3 or soft.shape[0] != len(sample_labels):
            raise ValueError(f"expected maps [{len(sample_labels)}, H, W], received {list(soft.shape)}")
        maps = resize_maps(soft).astype(np.float64)  # float32 means of a flat map can fall below it
        labels = np.asarray(sample_labels)
        strongest = labels[np.argmax(maps, axis=0)]
        if not self.binary:
            scores.add(strongest, truth)
            return
        target = maps[sample_labels.index(1)]
        if self.decision == "mean":
            mask = target > target.mean()
        else:
            mask = strongest == 1
        scores.add(mask, min_max(target) if self.min_max_ap else target, truth)


def resize_maps(soft: np.ndarray, size: int = SCORE_SIZE) -> np.ndarray:
    """[C, H, W] float maps to [C, size, size], nearest (PIL's rule)."""
    return np.stack([np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize((size, size), Image.NEAREST))
                     for m in soft])


def truth_at_score_size(sample: Sample) -> np.ndarray:
    return resize_labels(sample.truth, SCORE_SIZE)


IMAGENET = Protocol(
    name="imagenet-seg",
    title="ImageNet-Segmentation",
    blocks="14-17",
    noise_level=0.5,
    seed_count=5,
    blur=True,
    decision="mean",
    binary=True,
    resize=((512, Image.BICUBIC), (MODEL_SIZE, Image.NEAREST)),
    min_max_ap=True,
    paper={"accuracy": 83.07, "miou": 71.04, "map": 90.45},
    paper_miou_is="paper_miou",
    deviations=[
        "The authors' 'mIoU' for this dataset is acc / (2 - acc); the report gives it as "
        "'paper mIoU' beside the standard two-class mIoU.",
    ],
)

VOC_SINGLE = Protocol(
    name="voc-single",
    title="PascalVOC 2012 val, single-class",
    blocks="14-18",
    noise_level=0.5,
    seed_count=1,
    blur=True,
    decision="argmax",
    binary=True,
    resize=((512, Image.NEAREST), (MODEL_SIZE, Image.NEAREST)),
    min_max_ap=False,
    paper={"accuracy": 87.85, "miou": 76.45, "map": 90.19},
    paper_miou_is="miou",
    deviations=[
        "The authors' VOC script sums raw dot products over blocks 14-18 (no softmax) at noise "
        "step 3 of a 4-step schedule shifted as for Flux.1 at 1024 px (sigma 0.513); the pack averages "
        "softmaxed maps and uses position 0.5 of Flux.1 schnell's schedule (sigma 0.5).",
        "AP uses the class concept's share (0..1); the authors' uses its raw dot product.",
        "Pixel accuracy ignores void pixels; the authors' script counts each void pixel as half "
        "wrong (reported as accuracy_authors_voc).",
    ],
)

VOC_MULTI = Protocol(
    name="voc-multi",
    title="PascalVOC 2012 val, multi-class",
    blocks="14-17",
    noise_level=0.5,
    seed_count=1,
    blur=False,
    decision="argmax",
    binary=False,
    resize=((MODEL_SIZE, Image.NEAREST),),
    min_max_ap=False,
    paper={"accuracy": 86.99, "miou": 51.39},
    paper_miou_is="miou",
    deviations=[
        "Scored at 224 x 224 with void ignored; the authors' multi-class script scores at 64 x 64 "
        "and counts void pixels predicted as a class in that class's union.",
        "The authors' script takes the arg-max of raw dot products summed over blocks (no softmax) "
        "at a shifted schedule's step 3; the pack's maps are softmaxed per block, at position 0.5.",
    ],
)

PROTOCOLS = {p.name: p for p in (IMAGENET, VOC_SINGLE, VOC_MULTI)}
