"""Indexes in parts (`--index-shards N`): trained once, searched as one, the same results as one index.

Precomputed vectors through `build_from_vectors`, so no model is needed: a 4-part Flat index
returns the same top-k as the single one, merged or served through `IndexShards`; a 4-part IVF
index's recall@10 is within 0.01 of the single IVF index's.
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from test_index import exact_top, low_rank

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item
from embedrl.index import faiss_index as fx
from embedrl.index.add import add_to_index
from embedrl.index.build import build_from_vectors, load_manifest
from embedrl.index.search import Retriever
from embedrl.index.sharded import PARTS_DIR, TRAINED_FILE, group_shards, open_index


def test_groups_are_contiguous_balanced_and_never_empty():
    assert group_shards([10] * 8, 4) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert group_shards([100, 1, 1, 1], 3) == [[0], [1], [2, 3]]
    assert group_shards([5, 5, 0, 0], 4) == [[0], [1], [2], [3]]
    with pytest.raises(EmbedrlError, match="more than the 2 encode shard"):
        group_shards([10, 10], 3)


@pytest.mark.parametrize("mode", ["merge", "shards"])
def test_flat_in_four_parts_returns_the_single_index_top_k(tmp_path, mode):
    xb, xq = low_rank(1000, 32), low_rank(40, 32, seed=1)
    items = [Item(id=f"item-{i}", text=f"text {i}") for i in range(len(xb))]
    build_from_vectors(xb, tmp_path / "one", items=items, shard_size=100)
    manifest = build_from_vectors(xb, tmp_path / "four", items=items, shard_size=100, index_shards=4)
    assert [(p["start"], p["count"]) for p in manifest["index_shards"]] == [(0, 300), (300, 200), (500, 300),
                                                                           (800, 200)]
    assert (tmp_path / "four" / TRAINED_FILE).is_file() and not (tmp_path / "four" / "index.faiss").exists()

    one = Retriever.from_dir(tmp_path / "one", load_model=False)
    four = Retriever.from_dir(tmp_path / "four", load_model=False)
    four.index, four.store = open_index(tmp_path / "four", manifest, mode=mode)
    assert isinstance(four.index, faiss.IndexShards) == (mode == "shards") and len(four) == 1000
    s1, r1 = one.search_vectors(xq, k=10)
    s4, r4 = four.search_vectors(xq, k=10)
    assert (r4 == r1).all() and (r1 == exact_top(xb, xq, 10)).all()
    np.testing.assert_allclose(s4, s1, rtol=1e-6, atol=1e-6)
    hits1, hits4 = one.hits(s1, r1), four.hits(s4, r4)
    assert [[h.to_dict() for h in q] for q in hits4] == [[h.to_dict() for h in q] for q in hits1]
    assert four.store.get_many([0, 299, 300, 999, 1000]) == one.store.get_many([0, 299, 300, 999, 1000])
    assert four.store.ids(limit=302) == [f"item-{i}" for i in range(302)]
    one.close(), four.close()


def test_ivf_in_four_parts_keeps_the_single_index_recall(tmp_path):
    xb, xq = low_rank(4000, 32), low_rank(100, 32, seed=1)
    truth = exact_top(xb, xq, 10)
    single = build_from_vectors(xb, tmp_path / "one", factory="IVF32,SQ8", shard_size=500)
    parts = build_from_vectors(xb, tmp_path / "four", factory="IVF32,SQ8", shard_size=500, index_shards=4)
    assert len(parts["index_shards"]) == 4 and parts["search_params"] == single["search_params"]
    one = Retriever.from_dir(tmp_path / "one", load_model=False)
    recall_one = fx.recall_at_k(one.search_vectors(xq, 10, {"nprobe": 4})[1], truth, 10)
    assert recall_one > 0.5  # random: 0.0025
    for mode in ("merge", "shards"):
        index, store = open_index(tmp_path / "four", parts, mode=mode)
        fx.set_search_params(index, {"nprobe": 4})
        recall_four = fx.recall_at_k(index.search(xq, 10)[1], truth, 10)
        assert abs(recall_four - recall_one) <= 0.01, (mode, recall_four, recall_one)
        store.close()
    # every part holds codes from the one trained index: its centroids are the single index's
    indexes = [fx.read_index(tmp_path / "four" / p["index"]) for p in parts["index_shards"]]
    centroids = [faiss.extract_index_ivf(ix).quantizer.reconstruct_n(0, 32) for ix in indexes]
    assert all((c == centroids[0]).all() for c in centroids)
    one.close()


def test_hnsw_parts_are_served_through_index_shards_and_the_layout_can_change(tmp_path):
    xb = low_rank(800, 16)
    out = tmp_path / "idx"
    manifest = build_from_vectors(xb, out, factory="HNSW32", shard_size=100, index_shards=2)
    index, store = open_index(out, manifest, mode="merge")  # HNSW cannot merge: served as shards
    assert isinstance(index, faiss.IndexShards) and index.ntotal == 800
    store.close()
    r = Retriever.from_dir(out, load_model=False)
    assert fx.recall_at_k(r.search_vectors(xb[:50], 10)[1], exact_top(xb, xb[:50], 10), 10) > 0.9
    r.close()
    with pytest.raises(EmbedrlError, match="index shards.*--overwrite"):
        add_to_index(out, [Item(text="more")], embedder=None)  # type: ignore[arg-type]

    shard_times = sorted(p.stat().st_mtime_ns for p in (out / "shards").glob("shard_*.npy"))
    manifest = build_from_vectors(xb, out, factory="HNSW32", shard_size=100)  # the same shards, one index
    assert (out / manifest["index_file"]).is_file() and "index_shards" not in load_manifest(out)
    assert not list(out.glob(f"{PARTS_DIR}*"))  # the parts the single index replaced are gone
    assert sorted(p.stat().st_mtime_ns for p in (out / "shards").glob("shard_*.npy")) == shard_times
    assert Retriever.from_dir(out, load_model=False).search_vectors(xb[:1], 1)[1][0, 0] == 0
