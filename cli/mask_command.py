"""The `mask` verb: PNG masks for every picture and concept, a JSON Lines manifest, resume."""
from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import re
import sys
import time
import unicodedata

import numpy as np
from PIL import Image

from . import engine, inputs
from .options import add_engine_options, number
from .progress import Progress

MASK_MODE_NAMES = {"exclusive": "exclusive", "soft": "soft", "above-mean": "above mean", "otsu": "otsu",
                   "threshold": "threshold"}


EXIT_STATUS = (
    "Exit status: 0 when every picture that can be read has its masks, from this run or an earlier "
    "one (a file that is not a picture is listed as failed and does not count, as no rerun can mask "
    "it; ComfyUI is not even loaded for it); 1 when a picture that can be read failed (a rerun retries "
    "it), when no picture has masks (say, every file is unreadable), or when nothing can run (no "
    "pictures, no ComfyUI, no usable server, a workflow the tool cannot use); 2 for a bad command "
    "line; 130 when interrupted (a rerun finishes).")


def add_mask_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "mask", help="write a PNG mask per picture and concept",
        description="Write one PNG mask per picture and concept (OUT/masks/<picture>.<concept>.png; the "
                    "concept with '_' for spaces and signs, an emoji by its name; concepts that would "
                    "share a name, case aside, get their position: sky_blue-1, sky_blue-2), the "
                    "segmentation picture if asked (OUT/segmentation/<picture>.png) and a manifest "
                    "(OUT/manifest.jsonl: each picture's concept -> file). A rerun skips what the "
                    "manifest lists as done.",
        epilog=EXIT_STATUS)
    parser.add_argument("inputs", nargs="+", help="picture files, folders (searched recursively) or globs")
    parser.add_argument("--concepts", required=True, type=concept_list,
                        help="comma-separated concepts, e.g. 'person, sky, background' (at least two)")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output folder")
    parser.add_argument("--mask-mode", choices=list(MASK_MODE_NAMES), default="exclusive",
                        help="exclusive (default): each pixel to its strongest concept; soft: the 0..1 shares; "
                             "above-mean: the paper's binary mask; otsu; threshold (see --threshold)")
    parser.add_argument("--threshold", type=number(0.0, 1.0), default=0.5, help="cut-off for --mask-mode threshold")
    parser.add_argument("--segmentation", action="store_true",
                        help="also write a picture with one colour per concept and a legend")
    parser.add_argument("--caption", default="", help="prompt for the encode pass (default: the empty prompt)")
    parser.add_argument("--shard", type=shard, help="i/N: only this run's share of the pictures (1-based), for N independent runs")
    parser.add_argument("--redo", action="store_true", help="ignore the manifest: mask every picture again")
    add_engine_options(parser)
    parser.set_defaults(run=run_mask)


def concept_list(text: str) -> list[str]:
    """--concepts, split and checked here so that a bad list is a usage error (exit 2)."""
    concepts = [c.strip() for c in text.split(",") if c.strip()]
    try:
        engine.check_concepts(concepts)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("concepts: ")) from None
    return concepts


def shard(text: str) -> tuple[int, int]:
    try:
        return inputs.parse_shard(text)
    except inputs.InputError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--shard: ")) from None


def settings_from(args) -> engine.Settings:
    return engine.Settings(
        blocks=args.blocks, noise_level=args.noise_level, seed=args.seed, seed_count=args.seeds, blur=args.blur,
        refine=args.refine, normalize_concepts=args.normalize_concepts,
        mask_mode=MASK_MODE_NAMES.get(getattr(args, "mask_mode", "exclusive"), "exclusive"),
        threshold=getattr(args, "threshold", 0.5), unet=args.unet, weight_dtype=args.weight_dtype, t5=args.t5,
        clip_l=args.clip_l, vae=args.vae, workflow=args.workflow, max_megapixels=args.max_megapixels,
        in_flight=args.in_flight, timeout=args.timeout, base_directory=args.base_directory, cpu=args.cpu)


