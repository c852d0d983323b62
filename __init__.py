"""ComfyUI entry point of the ConceptAttention node pack."""

WEB_DIRECTORY = "./js"  # the node UI: Concept Saliency's preview, pointer ranking and concept picking


async def comfy_entrypoint():
    from .nodes.extension import ConceptAttentionExtension

    return ConceptAttentionExtension()
