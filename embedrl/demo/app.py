"""The Gradio retrieval demo: search an index and see why things matched.

    embedrl demo --index runs/index            # http://127.0.0.1:7860

    from embedrl.demo.app import build_app, launch
    launch("runs/index")                       # load the index, build the app, serve it
    blocks = build_app(retriever)              # or build it around a loaded Retriever

Layout: the query (text, image or both, optional instruction, k) and the query's T-CoT on
the left (keyword chips, boxes drawn on the query image, the answer); on the right a
"Results" tab (gallery with scores, stage latencies, the selected result with its cached
T-CoT and boxes or key frames) and a "Compare" tab (the same query without and with its
T-CoT, rank movements marked). Examples are drawn from the index.

Hardening (a demo gets shared): binds 127.0.0.1 unless told otherwise, no share link unless
asked, uploads checked for size, pixel count (decompression bombs) and format before
decoding (`embedrl.demo.uploads`), results served as images rendered in memory (no file
route to the index's media: `allowed_paths` stays empty, so no path from a request reaches
the file system), and Gradio's queue with a configurable concurrency. Bad requests get a
message, never an empty error: an input naming a server file instead of an upload, or a value
of the wrong type (`k="abc"`). A refused upload is deleted at once; `launch` gives Gradio a
temporary folder of the demo's own (uploads, rendered results), removed when the demo exits.
"""


import errno
import itertools
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Any

from embedrl.client import is_loopback
from embedrl.core.errors import EmbedrlError
from embedrl.demo import views
from embedrl.demo.backend import MAX_K, DemoBackend, hit_label
from embedrl.demo.uploads import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_UPLOAD_MB,
    UploadLimits,
    UploadRejected,
    check_image_upload,
    delete_upload,
    private_temp_folder,
    set_pil_limit,
)

logger = logging.getLogger(__name__)

DEFAULT_K = 12
DEFAULT_CONCURRENCY = 2


def _query_image_class(limits: UploadLimits):
    """A gr.Image subclass whose upload is checked (size, pixels, format) before anything decodes it.

    The handlers get an RGB PIL image, or the `UploadRejected` saying why not (so the UI
    shows the message instead of a traceback). It must be a subclass, not a patched
    instance: Gradio re-creates a component from its class when an event updates it.
    Gradio's component metaclass writes a .pyi stub beside the module of every component
    class it sees; that is switched off while this class is made, so nothing is written
    into the installed package.
    """
    import gradio as gr

    class QueryImage(gr.Image):
        is_template = True  # rendered by the stock Image front-end

        def preprocess(self, payload):
            if payload is None:
                return None
            if not payload.path:
                return UploadRejected("upload the image as a file")
            try:
                return check_image_upload(payload.path, limits)
            except UploadRejected as e:
                delete_upload(payload.path)
                return e

    return QueryImage


def _say_why_inputs_are_refused(demo) -> None:
    """Gradio refuses an input naming a server file (not an upload) or of the wrong type (`k="abc"`) before any
    handler runs, and with `show_error` off it answers `{"error": null}` (and logs a traceback). Answer with
    the reason instead: a `gr.Error`'s message is always shown, and it logs nothing."""
    import gradio as gr
    from gradio.exceptions import ComponentProcessingError, InvalidPathError

    preprocess = demo.preprocess_data

    async def checked(*args, **kwargs):
        try:
            return await preprocess(*args, **kwargs)
        except InvalidPathError:
            raise gr.Error("Refused: a file input must be uploaded from this page; it cannot name a file on the "
                           "server.", print_exception=False) from None
        except ComponentProcessingError as e:
            what = str(e).split("Original error")[0].strip()
            raise gr.Error(f"Refused: {what}", print_exception=False) from None

    demo.preprocess_data = checked


def _make_query_image_class(limits: UploadLimits):
    from gradio import component_meta

    write_stub = getattr(component_meta, "create_or_modify_pyi", None)
    component_meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:
        return _query_image_class(limits)
    finally:
        if write_stub is not None:
            component_meta.create_or_modify_pyi = write_stub


def _short(spec: str) -> str:
    """A model directory by its last two path parts (a Hub id or spec as is)."""
    path = Path(spec)
    return str(Path(*path.parts[-2:])) if path.is_absolute() and len(path.parts) > 2 else spec


def _header_html(info: dict[str, Any]) -> str:
    reasoner = _short(info["query_reasoner"]) if info["query_reasoner"] else "none (no T-CoT)"
    return (f'<div class="erl-header"><h1>embedrl retrieval demo</h1>'
            f'<div class="erl-sub">{info["count"]:,} items · embedder <code>{views.esc(_short(info["embedder"]))}</code>'
            f' · reasoner <code>{views.esc(reasoner)}</code> · index <code>{views.esc(info["factory"])}</code>'
            "</div></div>")


