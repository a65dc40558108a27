"""Models: the Embedder interface and its backends (VLM `<emb>`, open_clip), HF loading, and the
Reasoner with its prompts."""
