"""ComfyUI entry point of the ConceptAttention node pack."""


async def comfy_entrypoint():
    from .nodes.extension import ConceptAttentionExtension

    return ConceptAttentionExtension()
