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
import time
from typing import Callable, Iterable

from PIL import Image

from . import datasets, protocol, report
from .datasets import DatasetError, Sample
from .protocol import PROTOCOLS, Protocol

log = logging.getLogger(__name__)

BENCHMARKS = ("imagenet-seg", "voc-single", "voc-multi", "voc")


def add_eval_command(subparsers) -> argparse.ArgumentParser:
    """Register `eval` on the tool's subparsers; its handler is `args.handler(args) -> exit code`."""
    parser = subparsers.add_parser(
        "eval", help="the paper's segmentation benchmark (ImageNet-Segmentation, PascalVOC 2012)",
        description="Run the paper's zero-shot segmentation protocol on ImageNet-Segmentation "
                    "(gtsegs_ijcv.mat) or PascalVOC 2012 (a VOCdevkit folder) and report pixel accuracy, "
                    "standard mIoU, the paper's mIoU (acc/(2-acc)) and mAP next to the paper's Table 1.")
    parser.add_argument("dataset", type=pathlib.Path,
                        help="gtsegs_ijcv.mat, or a PascalVOC 2012 folder (VOC2012, VOCdevkit or above)")
    parser.add_argument("--benchmark", choices=BENCHMARKS,
                        help="which split(s); default: imagenet-seg for a .mat file, voc (both VOC splits) for a folder")
    parser.add_argument("--names", type=pathlib.Path,
                        help="ImageNet-Segmentation concept names: JSON {WordNet id: name}, or the authors' "
                             "imagenet_class_map.json (needs NLTK's WordNet)")
    parser.add_argument("--limit", type=int, help="score only the first N images of each split")
    parser.add_argument("--seed-count", type=int,
                        help="noise seeds per image (default: the protocol's; the report marks a change)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("eval-results"),
                        help="folder for report.json, report.md and the working images (default eval-results)")
    parser.add_argument("--keep-images", action="store_true",
                        help="keep the prepared 1024 x 1024 pictures (default: deleted once scored)")
    parser.add_argument("--server", action="append", default=[], metavar="URL",
                        help="a ComfyUI server to run on (repeat for several); none: in-process")
    parser.add_argument("--comfyui", type=pathlib.Path, help="in-process: the ComfyUI folder (default COMFYUI_PATH)")
    add_model_arguments(parser)
    parser.set_defaults(handler=run_eval_command)
    return parser


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Model files and engine options, named as the engine's Settings fields."""
    from .. import engine
    defaults = engine.Settings()
    for name in ("unet", "t5", "clip_l", "vae", "weight_dtype"):
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=getattr(defaults, name),
                            help=f"default {getattr(defaults, name)}")
    parser.add_argument("--workflow", type=pathlib.Path, help="an API-format template replacing the default loaders")
    parser.add_argument("--in-flight", type=int, default=defaults.in_flight, help="prompts queued per server")
    parser.add_argument("--cpu", action="store_true", help="in-process: run ComfyUI on the CPU")


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


def settings_for(rule: Protocol, base, seed_count: int | None = None):
    """The engine Settings for a protocol: the protocol's map options over `base` (model files,
    servers' options), with room for the protocol's 1024 x 1024 pictures."""
    fields = rule.settings_fields()
    if seed_count is not None:
        fields["seed_count"] = seed_count
    known = {f.name for f in dataclasses.fields(base)}
    if "max_megapixels" in known:
        fields["max_megapixels"] = max(base.max_megapixels, protocol.MODEL_SIZE ** 2 / 1e6)
    return dataclasses.replace(base, **{k: v for k, v in fields.items() if k in known})


def evaluate(rule: Protocol, samples: Iterable[Sample], settings, work: pathlib.Path, run_tasks: Callable,
             task_type, servers=None, comfyui=None, progress=None, keep_images=False) -> dict:
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

    for result in run_tasks(tasks(), settings, servers=servers or None, comfyui=comfyui, progress=progress):
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
    for name in ("unet", "t5", "clip_l", "vae", "weight_dtype", "workflow", "in_flight", "cpu"):
        if getattr(args, name, None) is not None:
            base = dataclasses.replace(base, **{name: getattr(args, name)})
    if args.limit is not None and args.limit < 1:
        print("--limit: expected a positive number of images.")
        return 2
    splits = []
    for name in splits_for(args):
        rule = PROTOCOLS[name]
        try:
            samples = open_split(name, args)
        except DatasetError as error:
            print(f"eval: {error}")
            return 2
        chosen = itertools.islice(samples, args.limit) if args.limit else samples
        if hasattr(samples, "skipped"):
            chosen = _KeepsSkipped(chosen, samples)
        settings = settings_for(rule, base, args.seed_count)
        print(f"== {rule.title}: {'first ' + str(args.limit) + ' images' if args.limit else 'all images'}, "
              f"{'servers ' + ', '.join(args.server) if args.server else 'in-process'}")
        try:
            splits.append(evaluate(rule, chosen, settings, args.out, engine.run_tasks, engine.MaskTask,
                                   servers=args.server, comfyui=args.comfyui, progress=print,
                                   keep_images=args.keep_images))
        except DatasetError as error:
            print(f"eval: {error}")
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
