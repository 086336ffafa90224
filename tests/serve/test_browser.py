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


def images_of(page) -> list[str]:
    """The image of each card of the caption table (a caption id is ``<image>#<n>``)."""
    return [item.split("#", 1)[0] for item in card_ids(page)]


def test_a_search_is_in_the_url_and_a_shared_url_restores_it(page, server):
    page.select_option("#table", "captions")
    page.fill("#query", "a striped cat")
    page.press("#query", "Enter")
    wait_for_results(page, "results for “a striped cat”")
    assert page.url == f"{server}?q=a+striped+cat&table=captions"
    shown = card_ids(page)
    # a caption table shows each image once (the best of its captions), best first
    assert shown[0].startswith("chelsea#") and len(set(images_of(page))) == len(shown) == 6

    opened = page.context.browser.new_page()  # the URL shared: the same search, run on load
    opened.goto(f"{server}?q=a%20striped%20cat")
    wait_for_results(opened, "results for “a striped cat”")
    assert opened.input_value("#query") == "a striped cat" and card_ids(opened) == shown
    assert opened.is_hidden("#filter")  # a flat index takes no filter: no filter box
    assert opened.is_checked("#group") and opened.is_visible("#group-label")
    opened.uncheck("#group")  # every caption on its own: chelsea's captions come together
    opened.press("#query", "Enter")
    wait_for_results(opened, "results for “a striped cat”")
    assert opened.url.endswith("&group=none")
    assert len(set(images_of(opened))) < len(card_ids(opened)) == 6
    opened.go_back()  # the browser's back button: the grouped search again
    opened.wait_for_function("() => document.getElementById('group').checked")
    wait_for_results(opened, "results for “a striped cat”")
    assert card_ids(opened) == shown
    opened.close()


def test_a_filter_on_a_flat_index_names_the_serve_setting(page, server):
    page.goto(f"{server}?q=cat&table=captions&filter=image_id%20%3D%3D%20%22coffee%22")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error") == (
        "422: table captions is served from a flat index, which cannot filter: "
        "serve it from a milvus index (tables.captions.index=milvus)"
    )
    assert page.is_visible("#filter")  # the filter the URL set stays where it can be cleared
    page.fill("#filter", "")
    page.press("#query", "Enter")
    wait_for_results(page, "results for “cat”")
    assert page.is_hidden("#filter") and page.is_hidden("#error")


@pytest.fixture(scope="module")
def milvus_server(demo_tables, tmp_path_factory):
    pytest.importorskip("pymilvus", reason="img_search[milvus] is not installed")
    """The caption table alone, from a Milvus Lite index built on first load (of a copy)."""
    captions = tmp_path_factory.mktemp("browser-milvus") / "captions.parquet"
    shutil.copy(demo_tables["captions"], captions)
    with serve_process(
        "tables.images.table=null",
        f"tables.captions.table={captions}",
        "tables.captions.index=milvus",
        "k=6",
    ) as (url, _):
        yield url


def test_the_filter_box_filters_where_the_index_can(page, milvus_server):
    page.goto(milvus_server)
    page.wait_for_selector("#table option", state="attached")
    page.select_option("#table", "captions")
    assert page.is_visible("#filter")
    page.fill("#query", "a striped cat")
    page.fill("#filter", 'image_id in ["coffee", "rocket"]')
    page.press("#filter", "Enter")
    wait_for_results(page, "results for “a striped cat”")
    assert sorted(images_of(page)) == ["coffee", "rocket"]  # each image once, of those two
    assert "filter=image_id+in+" in page.url
    page.fill("#filter", "")  # cleared: every image again
    page.press("#query", "Enter")
    page.wait_for_function("() => document.querySelectorAll('.card').length === 6")
    assert page.is_visible("#filter") and len(set(images_of(page))) == 6
