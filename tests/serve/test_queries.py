"""Uploads against a real server process: memory bombs get a JSON refusal, decoded pixels are not kept.

The server runs with its address space capped at 5.4 GiB above its libraries'
(``RLIMIT_AS``), which a normal request fits in: an image whose resize would need tens of GB must be
refused before the resize, not kill the process.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import SAMPLE_PHOTOS
from PIL import Image
from serve_process import serve_process

from img_search.testing.address_space import address_space_for

WORK_SPACE = int(5.4 * 2**30)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


@pytest.fixture(scope="module")
def server(demo_tables):
    with serve_process(
        f"tables.images.table={demo_tables['images']}",
        "tables.captions.table=null",
        address_space=address_space_for(WORK_SPACE),
    ) as (url, process):
        yield url, process


def upload(url: str, data: bytes, name: str) -> httpx.Response:
    files = {"file": (name, data, "image/png")}
    return httpx.post(f"{url}api/search/image", files=files, data={"k": "3"}, timeout=300)


def test_a_strip_whose_resize_needs_tens_of_gb_is_refused(server):
    url, process = server
    strip = png(Image.new("L", (2_500_000, 16)))  # 40 MP: at the pixel limit, ~117 kB
    assert len(strip) < 200_000
    response = upload(url, strip, "strip.png")
    assert response.status_code in (413, 422), response.text
    assert list(response.json()) == ["error"]
    assert "pixels" in response.json()["error"]  # refused by the limit, not by running out
    assert process.poll() is None
    photo = (SAMPLE_PHOTOS / "coffee.jpg").read_bytes()
    assert upload(url, photo, "coffee.jpg").json()["results"][0]["id"] == "coffee.jpg"


def test_parallel_large_uploads_do_not_keep_their_memory(server):
    url, process = server
    photo = (SAMPLE_PHOTOS / "rocket.jpg").read_bytes()
    assert upload(url, photo, "rocket.jpg").status_code == 200  # warm: model and threads
    large = png(Image.new("L", (6000, 5000), 100))  # 30 MP (120 MB decoded as RGB), 40 kB
    before = rss_bytes(process.pid)
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda i: upload(url, large, f"{i}.png"), range(20)))
    after = rss_bytes(process.pid)
    assert [r.status_code for r in responses] == [200] * 20, responses[0].text
    print(f"RSS {before / 2**20:.0f} → {after / 2**20:.0f} MiB")
    assert after - before < 1.5 * 2**30, f"RSS {before / 2**20:.0f} → {after / 2**20:.0f} MiB"
