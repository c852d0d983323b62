"""The options every verb shares: the Concept Attention / Saliency settings, the model files and
where it runs. Its own module so that each verb (cli.mask_command, cli.bench) takes them from here
and no verb imports another."""
from __future__ import annotations

import argparse
import math
import pathlib

from .tasks import Settings

SEED_MAX = 2**64 - 1   # Concept Saliency's seed input
SEED_COUNT_MAX = 16    # its seed_count input


def whole(low: int, high: int | None = None):
    """An argparse type: a whole number in low..high, refused here (exit 2) rather than sent to
    a server, whose validation would refuse every prompt and so count as the server failing."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise argparse.ArgumentTypeError(f"expected a whole number {span}, received {text!r}")
        return value
    return parse


def number(low: float, high: float | None = None, above: bool = False):
    """An argparse type: a finite number >= low (> low with `above`) and <= high."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < low or (above and value == low) or (high is not None and value > high):
            span = (f"from {low:g} to {high:g}" if high is not None else
                    f"{'above' if above else 'of at least'} {low:g}")
            raise argparse.ArgumentTypeError(f"expected a number {span}, received {text!r}")
        return value
    return parse


def blocks(text: str) -> str:
    """'auto' or what the node's block parser reads ('last 4', 'all', '14-17', '0,2,5'); whether
    the indices exist depends on the model, which only the run knows."""
    if text.strip().lower() != "auto":
        from ..nodes.capture import ConceptInputError, parse_blocks
        try:
            parse_blocks(text, depth=10**6)
        except ConceptInputError as error:
            raise argparse.ArgumentTypeError(str(error).removeprefix("blocks: ")) from None
    return text


def add_output_options(parser: argparse.ArgumentParser, anywhere: bool = False) -> None:
    """--quiet and --verbose, on the tool and on each verb, so they work before or after it.
    anywhere: the verb's copy, whose unset default must not override the tool's (argparse copies
    every default of a subparser over the values parsed before the verb)."""
    default = argparse.SUPPRESS if anywhere else False
    group = parser.add_argument_group("output (before or after the verb)")
    group.add_argument("--quiet", action="store_true", default=default,
                       help="no progress bar or messages, only the summary")
    group.add_argument("--verbose", action="store_true", default=default, help="ComfyUI's own log too")


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """The Concept Attention / Saliency options, model files and where to run: shared by every verb."""
    d = Settings()
    maps = parser.add_argument_group("maps (Concept Attention / Concept Saliency)")
    maps.add_argument("--seed", type=whole(0, SEED_MAX), default=d.seed, help="first noise seed (0 .. 2^64-1)")
    maps.add_argument("--seeds", type=whole(1, SEED_COUNT_MAX), default=d.seed_count, metavar="COUNT",
                      help=f"noises averaged per picture, 1..{SEED_COUNT_MAX} (the paper uses 5; more: cleaner, "
                           "slower)")
    maps.add_argument("--noise-level", type=number(0.0, 1.0), default=d.noise_level,
                      help="position in the model's noise schedule, 0..1. 0.5, the paper's, is sigma 0.5 for "
                           "Flux.1 schnell, about 0.76 for Flux.1 dev (shift 1.15, its 1024 px value) and about "
                           "0.883 for Flux.2 dev and Klein (shift 2.02); other models: their own shift")
    maps.add_argument("--blocks", type=blocks, default=d.blocks,
                      help="double blocks averaged: 'last 4', 'all', '14-17', '0,2,5', 'auto' (the model's default)")
    maps.add_argument("--blur", action=argparse.BooleanOptionalAction, default=d.blur,
                      help="the paper's 3x3 blur on the token grid")
    maps.add_argument("--normalize-concepts", action=argparse.BooleanOptionalAction, default=d.normalize_concepts,
                      help="the paper's concept normalisation")
    maps.add_argument("--refine", choices=["none", "guided", "pamr"], default=d.refine,
                      help="masks that follow the picture's edges (see the README)")
    maps.add_argument("--max-megapixels", type=number(0.0, above=True), default=d.max_megapixels,
                      help="larger pictures are scaled down to this for the model; the masks come back at "
                           "the picture's own size")
    models = parser.add_argument_group("models (file names in ComfyUI's model folders)")
    models.add_argument("--unet", default=d.unet, help=f"diffusion model (default {d.unet})")
    models.add_argument("--weight-dtype", default=d.weight_dtype, help="UNETLoader's weight_dtype")
    models.add_argument("--t5", default=d.t5, help=f"T5-XXL text encoder (default {d.t5})")
    models.add_argument("--clip-l", default=d.clip_l, help=f"CLIP-L text encoder (default {d.clip_l})")
    models.add_argument("--vae", default=d.vae, help=f"VAE (default {d.vae})")
    models.add_argument("--workflow", type=pathlib.Path,
                        help="your own API-format workflow with one LoadImage, Concept Attention (Flux) and "
                             "Concept Saliency (other loaders, LoRAs): the tool fills in the rest")
    where = parser.add_argument_group("where it runs")
    where.add_argument("--server", action="append", default=[], metavar="URL",
                       help="a running ComfyUI (repeat for several); none: in-process on the local ComfyUI")
    where.add_argument("--in-flight", type=whole(1), default=d.in_flight, help="prompts queued per server (at least 1)")
    where.add_argument("--timeout", type=number(0.0, above=True), default=d.timeout,
                       help="seconds one picture may take on a server before the server counts as gone")
    where.add_argument("--comfyui", type=pathlib.Path,
                       help="in-process: the ComfyUI folder (default: COMFYUI_PATH, or the ComfyUI this pack is in)")
    where.add_argument("--base-directory", type=pathlib.Path,
                       help="in-process: ComfyUI's --base-directory (models, custom_nodes), if you use one")
    where.add_argument("--cpu", action="store_true", help="in-process: run on the CPU")
