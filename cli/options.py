"""The options every verb shares: the Concept Attention / Saliency settings, the model files and
where it runs. Its own module so that each verb (cli.mask_command, cli.bench) takes them from here
and no verb imports another."""
from __future__ import annotations

import argparse
import pathlib

from .tasks import Settings


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """The Concept Attention / Saliency options, model files and where to run: shared by every verb."""
    d = Settings()
    maps = parser.add_argument_group("maps (Concept Attention / Concept Saliency)")
    maps.add_argument("--seed", type=int, default=d.seed, help="first noise seed")
    maps.add_argument("--seeds", type=int, default=d.seed_count, metavar="COUNT",
                      help="noises averaged per picture (the paper uses 5; more: cleaner, slower)")
    maps.add_argument("--noise-level", type=float, default=d.noise_level,
                      help="position in the noise schedule, 0..1 (0.5: the paper's)")
    maps.add_argument("--blocks", default=d.blocks, help="double blocks averaged: 'last 4', 'all', '14-17', ...")
    maps.add_argument("--blur", action=argparse.BooleanOptionalAction, default=d.blur,
                      help="the paper's 3x3 blur on the token grid")
    maps.add_argument("--normalize-concepts", action=argparse.BooleanOptionalAction, default=d.normalize_concepts,
                      help="the paper's concept normalisation")
    maps.add_argument("--refine", choices=["none", "guided", "pamr"], default=d.refine,
                      help="masks that follow the picture's edges (see the README)")
    maps.add_argument("--max-megapixels", type=float, default=d.max_megapixels,
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
    where.add_argument("--in-flight", type=int, default=d.in_flight, help="prompts queued per server")
    where.add_argument("--timeout", type=float, default=d.timeout,
                       help="seconds one picture may take on a server before the server counts as gone")
    where.add_argument("--comfyui", type=pathlib.Path,
                       help="in-process: the ComfyUI folder (default: COMFYUI_PATH, or the ComfyUI this pack is in)")
    where.add_argument("--base-directory", type=pathlib.Path,
                       help="in-process: ComfyUI's --base-directory (models, custom_nodes), if you use one")
    where.add_argument("--cpu", action="store_true", help="in-process: run on the CPU")
