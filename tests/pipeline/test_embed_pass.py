"""One (model, dataset) pass, reader → model → writer, in this process: every item is a row of a
committed part, the stages are timed, and the progress counts every position of every shard."""

from __future__ import annotations

import pyarrow.parquet as pq
from one_pair import nine_photos, open_pair

from img_search.pipeline.embed_pass import embed_pair
from img_search.pipeline.job_progress import JobProgress
from img_search.pipeline.state.claims import PairClaims


def test_one_pass_over_nine_photos_commits_nine_rows_and_times_each_stage(tmp_path):
    photos = nine_photos(tmp_path / "photos")
    pair = open_pair(tmp_path, photos, "tasks.num_workers=0")
    model, dataset = pair.encoder.name, pair.source.name
    try:
        with JobProgress(pair.ledger, [(model, dataset)], enabled=True) as progress:
            stats = embed_pair(pair.run(progress), pair.encoder, pair.source, pair.layout)
        shards = pair.source.shards(*pair.layout)
        claims = PairClaims(pair.ledger, model, dataset, shards)
        records = [claims.record(s.index) for s in shards]
    finally:
        pair.ledger.leave()

    assert len(shards) == 3 and sorted(stats.shards) == [0, 1, 2]
    assert (stats.rows, stats.errors, stats.commits) == (9, 0, 3)
    assert set(stats.stages) == {"wait", "forward", "write"}
    assert all(r.final for r in records) and sum(r.rows for r in records) == 9
    parts = [pair.job.layout.parts_dir / p.name for r in records for p in r.parts]
    ids = [i for path in parts for i in pq.read_table(path).column("id").to_pylist()]
    assert sorted(ids) == sorted(p.name for p in photos.iterdir())
    vectors = [v for path in parts for v in pq.read_table(path).column("embedding").to_pylist()]
    assert {len(v) for v in vectors} == {64}
    # the progress of each shard came from the writer: all of its positions
    assert progress.pairs[(model, dataset)].mine == {s.index: len(s) for s in shards}
