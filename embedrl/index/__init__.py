"""FAISS indexes: build from a corpus with cached T-CoTs, store, search.

    from embedrl.index.build import build_index, build_from_vectors
    from embedrl.index.add import add_to_index              # refuses or skips ids the index holds
    from embedrl.index.search import Retriever, Hit
    from embedrl.core.tcot_cache import TCoTCache          # shared with training and evaluation
    from embedrl.data.corpus import read_corpus, Corpus

    from embedrl.index.ray_engine import RayEngine          # build_index(..., engine=RayEngine(...))
    from embedrl.index.sharded import open_index            # an index whole or in parts, as one

Modules import faiss (and ray) only inside the functions that use them, so importing this package
is cheap. Tests: tests/test_index.py, test_sharded_index.py, test_ray_index.py. Recipes: index/README.md.
"""
