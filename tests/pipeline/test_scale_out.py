"""Shards from a laptop to a cluster: many ranks, two launches on one output, a killed rank.

Every test runs real processes (torchrun with gloo ranks on CPU, plain
``python -m``) over real files, and checks the finished table row by row.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import OFFLINE, REPO, run_module, venv_bin

from img_search.data.base import position_shards
from img_search.store import EmbeddingMatrix, read_embeddings, read_metadata
from img_search.testing.fixtures import write_photo_folder

#: Launchers listen on ports: the tests that start them run one at a time (pytest -n 2).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("launch")]


def torchrun(ranks: int) -> list[str]:
    return [venv_bin("torchrun"), "--standalone", "--nproc_per_node", str(ranks)]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[int, tuple[Path, list[str]]]:
    """Folders of 2,003 and 503 small JPEGs (the 503 are the first of the 2,003)."""
    root = tmp_path_factory.mktemp("photos")
    return {n: (root / str(n), write_photo_folder(root / str(n), n)) for n in (2003, 503)}


def clip_job(checkpoint: Path, folder: Path, out: Path, *extra: str) -> list[str]:
    return [
        "models=clip",
        f"models.clip.model_name={checkpoint}",
        "datasets=image_folder",
        f"datasets.image_folder.path={folder}",
        f"output_path={out}",
        "tasks.batch_size=16",
        "tasks.num_workers=0",
        "tasks.shard_size=97",
        "tasks.cpu=true",
        "tasks.collective_timeout_s=300",
        *extra,
    ]


def checked(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def same_rows(got, reference) -> None:
    assert len(set(got.ids)) == len(got.ids) == len(reference.ids)
    assert sorted(got.ids) == sorted(reference.ids)
    np.testing.assert_allclose(
        got.vectors[np.argsort(got.ids)], reference.vectors[np.argsort(reference.ids)], atol=1e-5
    )


def shards_by_process(metadata: dict, pair: str) -> dict[str, list[int]]:
    """Which shards each process finished, from the processes' own counts."""
    found = {}
    for process in metadata["run"]["processes"]:
        for done in process.get("passes", []):
            if f"{done['model']}/{done['dataset']}" == pair:
                found[process["id"]] = done["shards"]
    return found


def one_process(checkpoint: Path, folder: Path, ids: list[str]) -> EmbeddingMatrix:
    """The same model over the same images in this one process, batch by batch."""
    from img_search.data import open_image
    from img_search.embedding import get_encoder

    encoder = get_encoder({"model": "clip", "model_name": str(checkpoint)}, name="clip").load()
    transform = encoder.image_transform()
    vectors = [
        encoder.encode_images(
            transform.collate([transform(open_image(str(folder / i))) for i in ids[s : s + 16]])
        ).numpy()
        for s in range(0, len(ids), 16)
    ]
    return EmbeddingMatrix(np.array(ids, dtype=object), np.concatenate(vectors))


def test_eight_ranks_each_item_once_and_coordination_does_not_grow(
    photos, tiny_checkpoints, tmp_path
):
    folder, ids = photos[2003]
    reference = one_process(tiny_checkpoints["clip"], folder, ids)

    calls = {}
    for n in (2003, 503):
        out = tmp_path / f"eight-{n}.parquet"
        job = clip_job(tiny_checkpoints["clip"], photos[n][0], out)
        checked(run_module("img_search.pipeline.embed", *job, launcher=torchrun(8), timeout=900))
        metadata = read_metadata(out)
        processes = metadata["run"]["processes"]
        assert len(processes) == metadata["num_processes"] == 8
        calls[n] = sorted(p["collectives"] for p in processes)
        shards = shards_by_process(metadata, "clip/image_folder")
        committed = sorted(s for done in shards.values() for s in done)
        # at 2,003 items: 12 full shards, then 24 shrinking ones
        layout = position_shards(n, 97, unit=16)
        assert committed == list(range(len(layout)))  # every shard once
        assert any(s.tail for s in layout) == (n == 2003)
        if n == 2003:
            same_rows(read_embeddings(out), reference)
            assert sum(1 for done in shards.values() if done) >= 6  # the work was spread
    assert calls[2003] == calls[503]  # per-rank collective calls do not grow with the items
    assert max(calls[2003]) <= 10


