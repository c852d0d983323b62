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
    out = encode_concepts(clip, ["forêt enneigée", "лес", "word " * 300])
    assert out.shape == (3, 64) and torch.isfinite(out).all()


def test_concept_t5_cannot_read_is_refused_with_the_fix(clip):
    """T5-XXL has no pieces for CJK characters or emoji: such a concept would be the unknown token,
    the same for all of them (identical, meaningless maps)."""
    from concept_attention_pack.nodes.capture import ConceptInputError
    from concept_attention_pack.nodes.text_encoding import encode_concepts
    with pytest.raises(ConceptInputError) as refused:
        encode_concepts(clip, ["dragon", "龍", "🐉"])
    message = str(refused.value)
    assert "'龍', '🐉'" in message and "T5-XXL" in message and "English" in message


def test_concept_with_some_unknown_characters_encodes_from_the_rest_and_says_so(clip, caplog):
    from concept_attention_pack.nodes.text_encoding import encode_concepts
    with caplog.at_level("WARNING"):
        mixed, dragon = encode_concepts(clip, ["龍 dragon", "dragon"])
    assert "'龍 dragon'" in caplog.text and "T5-XXL" in caplog.text
    assert not torch.allclose(mixed, dragon)
