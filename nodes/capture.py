"""What a patched model carries (its concepts and settings, its captured maps) and the
state of one capture (a sampling run or one encode pass). Pure torch, no ComfyUI import."""
from __future__ import annotations

import collections
import hashlib
import logging
import math
import re
import threading
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

VARIANTS = ("output space", "cross attention")


class ConceptInputError(ValueError):
    """A user input is unusable; the message names the input, what was received and what to do."""


def readable_title(error_class: type, title: str) -> type:
    """ComfyUI titles an error with its class's module path and name (`comfyui-conceptattention.
    nodes.capture.ConceptInputError`); with the module set to 'builtins' it shows `title` alone."""
    error_class.__module__, error_class.__qualname__ = "builtins", title
    return error_class


readable_title(ConceptInputError, "Concept Attention: invalid input")


def parse_concepts(text: str) -> list[str]:
    """One concept per line, or comma-separated. Blank entries are dropped; duplicates refused."""
    names = [part.strip() for line in text.splitlines() for part in line.split(",")]
    names = [name for name in names if name]
    if not names:
        raise ConceptInputError(
            "concepts: no concept was given. Type one concept per line (or comma-separated), "
            "for example 'dragon, sky, background'.")
    seen = set()
    duplicates = [n for n in names if n.lower() in seen or seen.add(n.lower())]
    if duplicates:
        raise ConceptInputError(
            f"concepts: {sorted(set(duplicates))} appear more than once in {names}. "
            "Each concept gets one map; remove the repeats.")
    return names


def parse_blocks(spec: str, depth: int, kind: str = "double block") -> tuple[int, ...]:
    """Block selection: 'last 4', 'all', '15-18', '0,2,5', '-1' (Python-style negatives). kind: what
    the model calls its blocks, for messages."""
    spec = spec.strip().lower()
    chosen: set[int] = set()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if part == "all":
            chosen.update(range(depth))
        elif m := re.fullmatch(r"last\s*(\d+)", part):
            chosen.update(range(max(0, depth - int(m.group(1))), depth))
        elif m := re.fullmatch(r"(-?\d+)\s*-\s*(-?\d+)", part):
            lo, hi = (_block_index(int(g), depth, spec, kind) for g in m.groups())
            chosen.update(range(min(lo, hi), max(lo, hi) + 1))
        elif re.fullmatch(r"-?\d+", part):
            chosen.add(_block_index(int(part), depth, spec, kind))
        else:
            raise ConceptInputError(
                f"blocks: could not read {part!r} in {spec!r}. Use 'last 4', 'all', a range such "
                "as '15-18' or indices such as '0,2,5'.")
    if not chosen:
        raise ConceptInputError(f"blocks: {spec!r} selects no {kind}; try 'auto' or 'last 4'.")
    return tuple(sorted(chosen))


def _block_index(index: int, depth: int, spec: str, kind: str = "double block") -> int:
    if not -depth <= index < depth:
        raise ConceptInputError(
            f"blocks: {spec!r} names block {index}, but this model has {kind}s 0-{depth - 1}.")
    return index % depth


@dataclass(frozen=True)
class ConceptConfig:
    """Everything a patch fixes: the concepts and how maps are taken."""

    names: tuple[str, ...]
    embeddings: torch.Tensor  # [C, text_dim] float32 on the CPU, one row per concept
    blocks: tuple[int, ...]  # double blocks whose scores are averaged
    start_percent: float = 0.0
    end_percent: float = 1.0
    variant: str = "output space"
    normalize_concepts: bool = False  # the authors' segmentation setting: per-feature linear normalisation
    empty_prompt: torch.Tensor | None = None  # [1, L, text_dim]: the "" prompt for the encode path
    empty_pooled: torch.Tensor | None = None  # [1, width]: its pooled vector, for families that read one (SD3)

    @property
    def stream_depth(self) -> int:
        """The concept stream must run through every double block up to the last scored one."""
        return self.blocks[-1] + 1

    def step_selected(self, step: int, steps: int) -> bool:
        fraction = step / max(steps, 1)
        return self.start_percent <= fraction < self.end_percent

    @property
    def all_steps(self) -> bool:
        return self.start_percent <= 0.0 and self.end_percent >= 1.0


