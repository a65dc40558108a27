"""The retrieval demo without a browser: query handlers, upload checks, file-route refusals, compare view."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from demo_helpers import build_small_index, free_port
from PIL import Image

from embedrl.cli import main
from embedrl.core.errors import EmbedrlError
from embedrl.core.tcot import TCoT, render_tcot
from embedrl.demo import views
from embedrl.demo.uploads import UploadLimits, UploadRejected, check_image_upload
from embedrl.index.search import Hit


@pytest.fixture(scope="module")
def demo_index(tmp_path_factory, synth_tiny_dir, tiny_clip_dir):
    return build_small_index(synth_tiny_dir, tiny_clip_dir, tmp_path_factory.mktemp("demo") / "index")


@pytest.fixture(scope="module")
def backend(demo_index):
    from embedrl.demo.app import load_backend

    b = load_backend(demo_index)
    yield b
    b.retriever.close()


@pytest.fixture(scope="module")
def reasoning_backend(demo_index, tiny_reasoner_dir, tmp_path_factory):
    from embedrl.demo.app import load_backend

    b = load_backend(demo_index, reasoner=str(tiny_reasoner_dir),
                     tcot_cache=str(tmp_path_factory.mktemp("cache") / "tcot.sqlite"))
    yield b
    b.retriever.close()


def _rows(backend):
    return [r for r in backend.retriever.store.get_many(range(len(backend.retriever))) if r]


# ---------------------------------------------------------------- queries

def test_text_query_finds_the_same_text_first(backend):
    text_row = next(r for r in _rows(backend) if r["item"].get("text") and not r["item"].get("image"))
    result = backend.query(text=text_row["item"]["text"], k=5)
    assert len(result.hits) == 5
    assert result.hits[0].id == text_row["id"]
    assert result.hits[0].score == pytest.approx(1.0, abs=1e-4)
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    assert set(result.timings) == {"embedding", "search"}  # no reasoner: no reasoning stage
    assert result.tcot is None
    gallery = backend.gallery(result.hits)
    assert len(gallery) == 5 and all(isinstance(img, Image.Image) for img, _ in gallery)
    assert gallery[0][1].startswith("#1")


def test_image_query_with_its_instruction_finds_the_image(backend):
    row = next(r for r in _rows(backend) if r["item"].get("image"))
    image = backend.row_image(row["row"])
    result = backend.query(image=image, instruction=row["item"].get("instruction", ""), k=3)
    assert result.hits[0].id == row["id"]
    query_image, card = backend.query_view(result)
    assert isinstance(query_image, Image.Image)  # the query image is shown (boxes drawn when a T-CoT has them)
    assert "No reasoner" in card


def test_empty_query_is_a_message(backend):
    with pytest.raises(EmbedrlError, match="type a query"):
        backend.query(text="   ", image=None)


def test_query_tcot_comes_from_the_reasoner(reasoning_backend):
    result = reasoning_backend.query(text="a small red circle at the top", k=4)
    assert result.tcot is not None  # what the tiny random reasoner wrote, well-formed or not
    assert list(result.timings) == ["reasoning", "embedding", "search"]
    _, card = reasoning_backend.query_view(result)
    assert "Query T-CoT" in card and ("well-formed" in card or "malformed" in card)


def test_selected_result_shows_its_boxes_and_key_frames(backend):
    rows = _rows(backend)
    img_row = next(r for r in rows if r["item"].get("image"))
    tcot = render_tcot(TCoT(keywords=["red <b>circle</b>"], boxes=[[100, 100, 600, 600]], answer="red circle"))
    view = backend.hit_view(Hit(row=img_row["row"], id=img_row["id"], score=0.5, item=img_row["item"], tcot=tcot), 0)
    image = view["image"]
    x, y = round(0.35 * image.width), round(0.1 * image.height)  # on the box's top edge
    assert image.getpixel((x, y)) == Image.new("RGB", (1, 1), views.BOX_COLOURS[0]).getpixel((0, 0))
    assert "&lt;b&gt;circle&lt;/b&gt;" in view["tcot_html"]  # reasoner text is escaped, never markup
    assert "red circle" in view["tcot_html"]

    vid_row = next(r for r in rows if r["item"].get("frames"))
    tcot = render_tcot(TCoT(key_frames=[2, 3], answer="x"))
    view = backend.hit_view(Hit(row=vid_row["row"], id=vid_row["id"], score=0.5, item=vid_row["item"], tcot=tcot))
    captions = [c for _, c in view["frames"]]
    assert len(captions) == len(vid_row["item"]["frames"])
    assert [c.endswith("key") for c in captions[:4]] == [False, True, True, False]

    view = backend.hit_view(Hit(row=img_row["row"], id=img_row["id"], score=0.5, item=img_row["item"]))
    assert "without a reasoner" in view["tcot_html"]


def test_examples_come_from_the_index(backend):
    ex = backend.example_rows()
    assert ex["texts"] and ex["image_rows"]
    assert backend.query(text=ex["texts"][0], k=3).hits


# ---------------------------------------------------------------- compare

def test_rank_movements():
    assert views.rank_movements(["a", "b", "c", "d"], ["c", "a", "e", "b"]) == ["▲2", "▼1", "new", "▼2"]
    assert views.rank_movements(["a", "b"], ["a", "b"]) == ["=", "="]


def test_compare_marks_moves_against_the_plain_ranking(reasoning_backend):
    plain, reasoned, moves = reasoning_backend.compare(text="a huge violet box at the centre", k=6)
    assert plain.use_tcot is False and "reasoning" not in plain.timings
    assert reasoned.use_tcot is True and "reasoning" in reasoned.timings
    assert moves == views.rank_movements(plain.ids, reasoned.ids)
    html = views.compare_table_html([{"label": "<x>", "score": 0.5}], [{"label": "y", "score": 0.4}], ["▲1"])
    assert "&lt;x&gt;" in html and "erl-up" in html


# ---------------------------------------------------------------- uploads

def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's shape) with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_good_upload_is_decoded(tmp_path):
    path = tmp_path / "ok.png"
    Image.new("RGB", (64, 48), "red").save(path)
    img = check_image_upload(path)
    assert img.size == (64, 48) and img.mode == "RGB"


def test_oversized_upload_is_refused(tmp_path):
    path = tmp_path / "big.png"
    Image.effect_noise((600, 600), 64).convert("RGB").save(path)
    with pytest.raises(UploadRejected, match="MB; the limit is 0.1 MB"):
        check_image_upload(path, UploadLimits(max_upload_mb=0.1))
    with pytest.raises(UploadRejected, match="600x600 pixels; the limit is 0.1 megapixels"):
        check_image_upload(path, UploadLimits(max_pixels=100_000))


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(100_000, 100_000))  # 10 gigapixels in 200 bytes
    with pytest.raises(UploadRejected, match="megapixels"):
        check_image_upload(path)
    path.write_bytes(_png_header_only(5000, 5000))  # under PIL's own limit, over ours
    with pytest.raises(UploadRejected, match="5000x5000"):
        check_image_upload(path, UploadLimits(max_pixels=1_000_000))


@pytest.mark.parametrize("payload", [b"#!/bin/sh\necho hi\n", b"<svg xmlns='http://www.w3.org/2000/svg'/>", b""])
def test_non_image_upload_gets_a_message(tmp_path, payload):
    path = tmp_path / "fake.png"
    path.write_bytes(payload)
    with pytest.raises(UploadRejected, match="not an image"):
        check_image_upload(path)


def test_truncated_image_gets_a_message(tmp_path):
    path = tmp_path / "cut.png"
    Image.effect_noise((200, 200), 64).convert("RGB").save(path)
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(UploadRejected, match="could not be decoded"):
        check_image_upload(path)


# ---------------------------------------------------------------- the served app

@pytest.fixture(scope="module")
def served(backend):
    from embedrl.demo.app import build_app, serve

    demo = build_app(backend, max_upload_mb=1, max_pixels=1_000_000)
    _, url, share_url = serve(demo, port=free_port(), block=False, quiet=True)
    yield url.rstrip("/")
    demo.close()


def test_app_binds_localhost_without_share_link(served):
    assert served.startswith("http://127.0.0.1:")
    import embedrl.demo.app as app

    assert not Path(app.__file__).with_suffix(".pyi").exists()  # Gradio wrote no stub into the package


def test_file_route_refuses_paths_outside_the_app(served, demo_index):
    import httpx

    media = next(r for r in _rows_of(demo_index) if r["item"].get("image"))["item"]["image"]
    attempts = ["../../etc/passwd", "..%2F..%2F..%2Fetc%2Fpasswd", "/etc/passwd",
                str(demo_index / "store.sqlite"), str(demo_index / "manifest.json"), media]
    for path in attempts:
        r = httpx.get(f"{served}/gradio_api/file={path}", timeout=30)
        assert r.status_code in (403, 404), (path, r.status_code)
        assert b"root:" not in r.content


def test_request_supplied_input_path_is_refused(served):
    """An input claiming a server path (not an upload) never reaches the file system."""
    import httpx

    body = {"data": ["", {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, "", 3, True]}
    r = httpx.post(f"{served}/gradio_api/call/search", json=body, timeout=30)
    if r.status_code == 200:
        event_id = r.json()["event_id"]
        stream = httpx.get(f"{served}/gradio_api/call/search/{event_id}", timeout=60).text
        assert "event: error" in stream and "root:" not in stream
    else:
        assert r.status_code in (400, 403, 422)


def test_api_search_and_rejected_upload_through_gradio_client(served, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(served, verbose=False, download_files=False)
    out = client.predict("a small red circle", None, "", 4, True, api_name="/search")
    gallery, latency = out[0], out[1]
    assert len(gallery) == 4 and "embedding" in latency
    fake = tmp_path / "notes.png"
    fake.write_text("not an image at all")
    out = client.predict("", handle_file(str(fake)), "", 4, True, api_name="/search")
    assert out[0] == [] and "not an image" in out[4]  # (gr.State outputs are not part of the API)


def _rows_of(index_dir):
    from embedrl.index.store import ItemStore

    with ItemStore(index_dir / "store.sqlite", readonly=True) as store:
        return [r for r in store.get_many(range(store.count())) if r]


# ---------------------------------------------------------------- CLI

def test_cli_demo_reports_a_missing_index(tmp_path, capsys):
    assert main(["demo", "--index", str(tmp_path / "nope")]) == 1
    assert "index directory not found" in capsys.readouterr().err


def test_cli_demo_rejects_bad_limits(tmp_path, capsys):
    assert main(["demo", "--index", str(tmp_path), "--concurrency", "0"]) == 1
    assert "--concurrency" in capsys.readouterr().err


# ---------------------------------------------------------------- load

@pytest.mark.slow
def test_load_50_queries_from_8_threads(served):
    """Bounded load through gradio_client: every query answered, latency reported (see the -s output)."""
    from embedrl.demo.loadtest import run_load_test

    report = run_load_test(served, queries=50, threads=8, k=10)
    print("demo load test:", report)
    assert report["errors"] == 0, report["first_errors"]
    assert report["ok"] == 50 and report["p95_ms"] >= report["p50_ms"] > 0


# ---------------------------------------------------------------- nothing silently wrong

def test_an_example_whose_image_is_gone_is_left_out_with_a_log_line(tmp_path, tiny_clip_dir, caplog):
    from embedrl.demo.app import build_app, load_backend
    from embedrl.index.build import build_index
    from embedrl.models.base import load_embedder

    rows = []
    for i, color in enumerate(["red", "green", "blue"]):
        Image.new("RGB", (32, 32), color).save(tmp_path / f"{color}.png")
        rows.append(f'{{"id": "i{i}", "image": "{color}.png"}}')
    (tmp_path / "corpus.jsonl").write_text("\n".join(rows) + "\n")
    build_index(load_embedder(str(tiny_clip_dir)), tmp_path / "corpus.jsonl", tmp_path / "index", distributed=False)
    (tmp_path / "green.png").unlink()
    backend = load_backend(tmp_path / "index")
    with caplog.at_level("WARNING", logger="embedrl.demo.backend"):
        assert backend.example_rows()["image_rows"] == [0, 2]
        demo = build_app(backend)  # starts, with the two examples that load
    assert "example row 1 left out: image not found" in caplog.text and "green.png" in caplog.text
    demo.close()
    backend.retriever.close()


def _api_error(url: str, data: list) -> str:
    import httpx

    r = httpx.post(f"{url}/gradio_api/call/search", json={"data": data}, timeout=30)
    assert r.status_code == 200
    stream = httpx.get(f"{url}/gradio_api/call/search/{r.json()['event_id']}", timeout=60).text
    assert "event: error" in stream
    return stream


def test_a_forged_path_and_a_non_numeric_k_are_refused_with_a_message(served):
    stream = _api_error(served, ["", {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, "", 3, True])
    assert "Refused: a file input must be uploaded from this page" in stream and "root:" not in stream
    stream = _api_error(served, ["a red circle", None, "", "abc", True])
    assert "Refused: Could not preprocess input component at index 3 (a `slider` component)" in stream
    assert "'abc'" in stream


def test_a_refused_upload_is_deleted_at_once(served, tmp_path):
    from gradio.utils import get_upload_folder
    from gradio_client import Client, handle_file

    fake = tmp_path / "refused-notes-7f3a.png"
    fake.write_text("not an image at all")
    client = Client(served, verbose=False, download_files=False)
    out = client.predict("", handle_file(str(fake)), "", 4, True, api_name="/search")
    assert "not an image" in out[4]
    assert not list(Path(get_upload_folder()).rglob(fake.name))


def test_the_demo_removes_its_uploads_when_it_exits(tmp_path, demo_index):
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx
    from gradio_client import Client, handle_file

    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("GRADIO_TEMP_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "embedrl", "-q", "demo", "--index", str(demo_index), "--port",
                             str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.time() + 120
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else "timeout"
            time.sleep(0.5)
        image = tmp_path / "upload.png"
        Image.new("RGB", (40, 40), "red").save(image)
        Client(url, verbose=False, download_files=False).predict("", handle_file(str(image)), "", 3, True,
                                                                 api_name="/search")
        folders = list(tmp_path.glob("embedrl-demo-*"))
        assert len(folders) == 1 and list(folders[0].rglob("upload.png"))  # kept while the demo runs
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err
    assert not list(tmp_path.glob("embedrl-demo-*"))  # removed on exit


def test_cli_demo_on_a_port_in_use_is_a_one_line_error(demo_index, capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["demo", "--index", str(demo_index), "--port", str(port)]) == 1
    assert capsys.readouterr().err == (f"embedrl: error: cannot serve the demo on 127.0.0.1:{port}: Address already "
                                       "in use (pass --port with a free port)\n")
