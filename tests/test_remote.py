"""Remote parts: an embedder and a reasoner behind HTTP give what they give in-process (EG-RL, index, eval, demo)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from demo_helpers import free_port, small_corpus
from serve_helpers import serving

from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item


@pytest.fixture(scope="module")
def embedder(tiny_clip_dir):
    from embedrl.models.base import load_embedder

    return load_embedder(str(tiny_clip_dir))


@pytest.fixture(scope="module")
def served(embedder):
    with serving(embedder) as (url, service):
        yield url


def _some_items(synth_dir: Path, n: int = 12) -> list[Item]:
    rows = [json.loads(line) for line in (synth_dir / "corpus.jsonl").read_text().splitlines()]
    kinds = {"image": [], "text": [], "video": []}
    for row in rows:
        kinds["video" if row.get("frames") else "image" if row.get("image") else "text"].append(row)
    picked = [r for group in kinds.values() for r in group[: n // 3]]
    return [Item.from_dict(r, root=synth_dir) for r in picked]


# ---------------------------------------------------------------- the embedder

def test_a_served_embedder_is_the_same_model_over_http(served, embedder, synth_tiny_dir):
    from embedrl.core.tcot import TCoT
    from embedrl.models.base import load_embedder

    remote = load_embedder(served)
    assert remote.backend == "remote" and remote.fingerprint() == embedder.fingerprint()
    assert remote.dim == embedder.dim
    items = _some_items(synth_tiny_dir)
    tcots = [TCoT(keywords=["shape"], boxes=[[100, 100, 900, 900]], answer="a shape") if i.image is not None else None
             for i in items]
    got = remote.encode(items, tcots, batch_size=5)
    assert got.shape == (len(items), embedder.dim) and got.dtype == embedder.encode(items[:1]).dtype
    np.testing.assert_allclose(got.numpy(), embedder.encode(items, tcots).numpy(), atol=1e-5)
    with pytest.raises(EmbedrlError, match="remote embedder"):
        remote.save_pretrained("/tmp/nowhere")


def test_index_build_and_eval_through_a_remote_embedder_match_in_process(served, embedder, tiny_clip_dir,
                                                                         synth_tiny_dir, tmp_path):
    from embedrl.cli import main
    from embedrl.index.build import build_index
    from embedrl.index.search import Retriever
    from embedrl.models.base import load_embedder

    remote = load_embedder(served)
    corpus = small_corpus(synth_tiny_dir, tmp_path / "corpus.jsonl", 8, 8, 4)
    manifest = build_index(remote, corpus, tmp_path / "remote", distributed=False)
    build_index(embedder, corpus, tmp_path / "local", distributed=False)
    assert manifest["embedder"]["fingerprint"] == embedder.fingerprint() and manifest["embedder"]["id"] == served
    # the index built through the server is searched in-process with the model itself, and vice versa
    query = Item(text="a small red circle")
    found = {}
    for name, model in (("remote", str(tiny_clip_dir)), ("local", served)):
        retriever = Retriever.from_dir(tmp_path / name, model=model)
        try:
            found[name] = [(h.id, round(h.score, 4)) for h in retriever.search(query, k=5)[0]]
        finally:
            retriever.close()
    assert found["remote"] == found["local"]
    # `eval mmeb --model URL`: the same scores as the model itself
    scores = {}
    for name, model in (("remote", served), ("local", str(tiny_clip_dir))):
        assert main(["-q", "eval", "mmeb", "--model", model, "--registry", str(synth_tiny_dir / "registry.yaml"),
                     "--data-root", str(synth_tiny_dir), "--out", str(tmp_path / f"eval-{name}"), "--datasets",
                     "Synth-T2I", "Synth-VideoRet", "--no-report"]) == 0
        results = json.loads((tmp_path / f"eval-{name}" / "results.json").read_text())
        scores[name] = {k: v for k, v in results.items() if k != "metadata"}
    assert scores["remote"] == scores["local"] and scores["local"]


def test_a_dead_endpoint_fails_after_its_retries(embedder):
    from embedrl.models.base import load_embedder

    with pytest.raises(EmbedrlError, match=r"failed after 3 attempt\(s\).*check that it is running"):
        load_embedder(f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.01)
    with serving(embedder) as (url, _):
        remote = load_embedder(url, retries=1, backoff=0.01)
        remote.encode([Item(text="fine while it is up")])
    with pytest.raises(EmbedrlError, match="embedder endpoint .* failed after 2 attempt"):
        remote.encode([Item(text="the server has gone")])


def test_outcome_reward_fails_loudly_when_its_embedder_dies(embedder, synth_tiny_dir):
    from embedrl.data.pairs import read_pairs
    from embedrl.models.base import load_embedder
    from embedrl.train.egrl.rewards import OutcomeReward
    from embedrl.train.egrl.rollouts import CandidateBank, RolloutDataset

    pairs, _ = read_pairs(synth_tiny_dir / "train" / "pairs.jsonl", root=synth_tiny_dir)
    pairs = pairs[:4]
    with serving(embedder) as (url, _):
        remote = load_embedder(url, retries=1, backoff=0.01)
        reward = OutcomeReward(RolloutDataset(pairs), remote, CandidateBank(remote, pairs))
        completions = [p.qry_tcot for p in pairs]
        alive = reward(completions, pair_index=[0, 1, 2, 3], role=["query"] * 4)
    local = OutcomeReward(RolloutDataset(pairs), embedder, CandidateBank(embedder, pairs))
    assert alive == pytest.approx(local(completions, pair_index=[0, 1, 2, 3], role=["query"] * 4), abs=1e-5)
    with pytest.raises(EmbedrlError, match="failed after 2 attempt"):  # never a silent zero reward
        reward([p.pos_tcot for p in pairs], pair_index=[0, 1, 2, 3], role=["target"] * 4)


def test_eg_rl_with_its_embedder_behind_a_server_gets_the_in_process_rewards(embedder, tiny_clip_dir,
                                                                             tiny_reasoner_dir, synth_tiny_dir,
                                                                             tmp_path):
    from embedrl.train.egrl.config import build_egrl_config
    from embedrl.train.egrl.trainer import build_egrl_trainer

    def rewards(embedder_spec: str, out: Path) -> list[dict[str, float]]:
        config = build_egrl_config(None, [
            f"reasoner={tiny_reasoner_dir}", f"embedder={embedder_spec}", f"data_root={synth_tiny_dir}",
            f"train_data={synth_tiny_dir / 'train' / 'pairs.jsonl'}", f"output_dir={out}", "max_steps=2",
            "per_device_train_batch_size=4", "num_generations=2", "max_completion_length=16", "use_cpu=true",
            "logging_steps=1", "max_train_pairs=8", "save_strategy=no", "outcome_negatives=all", "seed=3"])
        trainer = build_egrl_trainer(config)
        trainer.train()
        return [{k: v for k, v in row.items() if k.startswith("reward")} for row in trainer.state.log_history
                if "reward" in row]

    local = rewards(str(tiny_clip_dir), tmp_path / "local")
    with serving(embedder) as (url, service):
        remote = rewards(url, tmp_path / "remote")
        embedded = service.metrics.registry.get_sample_value("embedrl_batch_size_sum", {"stage": "embed"})
    assert len(local) == len(remote) == 2 and embedded > 0  # the rewards' vectors came from the server
    for a, b in zip(local, remote):
        assert a.keys() == b.keys() and "rewards/outcome/mean" in a
        assert b == pytest.approx(a, abs=1e-5)


def test_a_generic_openai_endpoint_embeds_plain_texts_and_images(embedder, synth_tiny_dir):
    """Another server (vLLM's shape: no embedrl fields; texts as `input`, an image as chat `messages`)."""
    from fastapi import FastAPI

    from embedrl.client import decode_embedding
    from embedrl.core.tcot import TCoT
    from embedrl.models.base import load_embedder
    from embedrl.serve.server import BackgroundServer
    from embedrl.serve.wire import Limits, chat_parts, parse_input

    app = FastAPI()
    seen = []

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": "other/embedder", "object": "model", "owned_by": "vllm"}]}

    @app.post("/v1/embeddings")
    def embeddings(body: dict):
        seen.append(sorted(body))
        if "messages" in body:
            items = [parse_input(chat_parts(body["messages"]), "messages", Limits())[0]]
        else:
            items = [Item(text=t) for t in body["input"]]
        vectors = embedder.encode(items).numpy()
        return {"object": "list", "model": body["model"], "usage": {"prompt_tokens": 0, "total_tokens": 0},
                "data": [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]}

    with BackgroundServer(app) as server:
        remote = load_embedder(f"{server.url}/v1#other/embedder")
        image = next(i for i in _some_items(synth_tiny_dir) if i.image is not None)
        plain = [Item(text="a red circle"), Item(image=image.image), Item(text="two squares")]
        np.testing.assert_allclose(remote.encode(plain).numpy(), embedder.encode(plain).numpy(), atol=1e-5)
        assert remote.fingerprint().startswith("endpoint:") and remote.dim == embedder.dim
        with pytest.raises(EmbedrlError, match="cannot embed T-CoT evidence"):
            remote.encode([plain[0]], [TCoT(keywords=["red"], answer="red")])
        with pytest.raises(EmbedrlError, match="cannot embed instructions"):
            remote.encode([Item(text="x", instruction="Find the image.")])
    assert ["encoding_format", "messages", "model"] in seen and ["encoding_format", "input", "model"] in seen
    assert decode_embedding([0.5, 1.0]).dtype == np.float32


# ---------------------------------------------------------------- the reasoner

def test_a_remote_reasoner_writes_what_the_served_one_writes(embedder, tiny_reasoner_dir, synth_tiny_dir, tmp_path):
    from embedrl.models.reasoner import load_reasoner

    local = load_reasoner(str(tiny_reasoner_dir))
    items = [i for i in _some_items(synth_tiny_dir, 6) if not i.frames][:3]
    with serving(embedder, reasoner=local, max_batch=1) as (url, _):
        remote = load_reasoner(url, cache=tmp_path / "tcot.sqlite")
        assert remote.cache_key == local.cache_key  # the same model: T-CoTs cached as the same model's
        got = remote.generate_text(items, role="target", max_new_tokens=24)
        assert got == local.generate_text(items, role="target", max_new_tokens=24, batch_size=1)
        tcots = remote.generate(items, role="target")  # through the T-CoT cache, parsed as in-process
        want = local.generate(items, role="target", batch_size=1)
        assert all(a.same_content(b) and a.valid == b.valid for a, b in zip(tcots, want))
        assert remote.generate(items, role="target") and remote.cache.hits == len(items)
        samples = remote.generate_text(items[:1], role="query", num_samples=2, max_new_tokens=8, do_sample=True)
        assert len(samples[0]) == 2
        with pytest.raises(EmbedrlError, match="remote reasoner"):
            remote.save_pretrained(tmp_path / "x")
        with pytest.raises(EmbedrlError, match=r"HTTP 400.*n > 1 needs sampling"):
            remote.endpoint.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 2,
                                                          "temperature": 0})


