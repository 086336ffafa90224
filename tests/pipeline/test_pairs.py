"""This process's share of the pairs (``pipeline/pairs.py``): what every process of a job agrees on
before it embeds, through the job state, so a rerun embeds what the job started with or is refused."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
from one_pair import nine_photos, open_pair

from img_search.pipeline.pairs import agree_on_listings, agree_on_model
from img_search.pipeline.state.output import JobMismatch


def with_shard_size(job, size):
    return replace(job, settings=replace(job.settings, shard_size=size))


def test_listings_are_agreed_once_and_a_later_shard_size_is_not_taken(tmp_path, caplog):
    pair = open_pair(tmp_path, nine_photos(tmp_path / "photos"), "tasks.shard_size=4")
    name = pair.source.name
    try:
        first = agree_on_listings(pair.job, pair.ledger, [name])
        agreed = pair.ledger.agreed(f"listing-{name}")
        with caplog.at_level(logging.WARNING, logger="img_search.pipeline.pairs"):
            again = agree_on_listings(with_shard_size(pair.job, 2), pair.ledger, [name])
    finally:
        pair.ledger.leave()

    # shards of 4, and the listing's tail shrinks to whole batches of the first run's batch size (2)
    assert first == {name: (4, 2)}
    assert (agreed["items"], agreed["shard_size"], agreed["tail_unit"]) == (9, 4, 2)
    assert agreed["shards"] == len(pair.source.shards(4, 2))
    assert again == first  # the job keeps the layout it started with
    assert f"datasets.{name} keeps the shard size it started with (4), not tasks.shard_size=2" in (
        caplog.text
    )


def test_a_listing_that_changed_since_the_job_started_is_refused_with_both_counts(tmp_path):
    photos = nine_photos(tmp_path / "photos")
    pair = open_pair(tmp_path, photos, "tasks.shard_size=4")
    name = pair.source.name
    try:
        agree_on_listings(pair.job, pair.ledger, [name])
        (photos / "coffee-again.jpg").unlink()  # one item fewer
        pair.source.build()
        with pytest.raises(JobMismatch) as refused:
            agree_on_listings(pair.job, pair.ledger, [name])
    finally:
        pair.ledger.leave()
    assert str(refused.value).startswith(
        f"datasets.{name}: the items differ from those this output was started with "
        "(9 items then, 8 now"
    )
    assert "tasks.overwrite=true" in str(refused.value)


def test_a_model_that_preprocesses_otherwise_than_the_jobs_first_is_refused_naming_what_changed(
    tmp_path, monkeypatch
):
    pair = open_pair(tmp_path, nine_photos(tmp_path / "photos"))
    try:
        agree_on_model(pair.ledger, pair.encoder)
        agree_on_model(pair.ledger, pair.encoder)  # the same model agrees with itself
        identity = dict(pair.encoder.identity())
        changed = {**identity, "image_size": 999, "fingerprint": "another"}
        monkeypatch.setattr(pair.encoder, "identity", lambda: changed)
        with pytest.raises(JobMismatch) as refused:
            agree_on_model(pair.ledger, pair.encoder)
    finally:
        pair.ledger.leave()
    assert str(refused.value) == (
        f"model {pair.encoder.name} differs from the one that started this output "
        "(image_size changed); pass tasks.overwrite=true to start over"
    )
