"""Concept text -> concept embeddings through the CLIP the user loaded (the text encoder whose
hidden states feed the diffusion model: T5-XXL for Flux.1 and Chroma, Mistral 3 / Qwen3 for Flux.2)."""
from __future__ import annotations

import torch

from .capture import ConceptInputError

DEFAULT_TEXT_KEYS = ("t5xxl", "mistral3_24b", "qwen3_4b", "qwen3_8b")


def encode_concepts(clip, names: list[str], text_keys=DEFAULT_TEXT_KEYS, needs: str = "") -> torch.Tensor:
    """[C, text_dim] float32 on the CPU: each concept encoded on its own, as a prompt is (chat template
    and padding included), then the mean of the concept's own token embeddings: the tokens that
    differ from the encoding of an empty prompt (template, padding, start and end tokens excluded).
    The authors keep only the first sub-word, which turns "skyscraper" into "sky"; for a one-token
    word both agree.

    text_keys: the tokenizer outputs that may feed the model (the first one the CLIP has is used);
    needs: what to connect instead, for the error message."""
    empty = clip.tokenize("")
    key = next((k for k in text_keys if k in empty), None)
    if key is None:
        raise ConceptInputError(
            f"clip: this CLIP has no text encoder this model reads (it gives {sorted(empty)}, the model "
            f"needs one of {list(text_keys)}); use {needs or 'the text encoder that belongs to the model'}.")
    pad = _pad_token(clip, key)
    empty_ids = [token[0] for chunk in empty[key] for token in chunk]
    rows = []
    for name in names:
        tokens = clip.tokenize(name)
        ids = [token[0] for chunk in tokens[key] for token in chunk]
        own = own_token_positions(ids, empty_ids, pad)
        if not own:
            raise ConceptInputError(f"concepts: {name!r} produced no text tokens; use a word or phrase.")
        embedded = clip.encode_from_tokens(tokens)
        embedded = embedded.reshape(-1, embedded.shape[-1])
        if embedded.shape[0] != len(ids):
            raise ConceptInputError(f"clip: the text encoder gave {embedded.shape[0]} embeddings for {len(ids)} "
                                    f"tokens of {name!r}; this CLIP does not fit the model.")
        rows.append(embedded[torch.tensor(own)].float().mean(dim=0))
    return torch.stack(rows).cpu()


def own_token_positions(ids: list[int], empty_ids: list[int], pad: int | None) -> list[int]:
    """Positions in `ids` (a concept's tokens in the prompt template) of the concept's own tokens:
    padding dropped, then what the template around an empty prompt shares with it at the start and
    at the end taken away."""
    kept = [i for i, token in enumerate(ids) if token != pad]
    concept = [ids[i] for i in kept]
    template = [token for token in empty_ids if token != pad]
    prefix = 0
    while prefix < min(len(concept), len(template)) and concept[prefix] == template[prefix]:
        prefix += 1
    suffix = 0
    while (suffix < min(len(concept), len(template)) - prefix
           and concept[len(concept) - 1 - suffix] == template[len(template) - 1 - suffix]):
        suffix += 1
    return kept[prefix:len(concept) - suffix]


def _pad_token(clip, key: str) -> int | None:
    """The padding token of the tokenizer behind `key` (ComfyUI names it by its embedding key)."""
    for tokenizer in vars(clip.tokenizer).values():
        if getattr(tokenizer, "embedding_key", None) == key:
            return getattr(tokenizer, "pad_token", None)
    return None


def encode_prompt(clip, text: str) -> torch.Tensor:
    """[1, L, text_dim] float32 on the CPU: the prompt the encode path uses when none is connected."""
    return clip.encode_from_tokens(clip.tokenize(text)).float().cpu()
