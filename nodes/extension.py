"""The ConceptAttention extension: which nodes exist (imports ComfyUI)."""
from comfy_api.latest import ComfyExtension, io

from .concept_nodes import ConceptAttention, ConceptSaliency


class ConceptAttentionExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [ConceptAttention, ConceptSaliency]
