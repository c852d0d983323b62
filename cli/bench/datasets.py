"""Readers for the paper's two benchmarks, in their original file formats.

- ImageNet-Segmentation (Guillaumin et al.): one MATLAB v7.3 file, `gtsegs_ijcv.mat` (an HDF5 file
  behind a 512-byte MATLAB header), 4,276 images. Struct `value` with fields `img` (references to
  uint8 arrays stored transposed, 3 x W x H), `gt` (references to 1x1 cells holding the W x H
  uint8 mask) and `id` (references to UTF-16 char arrays such as `n02085620_1234`: WordNet id,
  then the image number). Read with h5py (the optional `bench` extra).
- PascalVOC 2012: `JPEGImages/*.jpg`, `SegmentationClass/*.png` (palette PNGs whose pixel values
  are class indices, 255 = void/border) and `ImageSets/Segmentation/val.txt`.

Each reader yields `Sample`s: the picture, the ground truth (class per pixel, VOID where unscored),
the concepts and caption of the paper's protocol, and for each concept the ground-truth class it
stands for (`labels`; 0 = background).
"""
from __future__ import annotations

import json
import pathlib
import re
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from .metrics import VOID

IMAGENET_BACKGROUND = ["background", "floor", "tree", "person", "grass", "face"]
VOC_BACKGROUND = ["background", "floor", "grass", "tree", "sky"]
# The authors' names for the VOC classes (index = the class value in the PNGs): short words the
# text encoder knows ("plane", not "aeroplane"; "pot" for potted plant).
VOC_CLASS_NAMES = [
    "background", "plane", "bike", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "table", "dog", "horse", "motorcycle", "person", "pot", "sheep", "sofa", "train", "monitor",
]
SCORE_SIZE = 224


class DatasetError(ValueError):
    """A dataset that cannot be read, with what was expected and what to do."""


@dataclass
class Sample:
    key: str
    image: Image.Image            # RGB, original size
    truth: np.ndarray             # uint8 [H, W]: class index per pixel, VOID where unscored
    concepts: list[str]
    caption: str
    labels: list[int]             # per concept: the ground-truth class it stands for


def resize_labels(truth: np.ndarray, size: int = SCORE_SIZE) -> np.ndarray:
    """Nearest-neighbour resize of a label array to size x size (PIL's rule, as the authors'
    torchvision Resize(NEAREST) on the label image)."""
    return np.asarray(Image.fromarray(truth.astype(np.uint8), mode="L").resize((size, size), Image.NEAREST))


# ---------------------------------------------------------------- ImageNet-Segmentation

WNID = re.compile(r"^[nv]\d{8}$")


def load_class_names(path: pathlib.Path, lemma_of: Callable[[str], str] | None = None) -> Callable[[str], str]:
    """The concept name for a WordNet id, from a JSON file: either {"n02085620": "dog", ...} or
    the authors' class map {"categories": {"Chihuahua": "dog", ...}} keyed by the synset's first
    WordNet lemma (found with NLTK's WordNet, or `lemma_of`)."""
    path = pathlib.Path(path)
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DatasetError(f"--names: cannot read {path} as JSON ({error}).") from error
    if isinstance(table, dict) and isinstance(table.get("categories"), dict):
        by_lemma = table["categories"]
        lemma_of = lemma_of or _wordnet_lemma

        def name_from_lemma(wnid: str) -> str:
            lemma = lemma_of(wnid)
            if lemma not in by_lemma:
                raise DatasetError(f"--names: {path} has no entry for {lemma!r} (WordNet {wnid}).")
            return by_lemma[lemma]
        return name_from_lemma
    if isinstance(table, dict) and table and all(WNID.match(str(k)) for k in table):
        def name_from_wnid(wnid: str) -> str:
            if wnid not in table:
                raise DatasetError(f"--names: {path} has no entry for WordNet id {wnid}.")
            return table[wnid]
        return name_from_wnid
    raise DatasetError(
        f"--names: {path} is neither {{\"n02085620\": \"dog\", ...}} (WordNet id -> concept) nor the "
        "authors' class map {\"categories\": {lemma: concept}}.")


