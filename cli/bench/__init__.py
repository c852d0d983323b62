"""The `eval` verb: the paper's zero-shot segmentation benchmark (ImageNet-Segmentation, PascalVOC
2012 single- and multi-class) run through the tool's engine (in-process or on ComfyUI servers),
scored as the authors' scripts score it, reported next to the paper's Table 1.

    python concept_masks.py eval gtsegs_ijcv.mat --names imagenet_class_map.json --out results/
    python concept_masks.py eval VOCdevkit/ --benchmark voc --server http://gpu1:8188 --out results/
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import pathlib
import sys
import time
from typing import Callable, Iterable

from PIL import Image

from ..options import add_engine_options, whole
from ..progress import Progress
from . import datasets, protocol, report
from .datasets import DatasetError, Sample
from .protocol import PROTOCOLS, Protocol

log = logging.getLogger(__name__)

BENCHMARKS = ("imagenet-seg", "voc-single", "voc-multi", "voc")


def add_eval_command(subparsers) -> argparse.ArgumentParser:
    """Register `eval` on the tool's subparsers; its handler is `args.run(args) -> exit code`."""
    parser = subparsers.add_parser(
        "eval", help="the paper's segmentation benchmark (ImageNet-Segmentation, PascalVOC 2012)",
        description="Run the paper's zero-shot segmentation protocol on ImageNet-Segmentation "
                    "(gtsegs_ijcv.mat) or PascalVOC 2012 (a VOCdevkit folder) and report pixel accuracy, "
                    "standard mIoU, the paper's mIoU (acc/(2-acc)) and mAP next to the paper's Table 1.",
        epilog="Exit status: 0 when every split scored at least one image; 1 when a split scored none "
               "(the report lists why its images failed); 2 for a bad command line or dataset.")
    parser.add_argument("dataset", type=pathlib.Path,
                        help="gtsegs_ijcv.mat, or a PascalVOC 2012 folder (VOC2012, VOCdevkit or above)")
    parser.add_argument("--benchmark", choices=BENCHMARKS,
                        help="which split(s); default: imagenet-seg for a .mat file, voc (both VOC splits) for a folder")
    parser.add_argument("--names", type=pathlib.Path,
                        help="ImageNet-Segmentation concept names: JSON {WordNet id: name}, or the authors' "
                             "imagenet_class_map.json (needs NLTK's WordNet)")
    parser.add_argument("--limit", type=whole(1), help="score only the first N images of each split")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("eval-results"),
                        help="folder for report.json, report.md and the working images (default eval-results)")
    parser.add_argument("--keep-images", action="store_true",
                        help="keep the prepared 1024 x 1024 pictures (default: deleted once scored)")
    add_engine_options(parser)
    # The protocol sets the map options; a flag given on the command line overrides it, and the
    # report lists it under changed_from_protocol.
    parser.set_defaults(run=run_eval_command, **{dest: None for dest in MAP_OPTIONS})
    return parser


# command-line dest -> engine Settings field, for the options the protocol sets
MAP_OPTIONS = {"blocks": "blocks", "noise_level": "noise_level", "seed": "seed", "seeds": "seed_count",
               "blur": "blur", "normalize_concepts": "normalize_concepts", "refine": "refine",
               "max_megapixels": "max_megapixels"}
ENGINE_OPTIONS = ("unet", "weight_dtype", "t5", "clip_l", "vae", "workflow", "in_flight", "timeout",
                  "base_directory", "cpu")


def splits_for(args) -> list[str]:
    benchmark = args.benchmark or ("imagenet-seg" if args.dataset.suffix.lower() == ".mat" else "voc")
    return ["voc-single", "voc-multi"] if benchmark == "voc" else [benchmark]


def open_split(name: str, args) -> Iterable[Sample]:
    if name == "imagenet-seg":
        if args.names is None:
            raise DatasetError(
                "--names: ImageNet-Segmentation stores WordNet ids; give the concept names as JSON "
                "{\"n02085620\": \"dog\", ...} or the authors' imagenet_class_map.json "
                "(experiments/imagenet_segmentation/data/ in their repository).")
        return datasets.ImageNetSegmentation(args.dataset, datasets.load_class_names(args.names))
    return datasets.PascalVOC(args.dataset, name.split("-")[1])


