"""The demo in a real browser: headless Debian chromium driven by Playwright's Python client.

Types a query, submits, waits for the gallery, opens a result, checks the T-CoT panels,
uploads an image and a non-image file, runs the compare view, and saves screenshots under
artifacts/screenshots/ (EMBEDRL_SCREENSHOTS=DIR saves them elsewhere, e.g. docs/screenshots
for the README, and EMBEDRL_DEMO_INDEX / EMBEDRL_DEMO_REASONER point it at another index).
Needs /usr/bin/chromium (`apt-get install chromium`; .ci/run installs it) and `playwright`
(the dev extra); Playwright's own browser downloads are never used.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from demo_helpers import build_small_index, free_port
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                       reason=f"{CHROMIUM} missing: install Debian's chromium (apt-get install chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="playwright missing: pip install -e '.[dev]'"),
]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, request):
    from embedrl.demo.app import build_app, load_backend, serve

    index = os.environ.get("EMBEDRL_DEMO_INDEX")
    reasoner = os.environ.get("EMBEDRL_DEMO_REASONER")
    cache = str(tmp_path_factory.mktemp("cache") / "tcot.sqlite")
    if index is None:
        synth = request.getfixturevalue("synth_tiny_dir")
        clip = request.getfixturevalue("tiny_clip_dir")
        index = build_small_index(synth, clip, tmp_path_factory.mktemp("demo") / "index")
        reasoner = reasoner or str(request.getfixturevalue("tiny_reasoner_dir"))
    backend = load_backend(index, reasoner=reasoner, tcot_cache=os.environ.get("EMBEDRL_TCOT_CACHE", cache))
    demo = build_app(backend, max_upload_mb=2, max_pixels=4_000_000)
    _, url, _ = serve(demo, port=free_port(), block=False, quiet=True)
    yield url
    demo.close()
    backend.retriever.close()


@pytest.fixture(scope="module")
def page(app_url):
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(app_url)
        page.wait_for_selector("#erl-query-text textarea")
        yield page
        browser.close()


@pytest.fixture(scope="module")
def shots():
    out = Path(os.environ.get("EMBEDRL_SCREENSHOTS") or ROOT / "artifacts" / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _results(page):
    return page.locator("#erl-results img")


def _clear(page):
    page.click("#erl-clear")
    page.wait_for_function("!document.querySelector('#erl-query-image img') && "
                           "document.querySelector('#erl-query-text textarea').value === ''")


def _run(page, action, where="#erl-latency"):
    """Do `action` and wait until the app has answered it (the search counter in `where` changed)."""
    marker = f"{where} .erl-latency"
    before = page.get_attribute(marker, "data-seq") if page.locator(marker).count() else None
    action()
    page.wait_for_function(
        "([sel, before]) => { const e = document.querySelector(sel); return e && e.dataset.seq && e.dataset.seq !== before; }",
        arg=[marker, before])
    page.wait_for_timeout(300)  # let the gallery paint


def test_text_query_shows_results_and_tcot(page, shots):
    page.fill("#erl-query-text textarea", "a huge violet box at the centre and a small pink star")
    _run(page, lambda: page.click("#erl-search"))
    assert _results(page).count() >= 5
    assert "latency" in page.inner_text("#erl-latency") and "embedding" in page.inner_text("#erl-latency")
    assert "Query T-CoT" in page.inner_text("#erl-query-tcot")
    assert "Run a search" not in page.inner_text("#erl-query-tcot")
    page.screenshot(path=str(shots / "text_query.png"), full_page=True)


def test_example_image_query_and_result_evidence(page, shots):
    _clear(page)
    _run(page, lambda: page.locator("#erl-examples img").first.click())  # an index image as the query
    page.wait_for_selector("#erl-query-boxes img")
    assert _results(page).count() >= 1
    _results(page).first.click()  # a result's item and its cached T-CoT (or: the index has none)
    page.wait_for_function("document.querySelector('#erl-detail-tcot').innerText.includes('T-CoT')")
    assert "score" in page.inner_text("#erl-detail-info")
    page.wait_for_timeout(800)
    page.screenshot(path=str(shots / "main.png"), full_page=True)


def test_image_upload_query(page, shots, tmp_path):
    path = tmp_path / "query.png"
    img = Image.new("RGB", (224, 224), "white")
    img.paste((200, 30, 30), (60, 60, 160, 160))
    img.save(path)
    _clear(page)
    page.set_input_files("#erl-query-image input[type=file]", str(path))
    page.wait_for_selector("#erl-query-image img")
    _run(page, lambda: page.click("#erl-search"))
    page.wait_for_selector("#erl-query-boxes img")  # the query image, with the T-CoT's boxes drawn
    assert _results(page).count() >= 1
    assert page.inner_text("#erl-status").strip() == ""
    page.screenshot(path=str(shots / "image_query.png"), full_page=True)


def test_compare_view(page, shots):
    _clear(page)
    page.fill("#erl-query-text textarea", "a yellow diamond on the right")
    page.get_by_role("tab", name="Compare").click()
    _run(page, lambda: page.click("#erl-compare-btn"), "#erl-compare-latency")
    page.wait_for_selector("#erl-compare-table table")
    assert page.locator("#erl-plain img").count() == page.locator("#erl-tcot img").count() >= 1
    moves = page.inner_text("#erl-compare-table")
    assert any(m in moves for m in ("▲", "▼", "new", "="))
    assert "Query T-CoT" in page.inner_text("#erl-query-tcot")
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "compare.png"), full_page=True)


def test_non_image_upload_gets_a_message(page, shots, tmp_path):
    page.get_by_role("tab", name="Results").click()
    _clear(page)
    fake = tmp_path / "report.png"
    fake.write_text("this is a text file with an image's name")
    page.set_input_files("#erl-query-image input[type=file]", str(fake))
    page.wait_for_function("document.querySelector('#erl-status').innerText.includes('not an image')")
    assert "Image refused" in page.inner_text("#erl-status")
    page.screenshot(path=str(shots / "rejected_upload.png"), full_page=True)


def test_screenshots_were_written(shots):
    for name in ("main.png", "compare.png"):
        with Image.open(shots / name) as im:
            assert im.width >= 1000


@pytest.fixture(scope="module", autouse=True)
def _no_playwright_downloads():
    # Playwright must use the system chromium; make any attempt to fetch its own browsers fail fast.
    old = os.environ.get("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD")
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    yield
    if old is None:
        os.environ.pop("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", None)