class SaliencyAccumulator:
    """Float32 running sums of softmax-over-concepts scores per image: over all scored blocks, and
    per block (so a user can see which blocks localise best), and how many were added."""

    def __init__(self, images: int, concepts: int, tokens: int, device, blocks: tuple[int, ...] = ()):
        self.sum = torch.zeros(images, concepts, tokens, dtype=torch.float32, device=device)
        self.count = torch.zeros(images, dtype=torch.float32, device=device)
        self.blocks = tuple(blocks)
        self.block_sum = torch.zeros(len(self.blocks), images, concepts, tokens, dtype=torch.float32, device=device)

    def add(self, image_index: torch.Tensor, scores: torch.Tensor, block: int | None = None) -> None:
        """scores [b, C, N] for the images image_index [b]; softmax over the concept axis first."""
        probabilities = scores.float().softmax(dim=1)
        self.sum.index_add_(0, image_index, probabilities)
        self.count.index_add_(0, image_index, torch.ones_like(image_index, dtype=torch.float32))
        if block in self.blocks:
            self.block_sum[self.blocks.index(block)].index_add_(0, image_index, probabilities)

    def mean(self) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (mean [B, C, N] on the CPU, count [B] on the CPU): one transfer off the device."""
        count = self.count.cpu()
        mean = self.sum.cpu() / count.clamp(min=1)[:, None, None]
        return mean, count

    def block_means(self) -> torch.Tensor:
        """-> [B, K, C, N] on the CPU: each scored block's own mean (each block saw the same passes)."""
        count = self.count.cpu() / max(len(self.blocks), 1)
        return (self.block_sum.cpu() / count.clamp(min=1)[None, :, None, None]).transpose(0, 1)


@dataclass
class ConceptMaps:
    """Maps on the token grid for a batch of images."""

    names: tuple[str, ...]
    maps: torch.Tensor  # [B, C, h, w] float32 CPU (a video: [B, C, T, h, w] on its latent frames); per
    # pixel the concepts' probabilities sum to 1
    latent_size: tuple[int, int]  # latent (height, width) the grid covers (grid may be padded)
    source: str  # "sampling" or "latent"
    detail: str = ""  # where the maps came from, in words for the user
    latent_scale: int = 8  # image pixels per latent pixel (Flux.1, Chroma: 8; Flux.2: 16)
    patch_size: int = 2  # latent pixels per token side (Flux.1, Chroma: 2; Flux.2: 1)
    temporal_scale: int = 1  # a video's pixel frames per latent frame after the first (HunyuanVideo: 4)
    blocks: tuple[int, ...] = ()  # the scored blocks, in the order of block_maps
    block_maps: torch.Tensor | None = None  # [B, K, C, (T,) h, w]: each scored block's maps alone (None: not kept)
    references: tuple = ()  # ConceptMaps of the reference images of an edit (Kontext, Klein, Qwen-Image-Edit)