def _table_rows(hits) -> list[dict[str, Any]]:
    return [{"label": hit_label(h, 40), "score": h.score} for h in hits]


def _status(message: str, kind: str = "error") -> str:
    return f'<div class="erl-status erl-status-{kind}">{views.esc(message)}</div>'


STATUS_CSS = """
.erl-status { padding: 8px 12px; border-radius: 8px; font-size: 0.93em; }
.erl-status-error { background: #fef2f2; color: #991b1b; border: 1px solid #fecaca; }
.erl-status-info { background: #eff6ff; color: #1e40af; border: 1px solid #bfdbfe; }
#erl-results .grid-wrap, #erl-examples .grid-wrap { overflow-y: auto; }
"""


def build_app(retriever, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, max_pixels: int = DEFAULT_MAX_PIXELS,
              concurrency: int = DEFAULT_CONCURRENCY):
    """The demo as a `gr.Blocks` around a loaded `Retriever` (queue configured; launch with `serve`)."""
    import gradio as gr

    backend = retriever if isinstance(retriever, DemoBackend) else DemoBackend(retriever)
    limits = UploadLimits(max_upload_mb, max_pixels)
    QueryImage = _make_query_image_class(limits)
    info = backend.describe()
    examples = backend.example_rows()
    example_images = [(views.fit(backend.row_image(r), 160), f"row {r}") for r in examples["image_rows"]]

    seq = itertools.count(1)
    no_detail = ('<div class="erl-card erl-muted">Select a result to see its item and the T-CoT cached '
                 "for it in the index.</div>")

    def _empty_outputs(message: str, kind: str = "error"):
        return ([], views.latency_html({}, seq=next(seq)), views.tcot_html(None, title="Query T-CoT", missing="—"), gr.update(value=None, visible=False),
                [], _status(message, kind), None, no_detail, "", gr.update(value=[], visible=False))

    def search(text, image, instruction, k, use_tcot):
        if isinstance(image, UploadRejected):
            gr.Warning(str(image))
            return _empty_outputs(f"Image refused: {image}")
        try:
            result = backend.query(text, image, instruction, k, use_tcot=bool(use_tcot))
        except EmbedrlError as e:
            gr.Warning(str(e))
            return _empty_outputs(str(e))
        query_image, query_card = backend.query_view(result)
        note = f"{len(result.hits)} results"
        if result.moves is not None:
            note += f", top {backend.rerank_k} reranked by {backend.reranker.name} (▲▼: move from the first stage)"
        status = "" if result.hits else _status("No results.", "info")
        return (backend.gallery(result.hits, result.moves), views.latency_html(result.timings, note, next(seq)),
                query_card,
                gr.update(value=query_image, visible=query_image is not None), result.hits, status,
                None, no_detail, "", gr.update(value=[], visible=False))

    def select(hits, evt: gr.SelectData):
        if not hits or evt.index is None or not (0 <= int(evt.index) < len(hits)):
            return None, no_detail, "", gr.update(value=[], visible=False)
        rank = int(evt.index)
        view = backend.hit_view(hits[rank], rank)
        return (gr.update(value=view["image"], visible=view["image"] is not None), view["info_html"],
                view["tcot_html"], gr.update(value=view["frames"], visible=bool(view["frames"])))

    def compare(text, image, instruction, k):
        def refused(message):
            gr.Warning(message)
            return [], [], _status(message), views.latency_html({}, seq=next(seq)), gr.skip(), gr.skip()

        if isinstance(image, UploadRejected):
            return refused(f"Image refused: {image}")
        try:
            plain, reasoned, moves = backend.compare(text, image, instruction, k)
        except EmbedrlError as e:
            return refused(str(e))
        query_image, query_card = backend.query_view(reasoned)
        table = views.compare_table_html(_table_rows(plain.hits), _table_rows(reasoned.hits), moves)
        if not backend.has_reasoner:
            table = _status("This index has no reasoner (and none was given), so both rankings are the "
                            "same; launch with --reasoner to compare.", "info") + table
        timing = {f"plain {k_}": v for k_, v in plain.timings.items()}
        timing.update({f"T-CoT {k_}": v for k_, v in reasoned.timings.items()})
        return (backend.gallery(plain.hits), backend.gallery(reasoned.hits, moves), table,
                views.latency_html(timing, seq=next(seq)), query_card,
                gr.update(value=query_image, visible=query_image is not None))

    def pick_example(k, use_tcot, evt: gr.SelectData):
        rows = examples["image_rows"]
        if evt.index is None or not (0 <= int(evt.index) < len(rows)):
            return (gr.skip(),) + _empty_outputs("No such example.")
        image = backend.row_image(rows[int(evt.index)])
        return (image,) + search("", image, "", k, use_tcot)

    def on_upload(image):
        if isinstance(image, UploadRejected):
            gr.Warning(f"Image refused: {image}")
            return None, _status(f"Image refused: {image}")
        return gr.skip(), ""

    with gr.Blocks(title="embedrl retrieval demo", analytics_enabled=False) as demo:
        gr.HTML(_header_html(info))
        hits_state = gr.State([])
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=320):
                text = gr.Textbox(label="Query text", lines=2, max_lines=6, elem_id="erl-query-text",
                                  placeholder="Describe what you are looking for…")
                image = QueryImage(label="Query image (optional: with text, a composed query)",
                                   sources=["upload", "clipboard"], height=200, elem_id="erl-query-image")
                with gr.Accordion("Options", open=False):
                    instruction = gr.Textbox(label="Instruction", lines=1,
                                             placeholder="e.g. Find an image that matches the description.")
                    k = gr.Slider(1, min(MAX_K, max(1, info["count"])), value=min(DEFAULT_K, info["count"]),
                                  step=1, label="Number of results (k)")
                    use_tcot = gr.Checkbox(value=True, label="Reason before embedding (query T-CoT)",
                                           interactive=backend.has_reasoner)
                with gr.Row():
                    search_btn = gr.Button("Search", variant="primary", elem_id="erl-search")
                    clear_btn = gr.Button("Clear", variant="secondary", elem_id="erl-clear")
                query_card = gr.HTML(views.tcot_html(None, title="Query T-CoT",
                                                     missing="Run a search to see the query's T-CoT."),
                                     elem_id="erl-query-tcot")
                query_boxes = gr.Image(label="Query image with the T-CoT's boxes", interactive=False,
                                       visible=False, height=260, elem_id="erl-query-boxes")
                with gr.Accordion("Examples from the index", open=True):
                    example_texts = gr.Dataset(components=[gr.Textbox(visible=False)],
                                               samples=[[t] for t in examples["texts"]],
                                               label="Text queries", elem_id="erl-example-texts")
                    gr.Markdown("Image queries (click one)")
                    example_gallery = gr.Gallery(value=example_images, show_label=False, columns=3, height="auto",
                                                 allow_preview=False, elem_id="erl-examples", buttons=[])
            with gr.Column(scale=8, min_width=480):
                with gr.Tabs():
                    with gr.Tab("Results", id="results"):
                        status = gr.HTML("", elem_id="erl-status")
                        gr.Markdown("**Results**: click one to see its evidence", elem_classes="erl-sub")
                        gallery = gr.Gallery(show_label=False, columns=6, height=360, allow_preview=False,
                                             elem_id="erl-results", object_fit="contain", buttons=[])
                        latency = gr.HTML("", elem_id="erl-latency")
                        with gr.Row(equal_height=False):
                            detail_image = gr.Image(label="Selected result with its evidence boxes",
                                                    interactive=False, visible=False, height=320,
                                                    elem_id="erl-detail-image")
                            with gr.Column():
                                detail_info = gr.HTML(no_detail, elem_id="erl-detail-info")
                                detail_tcot = gr.HTML("", elem_id="erl-detail-tcot")
                        detail_frames = gr.Gallery(label="Frames (key frames outlined)", columns=8, height=150,
                                                   allow_preview=False, visible=False, elem_id="erl-detail-frames")
                    with gr.Tab("Compare", id="compare"):
                        gr.Markdown("The same query embedded **without** and **with** its T-CoT. Captions on "
                                    "the right mark how each result moved: ▲ up, ▼ down, *new* (not in the "
                                    "plain top-k).")
                        compare_btn = gr.Button("Compare with and without T-CoT", variant="primary",
                                                elem_id="erl-compare-btn")
                        with gr.Row():
                            with gr.Column():
                                gr.Markdown("**Without T-CoT** (the raw query)")
                                plain_gallery = gr.Gallery(show_label=False, columns=3, height=440,
                                                           allow_preview=False, elem_id="erl-plain", buttons=[])
                            with gr.Column():
                                gr.Markdown("**With T-CoT** (query + its evidence)")
                                tcot_gallery = gr.Gallery(show_label=False, columns=3, height=440,
                                                          allow_preview=False, elem_id="erl-tcot", buttons=[])
                        compare_latency = gr.HTML("", elem_id="erl-compare-latency")
                        compare_table = gr.HTML("", elem_id="erl-compare-table")

        search_outputs = [gallery, latency, query_card, query_boxes, hits_state, status, detail_image,
                          detail_info, detail_tcot, detail_frames]
        query_inputs = [text, image, instruction, k, use_tcot]
        search_btn.click(search, query_inputs, search_outputs, api_name="search")
        text.submit(search, query_inputs, search_outputs, api_name=False)
        image.upload(on_upload, [image], [image, status], api_name=False)
        gallery.select(select, [hits_state], [detail_image, detail_info, detail_tcot, detail_frames],
                       api_name=False)
        compare_btn.click(compare, [text, image, instruction, k],
                          [plain_gallery, tcot_gallery, compare_table, compare_latency, query_card, query_boxes],
                          api_name="compare")
        example_texts.click(lambda t, k_, u: (t[0], None) + search(t[0], None, "", k_, u),
                            [example_texts, k, use_tcot], [text, image] + search_outputs, api_name=False)
        example_gallery.select(pick_example, [k, use_tcot], [image] + search_outputs, api_name=False)
        clear_btn.click(lambda: ("", None, ""), None, [text, image, instruction], api_name=False)

    demo.queue(default_concurrency_limit=max(1, int(concurrency)), max_size=64)
    _say_why_inputs_are_refused(demo)
    demo.embedrl_limits = limits
    demo.embedrl_backend = backend
    return demo