def _wordnet_lemma(wnid: str) -> str:
    """The first lemma of a synset, as the authors' loader names it (needs NLTK's WordNet data)."""
    try:
        from nltk.corpus import wordnet
        synset = wordnet.synset_from_pos_and_offset(wnid[0], int(wnid[1:]))
    except (ImportError, LookupError) as error:
        raise DatasetError(
            "--names: the authors' class map is keyed by WordNet lemma; reading it needs NLTK with "
            "its WordNet data (pip install nltk && python -m nltk.downloader wordnet), or pass a "
            "JSON keyed by WordNet id instead.") from error
    return synset.lemmas()[0].name().replace("_", " ")


class ImageNetSegmentation:
    """gtsegs_ijcv.mat. `names` maps a WordNet id to the concept name (see load_class_names)."""

    def __init__(self, path: pathlib.Path, names: Callable[[str], str]):
        try:
            import h5py
        except ImportError as error:
            raise DatasetError(
                "reading gtsegs_ijcv.mat (MATLAB v7.3) needs h5py: pip install h5py, or install the "
                "pack's bench extra (pip install '.[bench]' in the pack's folder).") from error
        self.path = pathlib.Path(path)
        if not self.path.is_file():
            raise DatasetError(f"dataset: {self.path} does not exist (expected gtsegs_ijcv.mat).")
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as error:
            raise DatasetError(
                f"dataset: {self.path} is not a MATLAB v7.3 (HDF5) file ({error}); expected the "
                "ImageNet-Segmentation gtsegs_ijcv.mat.") from error
        missing = [f for f in ("value/img", "value/gt", "value/id") if f not in self.file]
        if missing:
            raise DatasetError(f"dataset: {self.path} has no {', '.join(missing)}; expected gtsegs_ijcv.mat.")
        self.images = self.file["value/img"][()].ravel()
        self.masks = self.file["value/gt"][()].ravel()
        self.ids = self.file["value/id"][()].ravel()
        if not len(self.images) == len(self.masks) == len(self.ids):
            raise DatasetError(f"dataset: {self.path} has {len(self.images)} images, {len(self.masks)} "
                               f"masks and {len(self.ids)} ids; they should match.")
        self.names = names

    def __len__(self) -> int:
        return len(self.images)

    def synset_id(self, index: int) -> str:
        chars = np.asarray(self.file[self.ids[index]]).ravel().astype("<u2")
        return chars.tobytes().decode("utf-16-le").strip()

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self)):
            yield self.sample(index)

    def sample(self, index: int) -> Sample:
        picture = np.asarray(self.file[self.images[index]])
        picture = picture.T if picture.ndim == 2 else picture.transpose(2, 1, 0)
        if picture.ndim == 2:
            picture = np.repeat(picture[..., None], 3, axis=2)
        cell = self.file[self.masks[index]]
        mask = np.asarray(self.file[cell[()].ravel()[0]]).T
        if mask.shape != picture.shape[:2]:
            raise DatasetError(f"dataset: image {index} is {picture.shape[:2]} but its mask {mask.shape}.")
        synset = self.synset_id(index)
        name = self.names(synset.split("_")[0])
        return Sample(
            key=f"{index:04d}_{synset}",
            image=Image.fromarray(picture.astype(np.uint8)).convert("RGB"),
            truth=(mask != 0).astype(np.uint8),
            concepts=[name] + [c for c in IMAGENET_BACKGROUND],
            caption=f"a {name}",
            labels=[1] + [0] * len(IMAGENET_BACKGROUND),
        )


# ---------------------------------------------------------------- PascalVOC 2012

