"""The page in a real headless Chromium (Debian's, driven by Playwright) against a real server."""

from __future__ import annotations

import os
import shutil

import pytest
from conftest import SAMPLE_PHOTOS
from serve_process import serve_process

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not os.path.exists(CHROMIUM):
    pytest.skip(
        "Debian's chromium is not installed (make test installs it with apt-get where it can)",
        allow_module_level=True,
    )

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def server(demo_tables):
    with serve_process(
        f"tables.images.table={demo_tables['images']}",
        f"tables.captions.table={demo_tables['captions']}",
        "k=6",
    ) as (url, _):
        yield url


@pytest.fixture(scope="module")
def page(server):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server)
        page.wait_for_selector("#table option", state="attached")
        yield page
        browser.close()


def card_ids(page) -> list[str]:
    return page.eval_on_selector_all(".card", "cards => cards.map(c => c.dataset.id)")


def wait_for_results(page, label: str) -> None:
    page.wait_for_function(
        "label => document.getElementById('status').textContent.includes(label)", arg=label
    )


def decoded_widths(page) -> list[int]:
    page.wait_for_function(
        "() => [...document.querySelectorAll('.card img')].every(i => i.complete)"
    )
    return page.eval_on_selector_all(".card img", "imgs => imgs.map(i => i.naturalWidth)")


def test_text_query_upload_drop_and_more_like_this(page, tmp_path):
    # text: the caption table (MiniLM) answers, its images come from the image table
    page.fill("#query", "a cup of coffee with milk foam")
    page.press("#query", "Enter")
    wait_for_results(page, "results for “a cup of coffee with milk foam”")
    assert card_ids(page)[0].startswith("coffee#")
    widths = decoded_widths(page)
    assert len(widths) == 6 and all(w > 0 for w in widths)

    # upload a sample photo with the file picker: that photo comes first
    page.set_input_files("#file", str(SAMPLE_PHOTOS / "rocket.jpg"))
    wait_for_results(page, "results for rocket.jpg")
    assert card_ids(page)[0] == "rocket.jpg"
    assert all(w > 0 for w in decoded_widths(page))

    # click a result: its neighbours, without itself
    page.click(".card[data-id='rocket.jpg']")
    wait_for_results(page, "items like rocket.jpg")
    neighbours = card_ids(page)
    assert neighbours and "rocket.jpg" not in neighbours

    # drag and drop: the coins thumbnail dropped on the page finds the coins photo
    page.evaluate(
        """async () => {
            const blob = await (await fetch('/api/thumbnail/images/coins.jpg')).blob();
            const data = new DataTransfer();
            data.items.add(new File([blob], 'dropped.jpg', {type: 'image/jpeg'}));
            document.getElementById('drop').dispatchEvent(
                new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true}));
        }"""
    )
    wait_for_results(page, "results for dropped.jpg")
    assert card_ids(page)[0] == "coins.jpg"
    page.screenshot(path=str(tmp_path / "search-page.png"), full_page=True)
    assert (tmp_path / "search-page.png").stat().st_size > 10_000


def test_api_errors_are_shown_not_a_blank_page(page):
    page.select_option("#table", "images")  # EfficientNet has no text side
    page.fill("#query", "a cat")
    page.press("#query", "Enter")
    page.wait_for_selector("#error:not([hidden])")
    assert "400: table images (efficientnet_lite0) has no text model" in page.inner_text("#error")
    assert card_ids(page) == []
    page.select_option("#table", "captions")
    page.press("#query", "Enter")
    wait_for_results(page, "results for “a cat”")
    assert page.is_hidden("#error")