def simulated_job(folder: Path, out: Path, batch_seconds: float, *extra: str) -> list[str]:
    return [
        "models=simulated",
        f"models.simulated.batch_seconds={batch_seconds}",
        "datasets=image_folder",
        f"datasets.image_folder.path={folder}",
        f"output_path={out}",
        "tasks.batch_size=4",
        "tasks.num_workers=0",
        "tasks.shard_size=20",
        "tasks.cpu=true",
        "tasks.collective_timeout_s=300",
        *extra,
    ]


def start(args: list[str], launcher: list[str] | None = None, log: Path | None = None):
    import os

    command = [*(launcher or [sys.executable]), "-m", "img_search.pipeline.embed", *args]
    env = {**os.environ, **OFFLINE, "PYTHONUNBUFFERED": "1"}
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def simulated_reference(photos, tmp_path_factory):
    """The 503 photos embedded by one process with no simulated device time."""
    out = tmp_path_factory.mktemp("simulated") / "reference.parquet"
    checked(run_module("img_search.pipeline.embed", *simulated_job(photos[503][0], out, 0.0)))
    return read_embeddings(out)


def test_two_launches_share_one_output(photos, simulated_reference, tmp_path):
    """2 torchrun ranks and 1 plain process, started together on one output: one table, no shard twice."""
    folder, _ = photos[503]
    out = tmp_path / "shared.parquet"
    job = simulated_job(folder, out, 0.15)
    ranks = start(job, torchrun(2), tmp_path / "ranks.log")
    single = start(job, None, tmp_path / "single.log")
    assert ranks.wait(timeout=600) == 0, (tmp_path / "ranks.log").read_text()[-4000:]
    assert single.wait(timeout=600) == 0, (tmp_path / "single.log").read_text()[-4000:]
    same_rows(read_embeddings(out), simulated_reference)
    metadata = read_metadata(out)
    shards = shards_by_process(metadata, "simulated/image_folder")
    committed = sorted(s for done in shards.values() for s in done)
    # 503 items: 13 shards of 20 and one of 19, then 8 each of 16, 8 and 4 items
    layout = position_shards(503, 20, unit=4)
    assert [len(s) for s in layout][-25:] == [19, *[16] * 8, *[8] * 8, *[4] * 8]
    assert committed == list(range(len(layout)))  # each committed exactly once
    launches = {p["launch"] for p in metadata["run"]["processes"] if shards.get(p["id"])}
    assert len(launches) == 2  # both launches did part of the work
    assert not out.with_name(out.name + ".partial").exists()


def final_records(state: Path) -> dict[int, dict]:
    records = {}
    for path in (state / "records" / "simulated" / "image_folder").glob("*.json"):
        record = json.loads(path.read_text())
        if record.get("final"):
            records[record["shard"]] = record
    return records


def test_a_killed_rank_then_a_rerun_embeds_no_committed_shard_again(
    photos, simulated_reference, tmp_path
):
    folder, _ = photos[503]
    out = tmp_path / "killed.parquet"
    job = simulated_job(folder, out, 0.02)
    crashed = run_module(
        "img_search.pipeline.embed",
        *job,
        launcher=torchrun(4),
        timeout=600,
        env={"IMG_SEARCH_FAULT": "commit@2:3"},
    )
    assert crashed.returncode != 0
    assert not out.exists()
    before = final_records(out.with_name(out.name + ".partial"))
    committed_rows = sum(r["rows"] for r in before.values())
    assert len(before) >= 3

    rerun = checked(
        run_module("img_search.pipeline.embed", *job, launcher=torchrun(4), timeout=600)
    )
    resumed = int(rerun.stdout.split("resumed: ")[1].split()[0])
    assert resumed >= committed_rows
    same_rows(read_embeddings(out), simulated_reference)
    metadata = read_metadata(out)
    processes = metadata["run"]["processes"]
    assert len(processes) == 8 and len({p["launch"] for p in processes}) == 2  # killed ones too
    shards = shards_by_process(metadata, "simulated/image_folder")  # finished passes: the rerun's
    redone = {s for done in shards.values() for s in done} & set(before)
    assert not redone, f"committed shards embedded again: {sorted(redone)}"