# ---------------------------------------------------------------- the demo against a server

def test_the_demo_runs_against_a_server(embedder, tiny_clip_dir, synth_tiny_dir, tmp_path):
    from demo_helpers import build_small_index
    from PIL import Image

    from embedrl.client import Client
    from embedrl.demo.app import build_app, load_backend
    from embedrl.demo.remote import RemoteBackend

    index = build_small_index(synth_tiny_dir, tiny_clip_dir, tmp_path / "index")
    local = load_backend(index)
    try:
        with serving(embedder, {"shapes": index}) as (url, _), Client(url) as client:
            remote = RemoteBackend(client)
            assert remote.describe()["count"] == 56 and not remote.has_reasoner
            text = next(r["item"]["text"] for r in local.sample_records() if r["item"].get("text"))
            got, want = remote.query(text=text, k=6), local.query(text=text, k=6)
            assert got.ids == want.ids
            assert [h.score for h in got.hits] == pytest.approx([h.score for h in want.hits], abs=1e-5)
            assert remote.example_rows() == local.example_rows()
            row = remote.example_rows()["image_rows"][0]
            assert np.array_equal(np.asarray(remote.row_image(row)), np.asarray(local.row_image(row)))
            assert remote.query(image=remote.row_image(row), k=3).ids == local.query(image=local.row_image(row), k=3).ids
            video = next(h for h in remote.query(text="a moving shape", k=56).hits if h.item.get("frames"))
            view = remote.hit_view(video)
            assert view["frames"] and all(isinstance(f[0] if isinstance(f, tuple) else f, Image.Image)
                                          for f in view["frames"])
            assert all(isinstance(img, Image.Image) for img, _ in remote.gallery(got.hits))
            demo = build_app(remote)  # the Gradio app builds around it
            assert demo.embedrl_backend is remote
            with pytest.raises(EmbedrlError, match="serves no index 'nope'"):
                RemoteBackend(client, "nope")
    finally:
        local.retriever.close()


