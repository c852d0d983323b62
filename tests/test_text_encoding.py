"""Concepts are encoded with the user's CLIP (the real Flux tokenizers, tiny T5 weights)."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def clip():
    from tiny_flux import tiny_clip
    return tiny_clip(seed=0)


def test_concept_is_the_mean_of_its_own_t5_tokens(clip):
    from concept_attention_pack.nodes.text_encoding import encode_concepts
    tokenizer = clip.tokenizer.t5xxl.tokenizer
    for name in ["sky", "skyscraper", "a red dragon"]:
        ids = tokenizer(name)["input_ids"]  # the concept's pieces, then the end token
        own = [i for i in ids if i not in (0, 1)]
        full = clip.encode_from_tokens(clip.tokenize(name))[0]
        expected = full[:len(own)].float().mean(0)
        torch.testing.assert_close(encode_concepts(clip, [name])[0], expected)


def test_several_subword_concept_differs_from_its_first_piece(clip):
    from concept_attention_pack.nodes.text_encoding import encode_concepts
    sky, skyscraper = encode_concepts(clip, ["sky", "skyscraper"])
    assert not torch.allclose(sky, skyscraper)


def test_non_ascii_and_long_concepts_encode(clip):
    from concept_attention_pack.nodes.text_encoding import encode_concepts
    out = encode_concepts(clip, ["forêt enneigée", "龍", "word " * 300])
    assert out.shape == (3, 64) and torch.isfinite(out).all()