def slug(concept: str) -> str:
    """A concept as part of a file name: letters, digits, '-', '_' kept (any script), a symbol
    (an emoji) as its Unicode name ('🐶' -> dog_face), the rest '_'; at most 80 characters."""
    spelled = "".join(f" {unicodedata.name(ch, '').lower()} " if unicodedata.category(ch) == "So" else ch
                      for ch in concept.strip())
    return re.sub(r"[^\w\-]+", "_", spelled).strip("_")[:80].strip("_") or "concept"


def mask_names(concepts: list[str]) -> list[str]:
    """One file-name part per concept, distinct even where a case-insensitive file system looks:
    concepts whose slugs are the same ('sky blue', 'sky_blue') get their position in the list
    (sky_blue-1, sky_blue-2); the manifest's `masks` says which file is which concept."""
    slugs = [slug(c) for c in concepts]
    counts = collections.Counter(s.casefold() for s in slugs)
    taken = {s.casefold() for s in slugs if counts[s.casefold()] == 1}
    names = []
    for position, name in enumerate(slugs, 1):
        if counts[name.casefold()] > 1:
            candidate, extra = f"{name}-{position}", 1
            while candidate.casefold() in taken:  # another concept is literally called that
                extra += 1
                candidate = f"{name}-{position}-{extra}"
            name = candidate
            taken.add(name.casefold())
        names.append(name)
    return names


