"""The reader of a pass: loader workers change where preprocessing runs, never what comes out; each
batch reaches the model carrying its shard task; the receiving thread keeps order and errors."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from one_pair import nine_photos, open_pair

from img_search.pipeline.reader.loader import Reader
from img_search.pipeline.reader.receiver import Receiver
from img_search.pipeline.reader.stream import Batch
from img_search.pipeline.state.claims import PairClaims
from img_search.pipeline.writer import ShardWriter, part_writers
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


def read_pass(tmp_path, photos, workers: int) -> list[Batch]:
    """Every batch a ``Reader`` hands the model in one pass over ``photos``."""
    pair = open_pair(tmp_path, photos, f"tasks.num_workers={workers}")
    shards = pair.source.shards(*pair.layout)
    claims = PairClaims(pair.ledger, pair.encoder.name, pair.source.name, shards)
    try:
        return list(Reader(pair.job, pair.encoder, pair.source, claims, pair.accelerator, workers))
    finally:
        pair.ledger.leave()


def test_each_batch_carries_its_shard_task_and_window_count_for_any_worker_count(tmp_path):
    photos = nine_photos(tmp_path / "photos")
    runs = {w: read_pass(tmp_path / f"workers-{w}", photos, w) for w in (0, 2)}
    for batches in runs.values():
        shards = [b.task.shard.index for b in batches]
        assert shards == sorted(shards) and set(shards) == {0, 1, 2}  # shard by shard, in order
        for batch in batches:
            shard = batch.task.shard
            assert shard.start <= batch.window[0] < batch.window[1] <= shard.stop
            of_shard = [b for b in batches if b.task is batch.task]  # one task object per claim
            assert batch.windows_in_shard == len(of_shard)
            assert batch.claim == shard.index  # one process claims in shard order here
    # the same windows, items and prepared features whatever the number of loader workers
    alone, workers = runs[0], runs[2]
    assert [(b.task.shard, b.window, b.ids) for b in alone] == [
        (b.task.shard, b.window, b.ids) for b in workers
    ]
    assert sum(len(b.ids) for b in alone) == 9
    assert all(torch.equal(a.features, b.features) for a, b in zip(alone, workers, strict=True))


class KillOnce:
    """The reader's preparation, except that preparing ``item_id`` kills the loader worker once."""

    def __init__(self, prepare, item_id: str, flag) -> None:
        self.prepare, self.item_id, self.flag = prepare, item_id, flag

    def __call__(self, item):
        if item.id == self.item_id and not self.flag.exists():
            self.flag.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return self.prepare(item)


def test_a_worker_killed_after_a_commit_costs_no_window_and_every_window_arrives_once(tmp_path):
    """After a death the reader numbers windows as the main process cut them at the claim, while
    the shards already committed have grown records (a worker that cut them again from those
    would skip or repeat windows: a table left unfinished, other items blamed)."""
    pair = open_pair(tmp_path, nine_photos(tmp_path / "photos"), "tasks.num_workers=1")
    shards = pair.source.shards(*pair.layout)
    claims = PairClaims(pair.ledger, pair.encoder.name, pair.source.name, shards)
    reader = Reader(pair.job, pair.encoder, pair.source, claims, pair.accelerator, 1)
    last_of_shard_1 = [item.id for _, item in pair.source.items(shards[1], 4, 8)][-1]
    reader.prepare = KillOnce(reader.prepare, last_of_shard_1, tmp_path / "killed")
    writer = ShardWriter(claims, part_writers(pair.job, pair.encoder, pair.source), 1e9)
    seen = []
    try:
        for batch in reader:  # shard 0 is committed before the worker dies in shard 1
            seen.append((batch.task.shard.index, batch.window, batch.ids))
            writer.add(batch, np.zeros((len(batch.ids), 4), np.float32), None)
    finally:
        writer.close()
        pair.ledger.leave()
    assert (tmp_path / "killed").exists()
    assert [(shard, window) for shard, window, _ in seen] == [
        (0, (0, 2)),
        (0, (2, 4)),
        (1, (4, 6)),
        (1, (6, 8)),
        (2, (8, 9)),
    ]
    ids = [i for _, _, batch_ids in seen for i in batch_ids]
    assert sorted(ids) == sorted(p.name for p in (tmp_path / "photos").iterdir())  # each once
    assert (sorted(writer.stats.shards), writer.stats.rows) == ([0, 1, 2], 9)
    assert all(claims.record(s.index).final for s in shards)
