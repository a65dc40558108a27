"""Models: the Reasoner, the Embedder backends (VLM `<emb>`, open_clip) and the tiny presets."""
