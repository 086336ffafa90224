"""Loader workers change where preprocessing runs, never what comes out; float16 output round-trips."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow.parquet as pq
import pytest

from img_search.pipeline.reader.receiver import Receiver
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


def test_workers_give_identical_rows_and_float16_round_trips(
    tiny_checkpoints, inquire_dir, tmp_path, run_embed
):
    root, _ = inquire_dir
    base_out, workers_out, half_out = (tmp_path / f"{n}.parquet" for n in ("w0", "w2", "f16"))
    run_embed(*args(tiny_checkpoints, root, base_out, "tasks.num_workers=0"))
    run_embed(*args(tiny_checkpoints, root, workers_out, "tasks.num_workers=2"))
    run_embed(
        *args(tiny_checkpoints, root, half_out, "tasks.num_workers=0", "tasks.output_dtype=float16")
    )
    base, other = read_embeddings(base_out), read_embeddings(workers_out)
    assert sorted(other.ids) == sorted(base.ids)
    # same batches whatever the worker count (window j of a shard goes to worker j % 2), so
    # bit-identical, not merely close
    np.testing.assert_array_equal(
        other.vectors[np.argsort(other.ids)], base.vectors[np.argsort(base.ids)]
    )

    assert str(pq.read_schema(half_out).field("embedding").type.value_type) == "halffloat"
    assert read_metadata(half_out)["output_dtype"] == "float16"
    half = read_embeddings(half_out)
    assert half.vectors.dtype == np.float32  # the reader hands out float32 either way
    assert list(base.ids) == list(half.ids)
    np.testing.assert_array_equal(half.vectors, base.vectors.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(half.vectors, base.vectors, atol=1e-3, rtol=1e-3)


def test_the_receiver_keeps_order_raises_in_the_caller_and_stops_early():
    def batches(fail_at=None):
        for i in range(20):
            if i == fail_at:
                raise RuntimeError(f"worker died at {i}")
            yield i

    receiver = Receiver(batches(), depth=2)
    got = []
    with pytest.raises(StopIteration):
        while True:
            got.append(receiver.next())
    assert got == list(range(20))

    receiver = Receiver(batches(fail_at=5), depth=2)
    assert [receiver.next() for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="worker died at 5"):
        receiver.next()

    # a caller that stops early (an error of its own) leaves no thread behind
    receiver = Receiver(batches(), depth=2)
    assert receiver.next() == 0
    receiver.stop()
    assert not any(t.name == "img_search-receiver" for t in threading.enumerate())
