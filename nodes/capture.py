"""What a patched model carries (its concepts and settings, its captured maps) and the
state of one capture (a sampling run or one encode pass). Pure torch, no ComfyUI import."""
from __future__ import annotations

import collections
import re
from dataclasses import dataclass

import torch

VARIANTS = ("output space", "cross attention")


class ConceptInputError(ValueError):
    """A user input is unusable; the message names the input, what was received and what to do."""


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


def parse_blocks(spec: str, depth: int) -> tuple[int, ...]:
    """Double-block selection: 'last 4', 'all', '15-18', '0,2,5', '-1' (Python-style negatives)."""
    spec = spec.strip().lower()
    chosen: set[int] = set()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if part == "all":
            chosen.update(range(depth))
        elif m := re.fullmatch(r"last\s*(\d+)", part):
            chosen.update(range(max(0, depth - int(m.group(1))), depth))
        elif m := re.fullmatch(r"(-?\d+)\s*-\s*(-?\d+)", part):
            lo, hi = (_block_index(int(g), depth, spec) for g in m.groups())
            chosen.update(range(min(lo, hi), max(lo, hi) + 1))
        elif re.fullmatch(r"-?\d+", part):
            chosen.add(_block_index(int(part), depth, spec))
        else:
            raise ConceptInputError(
                f"blocks: could not read {part!r} in {spec!r}. Use 'last 4', 'all', a range such "
                "as '15-18' or indices such as '0,2,5'.")
    if not chosen:
        raise ConceptInputError(f"blocks: {spec!r} selects no double block; try 'last 4'.")
    return tuple(sorted(chosen))


def _block_index(index: int, depth: int, spec: str) -> int:
    if not -depth <= index < depth:
        raise ConceptInputError(
            f"blocks: {spec!r} names block {index}, but this model has double blocks 0-{depth - 1}.")
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
    """Float32 running sum of softmax-over-concepts scores per image, and how many were added."""

    def __init__(self, images: int, concepts: int, tokens: int, device):
        self.sum = torch.zeros(images, concepts, tokens, dtype=torch.float32, device=device)
        self.count = torch.zeros(images, dtype=torch.float32, device=device)

    def add(self, image_index: torch.Tensor, scores: torch.Tensor) -> None:
        """scores [b, C, N] for the images image_index [b]; softmax over the concept axis first."""
        self.sum.index_add_(0, image_index, scores.float().softmax(dim=1))
        self.count.index_add_(0, image_index, torch.ones_like(image_index, dtype=torch.float32))

    def mean(self) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (mean [B, C, N] on the CPU, count [B] on the CPU): one transfer off the device."""
        count = self.count.cpu()
        mean = self.sum.cpu() / count.clamp(min=1)[:, None, None]
        return mean, count


@dataclass
class ConceptMaps:
    """Maps on the token grid for a batch of images."""

    names: tuple[str, ...]
    maps: torch.Tensor  # [B, C, h, w] float32 CPU; per pixel the concepts' probabilities sum to 1
    latent_size: tuple[int, int]  # latent (height, width) the grid covers (grid may be padded)
    source: str  # "sampling" or "latent"


class ConceptCapture:
    """State of one capture: a sampling run or an encode pass. Created per run, dropped after."""

    def __init__(self, config: ConceptConfig):
        self.config = config
        self.accumulator: SaliencyAccumulator | None = None
        self.grid: tuple[int, int] | None = None
        self.latent_size: tuple[int, int] | None = None

    def begin_forward(self, images: int, grid: tuple[int, int], latent_size: tuple[int, int], device) -> None:
        if self.accumulator is None:
            self.accumulator = SaliencyAccumulator(images, len(self.config.names), grid[0] * grid[1], device)
            self.grid, self.latent_size = grid, latent_size
        elif self.grid != grid or self.accumulator.sum.shape[0] != images:
            raise ConceptInputError(
                f"latent: the image size or batch changed during one run (token grid {self.grid} "
                f"then {grid}); concept maps need one size per run.")

    def add(self, image_index: torch.Tensor, scores: torch.Tensor) -> None:
        self.accumulator.add(image_index, scores)

    def result(self, source: str) -> ConceptMaps | None:
        if self.accumulator is None:
            return None
        mean, count = self.accumulator.mean()
        if bool((count == 0).any()):
            return None
        h, w = self.grid
        return ConceptMaps(self.config.names, mean.reshape(mean.shape[0], mean.shape[1], h, w),
                           self.latent_size, source)


class ConceptStore:
    """Lives on a patched model (in its transformer_options) and is shared by all its clones:
    the concepts, and the maps captured by the last few sampling runs, keyed by their output
    latent. Copying returns the same object, because ComfyUI 0.3.64 deep-copies model options
    on every clone and the Saliency node must find what the sampler recorded."""

    KEEP = 8

    def __init__(self, config: ConceptConfig):
        self.config = config
        self._captures: collections.deque = collections.deque(maxlen=self.KEEP)

    def __deepcopy__(self, memo):
        return self

    def record(self, latent: torch.Tensor, maps: ConceptMaps) -> None:
        self._captures.append((latent.detach().to("cpu", torch.float32, copy=True), maps))

    def find(self, latent: torch.Tensor) -> ConceptMaps | None:
        """The maps captured by the run that produced exactly this latent, if any."""
        latent = latent.detach().cpu()
        for recorded, maps in reversed(self._captures):
            if recorded.shape == latent.shape and torch.equal(recorded.to(latent.dtype), latent):
                return maps
        return None

    def __len__(self) -> int:
        return len(self._captures)