class Outputs:
    """Where each picture's files go, and the manifest of what is done."""

    def __init__(self, out: pathlib.Path, shard):
        self.out = out
        self.manifest = out / ("manifest.jsonl" if shard is None else f"manifest-shard{shard[0]}of{shard[1]}.jsonl")

    def mask_path(self, key: str, name: str) -> pathlib.Path:
        """name: the concept's part of the file name (mask_names)."""
        return self.out / "masks" / f"{key}.{name}.png"

    def mask_files(self, key: str, concepts: list[str]) -> dict[str, str]:
        """concept -> its mask file, relative to the output folder (as the manifest lists them)."""
        return {concept: self.mask_path(key, name).relative_to(self.out).as_posix()
                for concept, name in zip(concepts, mask_names(concepts))}

    def segmentation_path(self, key: str) -> pathlib.Path:
        return self.out / "segmentation" / f"{key}.png"

    def done_records(self) -> dict[str, dict]:
        """The last record of each key over every manifest in the folder (all shards)."""
        records = {}
        for manifest in sorted(self.out.glob("manifest*.jsonl")):
            for line in manifest.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut short by an interrupted run
                if isinstance(record, dict) and "key" in record:
                    records[record["key"]] = record
        return records

    def is_done(self, record: dict | None, wanted: dict, segmentation: bool) -> bool:
        """Done: masked without error with the same concepts and settings, its files are there
        under today's names (a run before mask_names could write two concepts to one file), and
        the segmentation picture too when it is asked for now."""
        if not record or record.get("error") or any(record.get(k) != v for k, v in wanted.items()):
            return False
        if record.get("masks") != self.mask_files(record["key"], wanted["concepts"]):
            return False
        if segmentation and not record.get("segmentation"):
            return False
        files = list(record.get("masks", {}).values()) + ([record["segmentation"]] if record.get("segmentation") else [])
        return all((self.out / f).is_file() for f in files)

    def append(self, record: dict) -> None:
        self.manifest.parent.mkdir(parents=True, exist_ok=True)
        with open(self.manifest, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


def write_png(path: pathlib.Path, pixels: np.ndarray) -> None:
    """Written beside and renamed, so a file under its final name is always complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    Image.fromarray(pixels).save(partial, format="PNG")
    os.replace(partial, path)


def save_result(result: engine.MaskResult, outputs: Outputs, settings: engine.Settings, segmentation: bool) -> dict:
    import torch
    from ..nodes.masks import apply_mask_mode
    from ..nodes.render import segmentation as render_segmentation
    concepts = result.task.concepts
    soft = torch.from_numpy(result.soft)[None]
    masks = apply_mask_mode(soft, settings.mask_mode, settings.threshold)[0]
    written = outputs.mask_files(result.key, concepts)
    for concept, mask in zip(concepts, masks):
        write_png(outputs.out / written[concept], (mask.numpy() * 255).round().astype(np.uint8))
    picture = None
    if segmentation:
        path = outputs.segmentation_path(result.key)
        write_png(path, (render_segmentation(soft, concepts)[0].numpy() * 255).round().astype(np.uint8))
        picture = path.relative_to(outputs.out).as_posix()
    return {"masks": written, "segmentation": picture}


def run_mask(args) -> int:
    out = sys.stderr
    concepts, shard = args.concepts, args.shard
    try:
        found, warnings = inputs.gather(args.inputs, exclude=args.out)
    except inputs.InputError as error:
        print(f"error: {error}", file=out)
        return 1
    for warning in warnings:
        print(f"warning: {warning}", file=out)
    if not found:
        print("error: no pictures to mask (see the warnings above)", file=out)
        return 1
    settings = settings_from(args)
    outputs = Outputs(args.out, shard)
    wanted = {"concepts": concepts, "mask_mode": settings.mask_mode, "threshold": settings.threshold,
              "caption": args.caption, "settings": settings.map_settings()}
    records = {} if args.redo else outputs.done_records()
    mine = [(key, path) for key, path in found if inputs.in_shard(key, shard)]
    todo = [(key, path) for key, path in mine
            if not outputs.is_done(records.get(key), wanted, args.segmentation)]
    skipped = len(mine) - len(todo)
    if skipped:
        print(f"{skipped} of {len(mine)} pictures already done (in the manifest); masking the other {len(todo)}",
              file=out)
    if not todo:
        print("nothing to do", file=out)
        return 0
    tasks = [engine.MaskTask(key, path, concepts, args.caption) for key, path in todo]
    progress = Progress(len(tasks), out, quiet=args.quiet)
    failures: list[tuple[str, str, bool]] = []  # key, reason, unreadable
    done = 0
    results = None
    try:
        results = engine.run_tasks(tasks, settings, servers=args.server or None, comfyui=args.comfyui,
                                   progress=progress.message)
        for result in results:
            record = {"key": result.key, "input": str(result.task.image),
                      "size": list(result.size) if result.size else None, "source": result.source,
                      "seeds": settings.seeds(), "seconds": round(result.seconds, 3)} | wanted
            if result.error is None:
                try:
                    record |= save_result(result, outputs, settings, args.segmentation)
                except OSError as error:
                    result.error = f"cannot write its masks: {error}"
            if result.error is not None:
                record["error"] = result.error
                failures.append((result.key, result.error, result.unreadable))
            else:
                done += 1
            outputs.append(record)
            progress.update(ok=result.error is None)
    except (engine.EngineError, ValueError) as error:
        progress.close()
        print(f"error: {error}", file=out)
        return 1
    except KeyboardInterrupt:
        if results is not None:
            results.close()  # the engine withdraws this run's prompts still queued on servers
        progress.close()
        print(f"interrupted: {done} masked this run; run the same command again to finish", file=out)
        return 130
    progress.close()
    print(summary(done, skipped, failures, outputs, time.perf_counter() - progress.started), file=out)
    return exit_status(done, skipped, failures)


def exit_status(done: int, skipped: int, failures: list[tuple[str, str, bool]]) -> int:
    """EXIT_STATUS's rule: 1 while a rerun could mask more, or when nothing has masks at all."""
    if any(not unreadable for _, _, unreadable in failures) or done + skipped == 0:
        return 1
    return 0


def summary(done, skipped, failures, outputs, seconds) -> str:
    lines = [f"done: {done} masked in {seconds:.1f} s" + (f", {skipped} already done" if skipped else "") +
             f", {len(failures)} failed; manifest: {outputs.manifest}"]
    for key, error, _ in failures[:20]:
        lines.append(f"  failed: {key}: {error}")
    if len(failures) > 20:
        lines.append(f"  ... and {len(failures) - 20} more (see the manifest)")
    unreadable = sum(1 for *_, u in failures if u)
    if unreadable:
        lines.append(f"  {unreadable} of them cannot be read as pictures: no rerun can mask them (they alone do "
                     "not make the exit status 1); fix or remove them")
    return "\n".join(lines)
