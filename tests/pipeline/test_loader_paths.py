"""Loader workers change where preprocessing runs, never what comes out; float16 output round-trips."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from img_search.store import read_embeddings, read_metadata


def args(checkpoints, data, out, *extra):
    return [
        "models=siglip2",
        f"models.siglip2.model_name={checkpoints['siglip2']}",
        "datasets=inquire",
        f"datasets.inquire.path={data}",
        f"output_path={out}",
        "tasks.batch_size=6",
        *extra,
    ]


def test_workers_and_in_process_give_identical_rows(
    tiny_checkpoints, inquire_dir, tmp_path, run_embed
):
    root, _ = inquire_dir
    tables = {}
    for workers in (0, 1, 2):
        out = tmp_path / f"w{workers}.parquet"
        run_embed(*args(tiny_checkpoints, root, out, f"tasks.num_workers={workers}"))
        tables[workers] = read_embeddings(out)
    base = tables[0]
    order = np.argsort(base.ids)
    for workers in (1, 2):
        other = tables[workers]
        assert sorted(other.ids) == sorted(base.ids)
        # same batches whatever the worker count, so bit-identical, not merely close
        np.testing.assert_array_equal(other.vectors[np.argsort(other.ids)], base.vectors[order])


def test_float16_output_round_trips(tiny_checkpoints, inquire_dir, tmp_path, run_embed):
    root, _ = inquire_dir
    full, half = tmp_path / "f32.parquet", tmp_path / "f16.parquet"
    run_embed(*args(tiny_checkpoints, root, full, "tasks.num_workers=0"))
    run_embed(
        *args(tiny_checkpoints, root, half, "tasks.num_workers=0", "tasks.output_dtype=float16")
    )
    assert str(pq.read_schema(half).field("embedding").type.value_type) == "halffloat"
    assert read_metadata(half)["output_dtype"] == "float16"
    a, b = read_embeddings(full), read_embeddings(half)
    assert b.vectors.dtype == np.float32  # the reader hands out float32 either way
    assert list(a.ids) == list(b.ids)
    np.testing.assert_array_equal(b.vectors, a.vectors.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(b.vectors, a.vectors, atol=1e-3, rtol=1e-3)
