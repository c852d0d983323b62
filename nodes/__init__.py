"""ConceptAttention for ComfyUI. The pure torch modules (concept_stream, capture, masks) import
without ComfyUI; flux, api, text_encoding and the node modules need it."""