class ConceptCapture:
    """State of one capture: a sampling run or an encode pass. Created per run, dropped after."""

    def __init__(self, config: ConceptConfig):
        self.config = config
        self.accumulator: SaliencyAccumulator | None = None
        self.grid: tuple[int, ...] | None = None  # token grid: (h, w), a video's (T, h, w)
        self.latent_size: tuple[int, int] | None = None
        self.geometry: tuple[int, int, int] = (8, 2, 1)  # latent scale, patch size, temporal scale
        self.failure: str | None = None  # why maps cannot be taken in this run (sampling goes on)
        self.references: list[tuple[SaliencyAccumulator, tuple[int, int], tuple[int, int]]] = []
        self._embeddings: dict = {}

    def embeddings_on(self, device, dtype) -> torch.Tensor:
        """The concept embeddings [C, text_dim] on the sampling device: copied once per run, not per
        model call (a host-to-device copy synchronises on CUDA)."""
        key = (str(device), dtype)
        if key not in self._embeddings:
            self._embeddings[key] = self.config.embeddings.to(device=device, dtype=dtype)
        return self._embeddings[key]

    def begin_forward(self, images: int, grid: tuple[int, ...], latent_size: tuple[int, int], device,
                      geometry: tuple[int, ...] = (8, 2, 1), references=()) -> bool:
        """False (and the call passes through) when this model call does not fit the run's maps.
        references: (token grid, latent size) of each reference image the call carries."""
        if self.failure is not None:
            return False
        references = [(tuple(g), tuple(size)) for g, size in references]
        if self.accumulator is None:
            concepts = len(self.config.names)
            self.accumulator = SaliencyAccumulator(images, concepts, math.prod(grid), device, self.config.blocks)
            self.grid, self.latent_size, self.geometry = grid, latent_size, (tuple(geometry) + (1,))[:3]
            self.references = [(SaliencyAccumulator(images, concepts, math.prod(g), device), g, size)
                               for g, size in references]
            return True
        if self.grid != grid or self.accumulator.sum.shape[0] != images:
            self.fail(f"the image size or batch changed during one run (token grid {self.grid} and "
                      f"{images} images, then {grid} and {self.accumulator.sum.shape[0]})")
            return False
        if [(g, size) for _, g, size in self.references] != references:
            self.references = []  # the references changed during the run: the generated image's maps only
        return True

    def fail(self, reason: str) -> None:
        """Maps cannot be taken in this run: said once in the log; sampling itself goes on."""
        if self.failure is None:
            self.failure = reason
            log.warning("Concept Attention: no concept maps for this sampling run: %s. The image is "
                        "unaffected.", reason)

    def add(self, image_index: torch.Tensor, scores: torch.Tensor, block: int | None = None) -> None:
        self.accumulator.add(image_index, scores, block)

    def add_reference(self, k: int, image_index: torch.Tensor, scores: torch.Tensor) -> None:
        if k < len(self.references):
            self.references[k][0].add(image_index, scores)

    def result(self, source: str) -> ConceptMaps | None:
        if self.accumulator is None or self.failure is not None:
            return None
        mean, count = self.accumulator.mean()
        if bool((count == 0).any()):
            return None
        if not bool(torch.isfinite(mean).all()):
            self.fail("the concept scores were not finite numbers (NaN/Inf): the latent or the model's "
                      "activations were (e.g. a NaN latent, or fp16 overflow)")
            return None
        grid = self.grid
        blocks = len(self.config.blocks)
        passes = int(count.min().item()) // blocks
        detail = (f"captured while sampling: {passes} model pass{'es' if passes != 1 else ''} "
                  f"x {blocks} block{'s' if blocks != 1 else ''} averaged")
        block_maps = self.accumulator.block_means()
        references = []
        for k, (accumulator, ref_grid, size) in enumerate(self.references):
            ref_mean, ref_count = accumulator.mean()
            if bool((ref_count == 0).any()):
                references = []
                break
            references.append(ConceptMaps(self.config.names, ref_mean.reshape(ref_mean.shape[0], -1, *ref_grid), size,
                                          source, f"{detail}; of reference image {k + 1}", *self.geometry))
        return ConceptMaps(self.config.names, mean.reshape(mean.shape[0], mean.shape[1], *grid),
                           self.latent_size, source, detail, *self.geometry, blocks=self.config.blocks,
                           block_maps=block_maps.reshape(*block_maps.shape[:3], *grid), references=tuple(references))


@dataclass
class _CapturedImage:
    key: str  # the patch fingerprint
    latent: torch.Tensor  # [channels, (frames,) h, w] float32 CPU, as the sampler returned it
    summary: torch.Tensor  # per-channel mean: a cheap first test before the full comparison
    scale: float  # largest absolute value of the latent
    maps: torch.Tensor  # [C, (T,) h', w'] token grid
    names: tuple[str, ...]
    latent_size: tuple[int, int]
    detail: str
    geometry: tuple[int, int, int]
    blocks: tuple[int, ...] = ()
    block_maps: torch.Tensor | None = None  # [K, C, h', w']
    references: tuple = ()  # (maps [C, h', w'], latent size, detail) per reference image

    @property
    def nbytes(self) -> int:
        extra = (0 if self.block_maps is None else self.block_maps.numel()) + sum(r[0].numel() for r in self.references)
        return (self.latent.numel() + self.maps.numel() + extra) * 4

    def matches(self, latent: torch.Tensor, summary: torch.Tensor, tolerance: float) -> bool:
        if self.latent.shape != latent.shape:
            return False
        limit = tolerance * max(self.scale, 1e-6)
        if (self.summary - summary).abs().max().item() > limit:
            return False
        return (self.latent - latent).abs().max().item() <= limit