def serve(demo, host: str = "127.0.0.1", port: int = 7860, share: bool = False, block: bool = True,
          quiet: bool = False):
    """Launch a `build_app` demo; returns (FastAPI app, local URL, share URL or None)."""
    import gradio as gr

    limits: UploadLimits = getattr(demo, "embedrl_limits", UploadLimits())
    set_pil_limit(limits.max_pixels)
    if not is_loopback(host):
        logger.warning("serving on %s: the demo is reachable from other machines", host)
    if share:
        logger.warning("--share: Gradio will open a public link to this demo")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        return demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
                           max_file_size=limits.max_bytes, show_error=False, allowed_paths=[], ssr_mode=False,
                           mcp_server=False, quiet=quiet, inbrowser=False,
                           theme=gr.themes.Soft(primary_hue="indigo", secondary_hue="slate"),
                           css=views.CSS + STATUS_CSS)
    except OSError as e:  # Gradio's "Cannot find empty port in range: ..."
        raise EmbedrlError(f"cannot serve the demo on {host}:{port}: {str(e).splitlines()[0]} "
                           "(pass --port with a free port)") from e


def check_port(host: str, port: int) -> None:
    """Fail now, before anything loads, when `host:port` cannot be bound (in use, or not an address here)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
            probe.bind((host, port))
    except OSError as e:
        hint = "pass --port with a free port" if e.errno == errno.EADDRINUSE else "check --host"
        raise EmbedrlError(f"cannot serve the demo on {host}:{port}: {e.strerror or e} ({hint})") from None


def _stop_on_sigterm() -> None:
    """SIGTERM (a service manager stopping the demo) ends it like Ctrl-C: the server closes and exit cleanup runs."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def load_backend(index_dir: str | os.PathLike, model: str | None = None, reasoner: str | None = None,
                 tcot_cache: str | None = None, format: str | None = None, rerank: str | None = None,
                 rerank_k: int = 10, rerank_model: str | None = None,
                 rerank_options: list[str] | None = None) -> DemoBackend:
    """Load an index for the demo; its reasoner (the manifest's, or `reasoner`) is loaded now, not at the first query.
    With `rerank` (a reranker name), results are reranked by it over `rerank_model` (default: that reasoner)."""
    from embedrl.index.build import load_manifest
    from embedrl.index.search import Retriever

    manifest = load_manifest(index_dir)
    reasoner = reasoner or (manifest.get("reasoner") or {}).get("id")
    retriever = Retriever.from_dir(index_dir, model=model, reasoner=reasoner, cache=tcot_cache, format=format)
    reranker = None
    if rerank:
        from embedrl.rerank import load_reranker

        if not (rerank_model or retriever.reasoner):
            raise EmbedrlError(f"--rerank {rerank}: this index has no reasoner; give --rerank-model")
        reranker = load_reranker(rerank, rerank_model or retriever.reasoner, rerank_options, cache=retriever.cache.path)
    return DemoBackend(retriever, reranker, rerank_k)


def launch(index_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           model: str | None = None, reasoner: str | None = None, concurrency: int = DEFAULT_CONCURRENCY,
           max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, max_pixels: int = DEFAULT_MAX_PIXELS,
           tcot_cache: str | None = None, block: bool = True, format: str | None = None, **rerank: Any):
    """Load `index_dir` and serve the demo (blocks until interrupted, or SIGTERM, unless `block=False`); `rerank`:
    `load_backend`'s rerank arguments."""
    check_port(host, port)
    backend = load_backend(index_dir, model, reasoner, tcot_cache, format, **rerank)
    private_temp_folder()  # before the app is built: its components take the folder then
    if block:
        _stop_on_sigterm()
    demo = build_app(backend, max_upload_mb=max_upload_mb, max_pixels=max_pixels, concurrency=concurrency)
    return serve(demo, host, port, share, block)