def voc_root(path: pathlib.Path) -> pathlib.Path:
    """The VOC2012 folder given it, VOCdevkit or the folder above."""
    path = pathlib.Path(path)
    for candidate in (path, path / "VOC2012", path / "VOCdevkit" / "VOC2012"):
        if (candidate / "SegmentationClass").is_dir() and (candidate / "JPEGImages").is_dir():
            return candidate
    raise DatasetError(
        f"dataset: no PascalVOC 2012 under {path} (expected VOC2012/ with JPEGImages/, "
        "SegmentationClass/ and ImageSets/Segmentation/val.txt).")


def read_voc_labels(path: pathlib.Path) -> np.ndarray:
    """Class indices from a SegmentationClass palette PNG (255 = void)."""
    with Image.open(path) as png:
        if png.mode not in ("P", "L"):
            raise DatasetError(
                f"dataset: {path} is a {png.mode} image; VOC ground truth is a palette PNG whose "
                "pixel values are class indices (use the original SegmentationClass files).")
        labels = np.asarray(png)
    bad = np.setdiff1d(np.unique(labels), np.r_[np.arange(len(VOC_CLASS_NAMES)), VOID])
    if bad.size:
        raise DatasetError(f"dataset: {path} has class values {bad.tolist()}, outside 0..20 and 255.")
    return labels


class PascalVOC:
    """PascalVOC 2012 `image_set` (val). split 'single': the images whose ground truth, at the
    224 x 224 scoring size, holds one object class (the authors' rule; 930 of val's 1,449 in the
    paper), binarised to background / object. split 'multi': all images, class per pixel. The
    concepts are the authors' background words, then the classes present in the ground truth."""

    def __init__(self, path: pathlib.Path, split: str, image_set: str = "val"):
        if split not in ("single", "multi"):
            raise DatasetError(f"split: expected 'single' or 'multi', received {split!r}.")
        self.root = voc_root(path)
        self.split = split
        listing = self.root / "ImageSets" / "Segmentation" / f"{image_set}.txt"
        if not listing.is_file():
            raise DatasetError(f"dataset: {listing} is missing (the list of the {image_set} images).")
        listed = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        self.skipped: list[tuple[str, str]] = []
        self.present = {name: self._classes_present(name) for name in listed}
        if split == "single":
            for name, present in self.present.items():
                if not present:
                    self.skipped.append((name, "no object class left at 224 x 224"))
            self.names = [name for name in listed if len(self.present[name]) == 1]
        else:
            self.names = listed

    def _classes_present(self, name: str) -> list[int]:
        """The object classes in the ground truth at the scoring size (the authors decide the
        split on the 224 x 224 labels)."""
        labels = read_voc_labels(self.root / "SegmentationClass" / f"{name}.png")
        return [int(c) for c in np.unique(resize_labels(labels)) if c not in (0, VOID)]

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[Sample]:
        for name in self.names:
            yield self.sample(name)

    def sample(self, name: str) -> Sample:
        labels = read_voc_labels(self.root / "SegmentationClass" / f"{name}.png")
        present = self.present[name]
        jpeg = self.root / "JPEGImages" / f"{name}.jpg"
        try:
            image = Image.open(jpeg).convert("RGB")
        except OSError as error:
            raise DatasetError(f"dataset: cannot read {jpeg} ({error}).") from error
        if image.size != labels.shape[::-1]:
            raise DatasetError(f"dataset: {jpeg} is {image.size} but its ground truth {labels.shape[::-1]}.")
        classes = [VOC_CLASS_NAMES[c] for c in present]
        if self.split == "single":
            truth = np.where(labels == VOID, VOID, labels != 0).astype(np.uint8)
            concept_labels = [0] * len(VOC_BACKGROUND) + [1]
        else:
            truth = labels.astype(np.uint8)
            concept_labels = [0] * len(VOC_BACKGROUND) + present
        return Sample(
            key=name,
            image=image,
            truth=truth,
            concepts=VOC_BACKGROUND + classes,
            caption=",".join(f"a {c}" for c in classes),
            labels=concept_labels,
        )
