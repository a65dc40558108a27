"""FAISS indexes: build from a corpus with cached T-CoTs, store, search."""
