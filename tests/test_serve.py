"""`embedrl serve` over HTTP on 127.0.0.1: every route, the OpenAI schema, bad requests, batching, reloads."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import struct
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image
from serve_helpers import index_with_fields, serving

from embedrl.client import Client, item_input
from embedrl.core.errors import EmbedrlError
from embedrl.core.items import Item
from embedrl.core.media import ImageLimits
from embedrl.core.tcot import TCoT, render_tcot
from embedrl.serve.wire import Limits

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, synth_tiny_dir, tiny_clip_dir):
    return index_with_fields(synth_tiny_dir, tiny_clip_dir, tmp_path_factory.mktemp("serve") / "index")


@pytest.fixture(scope="module")
def embedder(tiny_clip_dir):
    from embedrl.models.base import load_embedder

    return load_embedder(str(tiny_clip_dir))


@pytest.fixture(scope="module")
def served(embedder, index_dir):
    limits = Limits(max_body_mb=1, max_inputs=16, image=ImageLimits(max_mb=0.5, max_pixels=1_000_000))
    with serving(embedder, {"demo": index_dir}, api_key=KEY, limits=limits, max_wait_ms=2) as (url, service):
        yield url, service


@pytest.fixture(scope="module")
def http(served):
    with httpx.Client(base_url=served[0], headers=AUTH, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def client(served):
    with Client(served[0], api_key=KEY) as c:
        yield c


@pytest.fixture(scope="module")
def rows(index_dir):
    from embedrl.index.store import ItemStore

    with ItemStore(index_dir / "store.sqlite", readonly=True) as store:
        return [r for r in store.get_many(range(store.count())) if r]


def _row(rows, kind):
    return next(r for r in rows if r["fields"]["kind"] == kind)


def _item(rec) -> Item:
    return Item.from_dict(rec["item"])


def _png_b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _assert_up(http):
    assert http.get("/health").json()["status"] == "ok"


# ---------------------------------------------------------------- health, models, metrics

def test_health_and_models_report_the_models_identity(http, embedder):
    health = httpx.get(f"{http.base_url}/health").json()  # no key needed: load balancers poll it
    assert health["fingerprint"] == embedder.fingerprint() and health["dim"] == embedder.dim
    assert health["indexes"] == {"demo": 56} and health["model"] == "tiny-clip"
    models = http.get("/v1/models").json()
    assert models["object"] == "list"
    assert models["data"][0]["id"] == "tiny-clip"
    assert models["data"][0]["embedrl"] == {"kind": "embedder", "fingerprint": embedder.fingerprint(),
                                            "dim": embedder.dim, "backend": "open_clip", "format": None}


def test_metrics_count_requests_batches_and_queues(http):
    from prometheus_client import CONTENT_TYPE_LATEST

    http.post("/v1/embeddings", json={"input": ["a red circle", "a blue square"]})
    response = http.get("/metrics")
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    text = response.text
    assert 'embedrl_requests_total{method="POST",route="/v1/embeddings",status="200"}' in text
    assert 'embedrl_request_duration_seconds_bucket{le="0.001",route="/v1/embeddings"}' in text
    assert 'embedrl_batch_size_count{stage="embed"}' in text
    assert 'embedrl_queue_depth{stage="embed"} 0.0' in text
    assert 'embedrl_index_items{index="demo"} 56.0' in text


# ---------------------------------------------------------------- embeddings

def test_the_openai_client_gets_the_in_process_vectors(served, embedder):
    import openai

    api = openai.OpenAI(base_url=f"{served[0]}/v1", api_key=KEY)
    texts = ["a small red circle on the left", "two blue squares"]
    expected = embedder.encode([Item(text=t) for t in texts]).numpy()
    got = api.embeddings.create(model="tiny-clip", input=texts)  # the client asks for base64 by default
    assert [d.index for d in got.data] == [0, 1] and got.model == "tiny-clip"
    np.testing.assert_allclose(np.array([d.embedding for d in got.data]), expected, atol=1e-6)
    floats = api.embeddings.create(model="tiny-clip", input=texts[0], encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, expected[0], atol=1e-6)
    with pytest.raises(openai.NotFoundError, match="not served here"):
        api.embeddings.create(model="another-model", input="x")


def test_images_videos_instructions_and_tcots_embed_as_in_process(client, embedder, rows):
    image, video, text = _row(rows, "image"), _row(rows, "video"), _row(rows, "text")
    items = [_item(image), _item(video), _item(text), _item(image)]
    tcots = [TCoT(keywords=["circle"], boxes=[[0, 0, 600, 600]], answer="a circle"),
             TCoT(keywords=["moving"], key_frames=[1, 2], answer="motion"), None,
             TCoT(boxes=[[0, 0, 600, 600]], valid=False, reason="broken")]  # unusable: embedded raw
    got = client.embed(items, tcots, batch_size=2)
    np.testing.assert_allclose(got, embedder.encode(items, tcots).numpy(), atol=1e-5)
    assert not np.allclose(got[0], got[3], atol=1e-3)  # the evidence changed the vector


def test_vllm_messages_form_and_bare_base64(http, embedder, rows):
    rec = _row(rows, "image")
    image = Image.open(rec["item"]["image"]).convert("RGB")
    expected = embedder.encode([Item(image=image, instruction="Represent the given image.")]).numpy()[0]
    body = {"messages": [{"role": "system", "content": "Represent the given image."},
                         {"role": "user", "content": [{"type": "image_url", "image_url": {
                             "url": "data:image/png;base64," + _png_b64(image)}}]}], "encoding_format": "float"}
    got = http.post("/v1/embeddings", json=body).json()["data"][0]["embedding"]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    bare = {"input": [[{"type": "instruction", "text": "Represent the given image."},
                       {"type": "image_url", "image_url": _png_b64(image)}]]}
    np.testing.assert_allclose(http.post("/v1/embeddings", json=bare).json()["data"][0]["embedding"], expected,
                               atol=1e-5)


# ---------------------------------------------------------------- search and items

def test_search_returns_the_in_process_hits_with_their_fields(client, index_dir, rows):
    from embedrl.index.search import Retriever

    query = _row(rows, "text")["item"]["text"]
    found = client.search(query, index="demo", k=5)
    retriever = Retriever.from_dir(index_dir)
    try:
        expected = retriever.search(Item(text=query), k=5)[0]
    finally:
        retriever.close()
    assert [h["id"] for h in found["hits"]] == [h.id for h in expected]
    assert [h["score"] for h in found["hits"]] == pytest.approx([h.score for h in expected], abs=1e-5)
    assert [h["rank"] for h in found["hits"]] == [1, 2, 3, 4, 5]
    assert found["hits"][0]["fields"] == {"kind": "text"} and found["query"]["tcot"] is None
    assert set(found["timings_ms"]) == {"embedding", "search"}  # no reasoner: no reasoning stage


def test_search_filters_on_stored_fields_and_takes_an_image(client, rows):
    rec = _row(rows, "image")
    image_query = Item(image=rec["item"]["image"], instruction=rec["item"]["instruction"])
    found = client.search(image_query, k=3, filters={"kind": "image"})
    assert found["hits"][0]["id"] == rec["id"] and found["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert all(h["fields"]["kind"] == "image" for h in found["hits"])
    videos = client.search("a moving shape", k=50, filters={"kind": ["video"]})["hits"]
    assert len(videos) == 8 and {h["fields"]["kind"] for h in videos} == {"video"}  # all of them, however deep
    assert client.search("a shape", k=3, filters={"kind": "nothing"})["hits"] == []


def test_items_and_media_come_from_the_index(client, http, rows):
    video = _row(rows, "video")
    got = client.item("demo", video["id"])
    assert got["item"] == video["item"] and got["row"] == video["row"] and got["fields"] == {"kind": "video"}
    listed = client.items("demo", offset=2, limit=3)
    assert [r["row"] for r in listed] == [2, 3, 4]
    frame = client.media("demo", video["row"], frame=1)
    assert np.array_equal(np.asarray(frame), np.asarray(Image.open(video["item"]["frames"][1]).convert("RGB")))
    assert http.get(f"/v1/media/demo/{_row(rows, 'text')['row']}").status_code == 404  # text has no image
    indexes = http.get("/v1/indexes").json()["data"]
    assert indexes[0]["name"] == "demo" and indexes[0]["count"] == 56 and indexes[0]["factory"] == "Flat"


# ---------------------------------------------------------------- bad requests

def _png_header(width: int, height: int) -> bytes:
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _image_input(data: bytes) -> dict:
    return {"input": [[{"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(data).decode()}}]]}


BAD = [
    ("malformed JSON", "POST", "/v1/embeddings", b'{"input": ["a"', 400, "not valid JSON"),
    ("not an object", "POST", "/v1/embeddings", b'["a"]', 400, "JSON object"),
    ("huge body", "POST", "/v1/embeddings", json.dumps({"input": ["x" * 2_000_000]}).encode(), 413, "over the limit"),
    ("non-image bytes", "POST", "/v1/embeddings", _image_input(b"#!/bin/sh\necho hi\n"), 400, "not an image"),
    ("pixel bomb", "POST", "/v1/embeddings", _image_input(_png_header(20_000, 20_000)), 400, "megapixels"),
    ("image over the byte limit", "POST", "/v1/embeddings", _image_input(b"\0" * 700_000), 413, "MB"),
    ("not base64", "POST", "/v1/embeddings", {"input": [[{"type": "image_url", "image_url": "data:image/png;base64,%%%"}]]},
     400, "not valid base64"),
    ("an image URL", "POST", "/v1/embeddings", {"input": [[{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]]},
     400, "not fetched"),
    ("a file path", "POST", "/v1/embeddings", {"input": [[{"type": "image_url", "image_url": "/etc/passwd"}]]},
     400, "not fetched"),
    ("token arrays", "POST", "/v1/embeddings", {"input": [[1, 2, 3]]}, 400, "token arrays"),
    ("empty input", "POST", "/v1/embeddings", {"input": ["  "]}, 400, "empty"),
    ("too many inputs", "POST", "/v1/embeddings", {"input": ["a"] * 17}, 400, "over the limit of 16"),
    ("unknown content part", "POST", "/v1/embeddings", {"input": [[{"type": "audio"}]]}, 400, "unknown content part"),
    ("bad encoding", "POST", "/v1/embeddings", {"input": "a", "encoding_format": "int8"}, 400, "encoding_format"),
    ("unknown index", "POST", "/v1/search", {"query": "a", "index": "nope"}, 404, "no index named 'nope'"),
    ("bad k", "POST", "/v1/search", {"query": "a", "k": "ten"}, 400, "`k`"),
    ("no query", "POST", "/v1/search", {"k": 3}, 400, "needs `query`"),
    ("unknown item", "GET", "/v1/items/demo/no-such-id", None, 404, "no item"),
    ("row out of range", "GET", "/v1/media/demo/999", None, 404, "no row 999"),
    ("non-numeric row", "GET", "/v1/media/demo/abc", None, 400, "row"),
    ("unknown route", "GET", "/v1/nothing", None, 404, "Not Found"),
    ("no reasoner served", "POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, 404,
     "--reasoner"),
]


@pytest.mark.parametrize("name,method,path,body,status,message", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_a_4xx_json_error_and_the_server_stays_up(http, name, method, path, body, status, message):
    content = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
    response = http.request(method, path, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error["message"] and error["code"] == status
    _assert_up(http)


def test_a_streamed_body_is_cut_at_the_limit(http):
    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b'{"input": ["'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"]}'

    response = http.post("/v1/embeddings", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "over the limit" in response.json()["error"]["message"]
    _assert_up(http)


def test_a_wrong_or_missing_api_key_is_refused(served):
    url = served[0]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}):
        response = httpx.post(f"{url}/v1/embeddings", json={"input": "a"}, headers=headers)
        assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
    assert httpx.post(f"{url}/v1/embeddings", json={"input": "a"}, headers={"X-API-Key": KEY}).status_code == 200
    with pytest.raises(EmbedrlError, match="HTTP 401"):
        Client(url, api_key="wrong").indexes()


def test_binding_beyond_this_machine_needs_an_api_key(index_dir, monkeypatch, capsys):
    from embedrl.cli import main

    monkeypatch.delenv("EMBEDRL_API_KEY", raising=False)
    assert main(["serve", "--index", str(index_dir), "--host", "0.0.0.0"]) == 1
    assert "set an API key" in capsys.readouterr().err


# ---------------------------------------------------------------- batching and reloads

def test_concurrent_jobs_run_in_batches_and_a_bad_one_fails_alone():
    from embedrl.serve.batching import Batcher

    calls = []

    def double(jobs):
        calls.append(list(jobs))
        if "bad" in jobs:
            raise ValueError("bad job")
        return [j * 2 for j in jobs]

    async def scenario():
        batcher = Batcher("test", double, max_batch=4, max_wait_ms=50)
        batcher.start()
        try:
            first = asyncio.gather(*(batcher.submit([n]) for n in range(5)))  # all queued before the worker runs
            results = await first
            outcome = await asyncio.gather(batcher.submit(["ok"]), batcher.submit(["bad"]), return_exceptions=True)
        finally:
            await batcher.stop()
        return results, outcome

    results, outcome = asyncio.run(scenario())
    assert results == [[0], [2], [4], [6], [8]]
    assert [len(c) for c in calls[:2]] == [4, 1]  # max_batch, then the rest
    assert outcome[0] == ["okok"] and isinstance(outcome[1], ValueError)
    assert calls[2:] == [["ok", "bad"], ["ok"], ["bad"]]  # the failed batch retried one job at a time


def test_concurrent_requests_are_encoded_together(embedder):
    from concurrent.futures import ThreadPoolExecutor

    with serving(embedder, max_batch=64, max_wait_ms=1000) as (url, service), Client(url) as client:
        with ThreadPoolExecutor(8) as pool:
            vectors = list(pool.map(lambda i: client.embed([Item(text=f"shape number {i}")]), range(8)))
        sample = service.metrics.registry.get_sample_value
        assert sample("embedrl_batch_size_sum", {"stage": "embed"}) == 8
        assert sample("embedrl_batch_size_count", {"stage": "embed"}) < 8  # fewer model calls than requests
    expected = embedder.encode([Item(text=f"shape number {i}") for i in range(8)]).numpy()
    np.testing.assert_allclose(np.concatenate(vectors), expected, atol=1e-5)


def test_index_add_is_picked_up_without_a_restart(embedder, index_dir, tmp_path, synth_tiny_dir):
    from embedrl.index.add import add_to_index

    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    new = Item(id="added-1", text="a gigantic purple spiral at the very top")
    with serving(embedder, {"demo": copy}) as (url, _), Client(url) as client:
        assert client.health()["indexes"] == {"demo": 56}
        add_to_index(copy, [new], embedder)
        found = client.search(new.text, k=1)
        assert found["hits"][0]["id"] == "added-1" and found["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert client.indexes()[0]["count"] == 57 and client.item("demo", "added-1")["item"]["text"] == new.text


def test_item_input_leaves_out_a_tcot_the_embedder_would_not_use():
    item = Item(text="a red circle")
    assert item_input(item) == "a red circle"
    assert item_input(item, TCoT(boxes=[[0, 0, 10, 10]])) == "a red circle"  # boxes without an image
    parts = item_input(item, TCoT(keywords=["red"], answer="circle"))
    assert parts[-1] == {"type": "tcot", "text": render_tcot(TCoT(keywords=["red"], answer="circle"))}


@pytest.mark.slow  # two servers start in subprocesses (~1 min on 2 cores)
def test_bench_serve_reports_each_mode_without_errors(index_dir, tmp_path, capsys):
    from embedrl.cli import main

    out = tmp_path / "serve.json"
    assert main(["-q", "bench", "serve", "--index", str(index_dir), "--requests", "24", "--concurrency", "4",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = list(report["rows"].values())
    assert len(rows) == 3 and all(r["errors"] == 0 and r["requests"] == 24 for r in rows)
    assert rows[1]["mean_batch"] == 1.0 and rows[0]["mean_batch"] >= 1.0  # batching off: one query per call
    assert set(report["ratios"]) == {"batching_vs_off", "server_vs_in_process", "server_off_vs_in_process"}
    assert "batching / off" in capsys.readouterr().out