def settings_for(rule: Protocol, base, overrides: dict | None = None):
    """The engine Settings for a protocol: the protocol's map options over `base` (model files,
    where it runs), room for the protocol's 1024 x 1024 pictures, then `overrides` (Settings
    fields the user set on the command line)."""
    fields = rule.settings_fields()
    known = {f.name for f in dataclasses.fields(base)}
    if "max_megapixels" in known:
        fields["max_megapixels"] = max(base.max_megapixels, protocol.MODEL_SIZE ** 2 / 1e6)
    fields.update(overrides or {})
    return dataclasses.replace(base, **{k: v for k, v in fields.items() if k in known})


def evaluate(rule: Protocol, samples: Iterable[Sample], settings, work: pathlib.Path, run_tasks: Callable,
             task_type, servers=None, comfyui=None, progress=None, keep_images=False) -> dict:
    """progress: a cli.progress.Progress (or None)."""
    """Run one split through `run_tasks` and score it. Returns the split's report (see report.py)."""
    images_dir, truth_dir = work / "images" / rule.name, work / "truth" / rule.name
    images_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    pending: dict[str, list[int]] = {}
    failures: list[dict] = []
    scores = rule.new_scores()
    started = time.perf_counter()

    def tasks():
        for sample in samples:
            picture = images_dir / f"{sample.key}.png"
            rule.prepare_image(sample.image).save(picture)
            Image.fromarray(protocol.truth_at_score_size(sample)).save(truth_dir / f"{sample.key}.png")
            pending[sample.key] = sample.labels
            yield task_type(key=sample.key, image=picture, concepts=sample.concepts, caption=sample.caption)

    say = progress.message if progress is not None else None
    for result in run_tasks(tasks(), settings, servers=servers or None, comfyui=comfyui, progress=say):
        labels = pending.pop(result.key)
        truth_png = truth_dir / f"{result.key}.png"
        if result.error is not None or result.soft is None:
            failures.append({"key": result.key, "error": result.error or "no maps returned"})
        else:
            import numpy as np
            try:
                rule.score(scores, labels, np.asarray(result.soft), np.asarray(Image.open(truth_png)))
            except ValueError as error:
                failures.append({"key": result.key, "error": f"scoring: {error}"})
        truth_png.unlink(missing_ok=True)
        if progress is not None:
            progress.update(result.error is None and result.soft is not None)
        if not keep_images:
            (images_dir / f"{result.key}.png").unlink(missing_ok=True)
    skipped = getattr(samples, "skipped", [])
    return report.split_report(rule, scores, failures, skipped, settings, time.perf_counter() - started)


def run_eval_command(args, engine=None) -> int:
    """The `eval` handler: every split asked for, one report. 0 when at least one image was
    scored in every split, 1 otherwise."""
    if engine is None:
        from .. import engine
    base = engine.Settings()
    for name in ENGINE_OPTIONS:
        if getattr(args, name, None) is not None:
            base = dataclasses.replace(base, **{name: getattr(args, name)})
    overrides = {field: getattr(args, dest) for dest, field in MAP_OPTIONS.items()
                 if getattr(args, dest, None) is not None}
    splits = []
    for name in splits_for(args):
        rule = PROTOCOLS[name]
        try:
            samples = open_split(name, args)
        except DatasetError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        chosen = itertools.islice(samples, args.limit) if args.limit else samples
        if hasattr(samples, "skipped"):
            chosen = _KeepsSkipped(chosen, samples)
        settings = settings_for(rule, base, overrides)
        total = min(len(samples), args.limit) if args.limit else len(samples)
        bar = Progress(total, sys.stderr, quiet=getattr(args, "quiet", False))
        bar.message(f"== {rule.title}: {total} images, "
                    f"{'servers ' + ', '.join(args.server) if args.server else 'in-process'}")
        try:
            splits.append(evaluate(rule, chosen, settings, args.out, engine.run_tasks, engine.MaskTask,
                                   servers=args.server, comfyui=args.comfyui, progress=bar,
                                   keep_images=args.keep_images))
        except DatasetError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    written = report.write(splits, args.out, limit=args.limit)
    print(report.markdown(splits, limit=args.limit))
    print(f"report: {', '.join(str(p) for p in written)}")
    return 0 if all(s["scored"] > 0 for s in splits) else 1


class _KeepsSkipped:
    """An iterator over a limited split that still exposes the reader's skipped list."""

    def __init__(self, iterator, reader):
        self.iterator, self.reader = iterator, reader

    def __iter__(self):
        return iter(self.iterator)

    @property
    def skipped(self):
        return self.reader.skipped