class CapturedMaps:
    """Maps captured while sampling, one record per image, found again by the latent the sampler
    returned. Keyed by the patch's fingerprint, not by the patched model object, so re-creating
    an identical patch (ComfyUI's cache dropped the MODEL but kept the LATENT) finds them.

    Bounded by memory (the latents and maps it keeps, oldest dropped first), not by a count, so a
    list run of many latents keeps all of them. A stored latent matches when it has the same shape
    and differs from the query by at most MATCH_TOLERANCE of its largest value: SamplerCustomAdvanced's
    denoised_output differs from its output by about 1e-6; another run differs by order 1."""

    MATCH_TOLERANCE = 1e-3

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._records: collections.deque[_CapturedImage] = collections.deque()
        self._bytes = 0
        self._lock = threading.Lock()

    def record(self, key: str, latent: torch.Tensor, maps: ConceptMaps) -> None:
        latent = latent.detach().to("cpu", torch.float32)
        with self._lock:
            for index, (image, image_maps) in enumerate(zip(latent, maps.maps)):
                stored = image.clone()
                blocks = None if maps.block_maps is None else maps.block_maps[index].clone()
                references = tuple((r.maps[index].clone(), r.latent_size, r.detail) for r in maps.references)
                entry = _CapturedImage(key, stored, _summary(stored), stored.abs().max().item(), image_maps.clone(),
                                       maps.names, maps.latent_size, maps.detail,
                                       (maps.latent_scale, maps.patch_size, maps.temporal_scale),
                                       maps.blocks, blocks, references)
                self._records.append(entry)
                self._bytes += entry.nbytes
            while self._bytes > self.budget_bytes and len(self._records) > 1:
                self._bytes -= self._records.popleft().nbytes

    def find(self, key: str, latent: torch.Tensor) -> ConceptMaps | None:
        """The maps of every image of `latent` (newest record first), or None if any is missing."""
        latent = latent.detach().to("cpu", torch.float32)
        with self._lock:
            records = [r for r in reversed(self._records) if r.key == key]
            found = []
            for image in latent:
                summary = _summary(image)
                match = next((r for r in records if r.matches(image, summary, self.MATCH_TOLERANCE)), None)
                if match is None:
                    return None
                found.append(match)
        first = found[0]
        if any(r.latent_size != first.latent_size or r.maps.shape != first.maps.shape for r in found):
            return None
        block_maps = None
        if all(r.block_maps is not None and r.blocks == first.blocks for r in found):
            block_maps = torch.stack([r.block_maps for r in found])
        references = ()
        if all([(m.shape, size) for m, size, _ in r.references] == [(m.shape, size) for m, size, _ in first.references]
               for r in found):
            references = tuple(ConceptMaps(first.names, torch.stack([r.references[k][0] for r in found]), size, "sampling",
                                           detail, *first.geometry)
                               for k, (_, size, detail) in enumerate(first.references))
        return ConceptMaps(first.names, torch.stack([r.maps for r in found]), first.latent_size, "sampling",
                           first.detail, *first.geometry, blocks=first.blocks if block_maps is not None else (),
                           block_maps=block_maps, references=references)

    def count(self, key: str) -> int:
        with self._lock:
            return sum(1 for r in self._records if r.key == key)

    @property
    def nbytes(self) -> int:
        return self._bytes


def _summary(latent: torch.Tensor) -> torch.Tensor:
    return latent.flatten(1).mean(dim=1)


CAPTURED = CapturedMaps(budget_bytes=256 * 2**20)


def patch_fingerprint(config: ConceptConfig, model_signature: str) -> str:
    """Identical patches (same model, concepts and settings) share their captured maps."""
    digest = hashlib.sha1(model_signature.encode())
    digest.update(repr((config.names, config.blocks, config.start_percent, config.end_percent, config.variant,
                        config.normalize_concepts)).encode())
    digest.update(config.embeddings.numpy().tobytes())
    return digest.hexdigest()


class ConceptStore:
    """Lives on a patched model (in its transformer_options) and is shared by all its clones: the
    concepts, and access to the maps its sampling runs captured. Copying returns the same object,
    because ComfyUI 0.3.64 deep-copies model options on every clone."""

    def __init__(self, config: ConceptConfig, key: str, captured: CapturedMaps = CAPTURED, family=None,
                 latent_scale: int = 8):
        self.config = config
        self.key = key
        self.captured = captured
        self.family = family  # the model family's description (families.py), set by the patching layer
        self.latent_scale = latent_scale  # image pixels per latent pixel
        self.temporal_scale = 1  # a video's pixel frames per latent frame (set by the patching layer)
        self.last_failure: str | None = None  # why the last sampling run took no maps, if it did not

    def __deepcopy__(self, memo):
        return self

    def record(self, latent: torch.Tensor, maps: ConceptMaps) -> None:
        self.captured.record(self.key, latent, maps)

    def find(self, latent: torch.Tensor) -> ConceptMaps | None:
        """The maps captured by the run(s) that produced this latent's images, if any."""
        return self.captured.find(self.key, latent)

    def __len__(self) -> int:
        return self.captured.count(self.key)
