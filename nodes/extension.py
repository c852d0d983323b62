"""The ConceptAttention extension: which nodes exist, and the server hook (imports ComfyUI)."""
import logging

from comfy_api.latest import ComfyExtension, io

from .concept_nodes import ConceptAttention, ConceptBlockMaps, ConceptMask, ConceptSaliency, canonical_concepts

log = logging.getLogger(__name__)


def _canonical_prompt(json_data: dict) -> dict:
    """on_prompt handler: concepts typed differently only by spaces, blank lines or a trailing
    newline are sent to the executor as the same text, so ComfyUI's cache does not re-run the
    patch and the sampler after such an edit (its cache key is the raw input text)."""
    for node in (json_data.get("prompt") or {}).values():
        if isinstance(node, dict) and node.get("class_type") == ConceptAttention.NODE_ID:
            inputs = node.get("inputs", {})
            if isinstance(inputs.get("concepts"), str):
                inputs["concepts"] = canonical_concepts(inputs["concepts"])
    return json_data


def _register_prompt_hook() -> None:
    try:
        from server import PromptServer
    except ImportError:  # ComfyUI used as a library, without its server
        return
    server = getattr(PromptServer, "instance", None)
    if server is not None and _canonical_prompt not in server.on_prompt_handlers:
        server.add_on_prompt_handler(_canonical_prompt)


class ConceptAttentionExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        _register_prompt_hook()  # here, not in on_load: ComfyUI 0.3.64 never calls on_load
        return [ConceptAttention, ConceptSaliency, ConceptMask, ConceptBlockMaps]
