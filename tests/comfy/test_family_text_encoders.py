"""Ground truth for the Flux.2 (Klein: Qwen3, dev: Mistral 3) and Chroma (T5) text encoders,
independent of the pack: which rows of the encoder's output belong to a concept's own text.

Layouts (tiny encoders built from ComfyUI 0.29's own tokenizer and encoder classes):
- Klein: "<|im_start|>user\\n{text}<|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n",
  then <|endoftext|> (151643) pad tokens on the right up to 512 rows; no start/end token.
- dev: <s>, then "[SYSTEM_PROMPT]...[/SYSTEM_PROMPT][INST]{text}[/INST]"; no padding in the
  encoder output (the model later left-pads it to 512 rows with zeros).
- Chroma: the text's T5 pieces, then </s>; no template, no padding.
The template is tokenized together with the text (one word id for all of it), so the concept's
rows are what differs from the empty text's tokens (tiny_flux.own_token_positions)."""
from __future__ import annotations

import pytest
import torch

from conftest import COMFYUI

from tiny_flux import family_test_marks

pytestmark = family_test_marks(COMFYUI is not None)

CONCEPTS = ["dog", "skyscraper window", "forêt", "龍"]
FAMILIES = ["klein", "dev", "chroma"]
KLEIN_PAD = 151643


@pytest.fixture(scope="module")
def clips():
    from tiny_flux2 import tiny_flux2_clip, tiny_klein_clip
    from tiny_chroma import tiny_chroma_clip
    return {"klein": tiny_klein_clip(0), "dev": tiny_flux2_clip(0), "chroma": tiny_chroma_clip(0)}


def _token_ids(clip, text):
    (batches,) = clip.tokenize(text).values()
    assert len(batches) == 1
    return [int(t[0]) for t in batches[0]]


def _expected_text(family, text):
    # T5's SentencePiece vocabulary has no 龍: the concept is the unknown token (after an empty "▁").
    return "<unk>" if family == "chroma" and text == "龍" else text


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("text", CONCEPTS)
def test_own_positions_decode_to_exactly_the_concept(clips, family, text):
    from tiny_flux import own_token_positions
    clip = clips[family]
    ids = _token_ids(clip, text)
    positions = own_token_positions(clip, text)
    assert positions and positions == list(range(positions[0], positions[-1] + 1))  # one contiguous run
    own = [ids[p] for p in positions]
    assert clip.tokenizer.decode(own, skip_special_tokens=False) == _expected_text(family, text)
    if text == "dog":
        assert len(positions) == 1
    if text == "skyscraper window":
        assert len(positions) > 1


@pytest.mark.parametrize("family", ["klein", "dev"])
@pytest.mark.parametrize("text", CONCEPTS)
def test_flux2_word_tokens_are_the_chat_template_around_the_text(clips, family, text):
    from tiny_flux import own_token_positions
    clip = clips[family]
    (batches,) = clip.tokenize(text, return_word_ids=True).values()
    row = batches[0]
    words = [i for i, t in enumerate(row) if t[2] != 0]
    template = clip.tokenizer.llama_template
    ids = [int(t[0]) for t in row]
    assert clip.tokenizer.decode([ids[i] for i in words], skip_special_tokens=False) == template.format(text)
    positions = own_token_positions(clip, text)
    before, after = template.split("{}")
    assert clip.tokenizer.decode(ids[words[0]:positions[0]], skip_special_tokens=False) == before
    assert clip.tokenizer.decode(ids[positions[-1] + 1:words[-1] + 1], skip_special_tokens=False) == after


def test_klein_rows_are_512_with_right_padding(clips):
    from tiny_flux import own_token_positions
    from tiny_flux2 import FLUX2_PROMPT_LENGTH, FLUX2_TEXT_DIM
    clip = clips["klein"]
    ids = _token_ids(clip, "skyscraper window")
    last = own_token_positions(clip, "skyscraper window")[-1]
    assert len(ids) == FLUX2_PROMPT_LENGTH
    first_pad = ids.index(KLEIN_PAD)
    assert first_pad > last and set(ids[first_pad:]) == {KLEIN_PAD}
    cond = clip.encode_from_tokens(clip.tokenize("skyscraper window"))
    assert cond.shape == (1, FLUX2_PROMPT_LENGTH, FLUX2_TEXT_DIM)
    assert cond[0, first_pad:].abs().sum() > 0  # pad rows are encoder outputs, not zeros


def test_dev_rows_start_with_bos_and_are_not_padded(clips):
    from tiny_flux2 import FLUX2_TEXT_DIM
    clip = clips["dev"]
    ids = _token_ids(clip, "dog")
    assert ids[0] == 1 and 11 not in ids  # <s>; no <pad>
    cond = clip.encode_from_tokens(clip.tokenize("dog"))
    assert cond.shape == (1, len(ids), FLUX2_TEXT_DIM)


def test_chroma_rows_end_with_eos_and_are_not_padded(clips):
    from tiny_flux import own_token_positions
    from tiny_chroma import CHROMA_TEXT_DIM
    clip = clips["chroma"]
    ids = _token_ids(clip, "skyscraper window")
    assert ids[-1] == 1 and 0 not in ids  # </s>; no <pad>
    assert own_token_positions(clip, "skyscraper window") == list(range(len(ids) - 1))
    cond = clip.encode_from_tokens(clip.tokenize("skyscraper window"))
    assert cond.shape == (1, len(ids), CHROMA_TEXT_DIM)


@pytest.mark.parametrize("family", FAMILIES)
def test_encoder_output_has_no_pooled_vector_and_one_row_per_token(clips, family):
    clip = clips[family]
    (cond, extra), = clip.encode_from_tokens_scheduled(clip.tokenize("a dog"))
    assert extra["pooled_output"] is None
    assert cond.shape[1] == len(_token_ids(clip, "a dog")) and torch.isfinite(cond).all()