def test_search_with_query_tcots_written_on_the_server(embedder, tiny_clip_dir, tiny_reasoner_dir, synth_tiny_dir,
                                                       tmp_path):
    from demo_helpers import build_small_index

    from embedrl.client import Client, item_input
    from embedrl.core.tcot import TCoT, render_tcot
    from embedrl.index.search import Retriever
    from embedrl.models.reasoner import load_reasoner

    index = build_small_index(synth_tiny_dir, tiny_clip_dir, tmp_path / "index")
    reasoner = load_reasoner(str(tiny_reasoner_dir))
    query = Item(text="a small red circle on the left")
    retriever = Retriever.from_dir(index, reasoner=reasoner, cache=tmp_path / "local.sqlite")
    try:
        with_tcot = retriever.search(query, k=5)[0]
        plain = retriever.search(query, k=5, use_tcot=False)[0]
        written = retriever.cache.get_or_generate([query], "query", reasoner)[0]
    finally:
        retriever.close()
    with serving(embedder, {"demo": index}, reasoner=reasoner, tcot_cache=str(tmp_path / "served.sqlite")) as (
            url, _), Client(url) as client:
        found = client.search(query, k=5)
        assert set(found["timings_ms"]) == {"reasoning", "embedding", "search"}
        assert found["query"]["tcot"] is not None and found["query"]["evidence"]["keywords"] == written.keywords
        assert [h["id"] for h in found["hits"]] == [h.id for h in with_tcot]
        assert [h["id"] for h in client.search(query, k=5, use_tcot=False)["hits"]] == [h.id for h in plain]
        given = TCoT(keywords=["red", "circle"], answer="a red circle")
        body = {"query": item_input(query, given), "k": 3}
        answer = client.post("/v1/search", body)
        assert answer["query"]["tcot"] == render_tcot(given) and "reasoning" not in answer["timings_ms"]


def test_a_served_vlm_embedder_keeps_its_embedding_format(tiny_vlm_embedder_dir, synth_tiny_dir):
    from embedrl.core.tcot import TCoT
    from embedrl.models.base import load_embedder

    local = load_embedder(str(tiny_vlm_embedder_dir))
    items = _some_items(synth_tiny_dir, 6)
    tcots = [TCoT(keywords=["shape"], boxes=[[0, 0, 800, 800]], answer="a shape") if i.image is not None else
             TCoT(keywords=["moving"], key_frames=[1], answer="motion") if i.frames else None for i in items]
    with serving(local) as (url, _):
        remote = load_embedder(url)
        assert remote.embedrl_config() == {"format": local.embedrl_config()["format"]}
        np.testing.assert_allclose(remote.encode(items, tcots, batch_size=3).numpy(),
                                   local.encode(items, tcots, batch_size=3).numpy(), atol=1e-4)
        other = next(f for f in ("vlm2vec", "gme") if f != local.embedrl_config()["format"])
        with pytest.raises(EmbedrlError, match=f"not {other}"):
            load_embedder(url, format=other)
