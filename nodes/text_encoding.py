"""Concept text -> concept embeddings through the CLIP the user loaded (the text encoder whose
hidden states feed the diffusion model: T5-XXL for Flux.1 and Chroma, Mistral 3 / Qwen3 for Flux.2,
the CLIP-L/G part for SD3). Which part of the encoder output a concept is read from is the family's
answer (families/*.concept_text)."""
from __future__ import annotations

import logging

import torch

from .capture import ConceptInputError

log = logging.getLogger(__name__)

DEFAULT_TEXT_KEYS = ("t5xxl", "mistral3_24b", "qwen3_4b", "qwen3_8b")


def encode_concepts(clip, names: list[str], text_keys=DEFAULT_TEXT_KEYS, needs: str = "", first_row: int = 0,
                    whole_output: bool = True) -> torch.Tensor:
    """[C, text_dim] float32 on the CPU: each concept encoded on its own, as a prompt is (chat template
    and padding included), then the mean of the concept's own token embeddings: the tokens that
    differ from the encoding of an empty prompt (template, padding, start and end tokens excluded).
    The authors keep only the first sub-word, which turns "skyscraper" into "sky"; for a one-token
    word both agree.

    text_keys: the tokenizer outputs that may feed the model (the first one the CLIP has is used);
    needs: what to connect instead, for the error message. first_row: where that tokenizer's part
    starts in the encoder output, or None where the encoder drops a leading part of the tokens (its
    output is their last rows: Qwen-Image's drops the template's system part); whole_output: the
    output is that part alone (one row per token), else other parts follow it (SD3: CLIP-L/G rows,
    then T5 rows)."""
    empty = clip.tokenize("")
    key = next((k for k in text_keys if k in empty), None)
    if key is None:
        raise ConceptInputError(
            f"clip: this CLIP has no text encoder this model reads (it gives {sorted(empty)}, the model "
            f"needs one of {list(text_keys)}); use {needs or 'the text encoder that belongs to the model'}.")
    pad, unknown, blank = _special_tokens(clip, key)
    empty_ids = [token[0] for chunk in empty[key] for token in chunk]
    rows = []
    tokenized = []
    for name in names:
        tokens = clip.tokenize(name)
        ids = [token[0] for chunk in tokens[key] for token in chunk]
        own = own_token_positions(ids, empty_ids, pad)
        if not own:
            raise ConceptInputError(f"concepts: {name!r} produced no text tokens; use a word or phrase.")
        tokenized.append((name, tokens, ids, own))
    _check_known(tokenized, unknown, blank, key)
    for name, tokens, ids, own in tokenized:
        embedded = clip.encode_from_tokens(tokens)
        embedded = embedded.reshape(-1, embedded.shape[-1])
        start = first_row if first_row is not None else embedded.shape[0] - len(ids)  # a dropped prefix
        fits = (start >= 0 if first_row is not None else start <= 0 and start + own[0] >= 0)
        if not fits or embedded.shape[0] < start + len(ids) or (whole_output and embedded.shape[0] != start + len(ids)):
            raise ConceptInputError(f"clip: the text encoder gave {embedded.shape[0]} embeddings for {len(ids)} "
                                    f"tokens of {name!r}; this CLIP does not fit the model.")
        rows.append(embedded[torch.tensor(own) + start].float().mean(dim=0))
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


def _special_tokens(clip, key: str):
    """(padding id, unknown id, blank(id) -> bool) of the tokenizer behind `key` (ComfyUI names it
    by its embedding key). The unknown token only for a vocabulary that has one (T5's
    SentencePiece; byte-level tokenizers such as Qwen3's and Mistral's encode any text); blank:
    a piece that is only a word boundary (T5's lone '▁' before an unknown character)."""
    for tokenizer in vars(clip.tokenizer).values():
        if getattr(tokenizer, "embedding_key", None) in (key, f"clip_{key}"):  # SD3 names CLIP-L's part "l"
            inner = getattr(tokenizer, "tokenizer", None)
            unknown = getattr(inner, "unk_token_id", None)
            if not isinstance(unknown, int) or not hasattr(inner, "decode"):
                return getattr(tokenizer, "pad_token", None), None, None
            return getattr(tokenizer, "pad_token", None), unknown, lambda i: not inner.decode([i]).strip()
    return None, None, None


ENCODER_NAMES = {"t5xxl": "T5-XXL"}


def _check_known(tokenized, unknown: int | None, blank, key: str) -> None:
    """A concept whose own tokens are all the encoder's unknown token is an error: its embedding
    says only "unknown", the same for every such concept, so its map would be meaningless (T5-XXL
    has no pieces for Chinese, Japanese or Korean characters, nor for emoji). Some unknown pieces
    in a concept are logged: the known rest still carries it."""
    if unknown is None:
        return
    encoder = ENCODER_NAMES.get(key, key)
    unreadable = [name for name, _, ids, own in tokenized
                  if all(ids[i] == unknown or blank(ids[i]) for i in own)]
    if unreadable:
        raise ConceptInputError(
            f"concepts: {', '.join(map(repr, unreadable))} cannot be read by this model's text encoder "
            f"({encoder}): its vocabulary has no pieces for these characters, so each would encode as the "
            "same 'unknown' token and give a meaningless map. Write the concept in English (e.g. 'dragon' "
            "for '龍').")
    for name, _, ids, own in tokenized:
        if any(ids[i] == unknown for i in own):
            log.warning("Concept Attention: %r has characters %s does not know (encoded as its unknown "
                        "token); the map follows the rest of the words. English words work best.", name, encoder)


def encode_prompt(clip, text: str) -> torch.Tensor:
    """[1, L, text_dim] float32 on the CPU: the prompt the encode path uses when none is connected."""
    return clip.encode_from_tokens(clip.tokenize(text)).float().cpu()


def encode_prompt_and_pooled(clip, text: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(prompt [1, L, text_dim], pooled vector [1, width] or None) float32 on the CPU."""
    cond, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
    return cond.float().cpu(), None if pooled is None else pooled.float().cpu()
