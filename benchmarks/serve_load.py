"""Load and latency test of the search server, on loopback only; it stops by itself.

    python benchmarks/serve_load.py                    # 1000 mixed requests, 4 clients, + 100k-row latency
    python benchmarks/serve_load.py --requests 3000 --clients 8

It embeds the sample photos and captions (as ``make demo`` does) unless
``--demo`` points at existing tables, writes a 100,000-row caption table of
random MiniLM-sized vectors beside them, starts ``python -m img_search.serve``
on a free 127.0.0.1 port, then:

1. latency: text queries over the 100k rows with exact search; p50/p99 of the
   server's search time and of the round trip without the text encoder's
   forward pass (round trip − the encode time the server reports);
2. load: a fixed number of mixed requests (text, image upload, more like
   this, thumbnails, table list) from several client threads; p50/p99 per
   kind and the error count. Exits 1 if any request failed.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import io
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO / "img_search" / "samples" / "photos"
CAPTIONS = REPO / "img_search" / "samples" / "captions.jsonl"
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
QUERIES = [
    "a cat",
    "galaxies in deep space",
    "a rocket launch",
    "old coins",
    "a cup of coffee",
    "an astronaut with a flag",
    "a man with a camera",
    "the retina of an eye",
]


def demo_tables(folder: Path) -> tuple[Path, Path]:
    images, captions = folder / "images.parquet", folder / "captions.parquet"
    for module, args in (
        (
            "img_search.pipeline.embed",
            [
                "models=efficientnet_lite0",
                "datasets=image_folder",
                f"datasets.image_folder.path={PHOTOS}",
                f"output_path={images}",
            ],
        ),
        (
            "img_search.pipeline.embed_text",
            [
                "models=minilm",
                "text_dataset=captions_jsonl",
                f"text_dataset.path={CAPTIONS}",
                "text_dataset.name=sample_captions",
                f"output_path={captions}",
            ],
        ),
    ):
        subprocess.run(
            [sys.executable, "-m", module, *args], check=True, env=ENV, capture_output=True
        )
    return images, captions


def big_caption_table(captions: Path, out: Path, rows: int) -> Path:
    """``rows`` captions with random unit vectors, under the MiniLM metadata of the demo table."""
    if out.exists() and pq.read_metadata(out).num_rows == rows:
        return out
    schema = pq.read_schema(captions)
    rng = np.random.default_rng(0)
    dim = schema.field("embedding").type.list_size
    vectors = rng.standard_normal((rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"synthetic{i:06d}#0" for i in range(rows)]
    columns = {
        "id": pa.array(ids),
        "index": pa.array(np.arange(rows, dtype=np.int64)),
        "image": pa.array([f"synthetic{i:06d}.jpg" for i in range(rows)]),
        "image_id": pa.array([f"synthetic{i:06d}" for i in range(rows)]),
        "caption": pa.array([f"synthetic caption number {i}" for i in range(rows)]),
        "model_name": pa.array(["minilm"] * rows),
        "dataset_name": pa.array(["sample_captions"] * rows),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
    }
    table = pa.table({f.name: columns[f.name] for f in schema}, schema=schema)
    pq.write_table(table, out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tables: dict[str, Path], port: int) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "img_search.serve",
        f"port={port}",
        "logging=quiet",
    ]
    command += [f"++tables.{name}.table={path}" for name, path in tables.items()]
    process = subprocess.Popen(
        command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise SystemExit(f"the server exited:\n{process.stdout.read()}")
        time.sleep(0.5)
    process.kill()
    raise SystemExit("the server did not start within 300 s")


def percentiles(values: list[float]) -> str:
    a = np.asarray(values)
    return f"p50 {np.percentile(a, 50):7.2f} ms  p99 {np.percentile(a, 99):7.2f} ms  (n={len(a)})"


def latency(base: str, count: int) -> None:
    search_ms, without_encoder_ms = [], []
    with httpx.Client(base_url=base, timeout=30) as client:
        for i in range(count):
            started = time.perf_counter()
            response = client.get(
                "/api/search/text", params={"q": QUERIES[i % len(QUERIES)], "table": "big", "k": 10}
            )
            elapsed = 1000 * (time.perf_counter() - started)
            response.raise_for_status()
            took = response.json()["took_ms"]
            search_ms.append(took["search"])
            without_encoder_ms.append(elapsed - took["encode"])
    print(f"100k exact search, server search time:         {percentiles(search_ms)}")
    print(f"100k round trip without the encoder's forward: {percentiles(without_encoder_ms)}")


def upload_bytes() -> bytes:
    image = Image.open(PHOTOS / "rocket.jpg").convert("RGB")
    image.thumbnail((320, 320))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def load(base: str, requests: int, clients: int) -> int:
    photo = upload_bytes()
    ids = [p.name for p in sorted(PHOTOS.glob("*.jpg"))]
    rng = random.Random(0)
    kinds = ["text"] * 4 + ["similar"] * 2 + ["thumbnail"] * 2 + ["image", "tables"]
    plan = [rng.choice(kinds) for _ in range(requests)]
    local = __import__("threading").local()

    def one(kind: str) -> tuple[str, float, int]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base, timeout=30)
        client = local.client
        started = time.perf_counter()
        if kind == "text":
            response = client.get(
                "/api/search/text", params={"q": rng.choice(QUERIES), "table": "captions"}
            )
        elif kind == "similar":
            response = client.get("/api/similar", params={"table": "images", "id": rng.choice(ids)})
        elif kind == "thumbnail":
            response = client.get(f"/api/thumbnail/images/{rng.choice(ids)}")
        elif kind == "image":
            response = client.post(
                "/api/search/image",
                files={"file": ("q.jpg", photo, "image/jpeg")},
                data={"table": "images"},
            )
        else:
            response = client.get("/api/tables")
        return kind, 1000 * (time.perf_counter() - started), response.status_code

    started = time.perf_counter()
    with futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, plan))
    seconds = time.perf_counter() - started
    errors = sum(1 for _, _, status in results if status >= 400)
    for kind in sorted(set(kinds)):
        print(f"{kind:>10}: {percentiles([ms for k, ms, _ in results if k == kind])}")
    print(f"{'all':>10}: {percentiles([ms for _, ms, _ in results])}")
    print(
        f"{requests} requests from {clients} clients in {seconds:.1f} s ({requests / seconds:.0f} req/s), errors: {errors}"
    )
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument(
        "--demo", type=Path, default=None, help="folder with images.parquet and captions.parquet"
    )
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "img_search_serve_bench"
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.demo:
        images, captions = args.demo / "images.parquet", args.demo / "captions.parquet"
    else:
        images, captions = demo_tables(args.work)
    big = big_caption_table(captions, args.work / f"captions-{args.rows}.parquet", args.rows)
    port = free_port()
    server = start_server({"images": images, "captions": captions, "big": big}, port)
    base = f"http://127.0.0.1:{port}"
    try:
        print(
            json.dumps(httpx.get(f"{base}/api/tables").json()["tables"], indent=None)[:300] + " …"
        )
        latency(base, args.latency_queries)
        errors = load(base, args.requests, args.clients)
    finally:
        server.terminate()
        server.wait(timeout=30)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
