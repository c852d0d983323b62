"""Concept text -> concept embeddings through the CLIP the user loaded (the T5-XXL side for Flux)."""
from __future__ import annotations

import torch

from .capture import ConceptInputError

TEXT_KEY = "t5xxl"


def encode_concepts(clip, names: list[str]) -> torch.Tensor:
    """[C, text_dim] float32 on the CPU: each concept encoded on its own, then the mean of the
    concept's own token embeddings (padding and end-of-sequence excluded). The authors keep only
    the first sub-word, which turns "skyscraper" into "sky"; for a one-token word both agree."""
    rows = []
    for name in names:
        tokens = clip.tokenize(name, return_word_ids=True)
        if TEXT_KEY not in tokens:
            raise ConceptInputError(
                f"clip: this CLIP has no T5-XXL text encoder (it gives {sorted(tokens)}); Flux needs "
                "DualCLIPLoader with type 'flux' (clip_l + t5xxl).")
        word_ids = torch.tensor([token[2] for chunk in tokens[TEXT_KEY] for token in chunk])
        own = torch.nonzero(word_ids > 0).flatten()
        if own.numel() == 0:
            raise ConceptInputError(f"concepts: {name!r} produced no text tokens; use a word or phrase.")
        embedded = clip.encode_from_tokens(_strip_word_ids(tokens))
        rows.append(embedded.reshape(-1, embedded.shape[-1])[own].float().mean(dim=0))
    return torch.stack(rows).cpu()


def encode_prompt(clip, text: str) -> torch.Tensor:
    """[1, L, text_dim] float32 on the CPU: the prompt the encode path uses when none is connected."""
    return clip.encode_from_tokens(clip.tokenize(text)).float().cpu()


def _strip_word_ids(tokens: dict) -> dict:
    return {key: [[token[:2] for token in chunk] for chunk in chunks] for key, chunks in tokens.items()}
