"""data.base: a listing cut into shards that cover it once, the end of it in shrinking whole batches."""

from __future__ import annotations

import itertools

from img_search.data.base import position_shards


def test_position_shards_cover_the_source_once():
    shards = position_shards(41, 8)
    assert [(s.index, s.start, s.stop) for s in shards][-2:] == [(4, 32, 40), (5, 40, 41)]
    assert sum(len(s) for s in shards) == 41
    assert position_shards(0, 8) == []


def test_the_end_of_a_listing_shrinks_to_one_batch():
    shards = position_shards(4000, 48, unit=8)
    sizes = [len(s) for s in shards]
    assert sum(sizes) == 4000
    assert [(s.start, s.stop) for s in shards] == sorted((s.start, s.stop) for s in shards)
    assert all(a.stop == b.start for a, b in itertools.pairwise(shards))
    assert sizes[-24:] == [32] * 8 + [16] * 8 + [8] * 8
    assert [s.tail for s in shards].index(True) == len(shards) - 24
    assert set(sizes[:-25]) == {48}
    # the same listing, shard size and unit give the same shards; no unit, no tail
    assert position_shards(4000, 48, unit=8) == shards
    assert not any(s.tail for s in position_shards(4000, 48))
    # a tail is at most half of the listing
    assert not any(s.tail for s in position_shards(500, 48, unit=8))
    assert not any(s.tail for s in position_shards(4000, 12, unit=8))
