"""Crash safety: SIGKILL at several points, 1 and 2 ranks; the rerun finishes with exactly-once rows.

The kills come from fail points (``img_search.faults``): the process sends
itself SIGKILL at a named place, so each crash is reproducible. 41 images in
shards of 8 (6 shards), batches of 4.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import accelerate_two_ranks, built_once, run_module

from img_search.store import read_embeddings

POINTS_1_RANK = ["model_build", "commit:2", "step:7", "finalize"]
#: Across ranks, the points where one rank dies while the other goes on: a non-main rank in the
#: middle of a shard, and the main one while it assembles the table. (A build failure and a
#: death right after a commit are the 1-rank points above; a killed rank of 4 is in
#: test_scale_out.)
POINTS_2_RANKS = ["step@1:2", "finalize@0"]


#: The crash tests are about the run machinery: a model without weights keeps them quick.
SIMULATED = ["models=simulated", "models.simulated.batch_seconds=0.05"]


def job_args(data, out, model=SIMULATED) -> list[str]:
    return [
        *model,
        "datasets=inquire",
        f"datasets.inquire.path={data}",
        f"output_path={out}",
        "tasks.batch_size=4",
        "tasks.shard_size=8",
        "tasks.num_workers=1",
        "tasks.cpu=true",
        "tasks.collective_timeout_s=60",
    ]


def run(args, fault=None, launcher=None):
    env_fault = {"IMG_SEARCH_FAULT": fault} if fault else {}
    old = {k: os.environ.get(k) for k in env_fault}
    os.environ.update(env_fault)
    try:
        return run_module("img_search.pipeline.embed", *args, launcher=launcher, timeout=300)
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)


@pytest.fixture(scope="module")
def clean_table(inquire_dir, tmp_path_factory):
    root, _ = inquire_dir

    def build(folder: Path) -> str:  # once per session: the launch tests interleave modules
        out = folder / "clean.parquet"
        result = run(job_args(root, out))
        assert result.returncode == 0, result.stderr
        return str(out)

    return read_embeddings(built_once(tmp_path_factory, "crash-resume-clean", build))


def assert_same_table(got, clean):
    assert len(got) == len(clean) == 41
    assert len(set(got.ids)) == 41
    assert sorted(got.ids) == sorted(clean.ids)
    np.testing.assert_allclose(
        got.vectors[np.argsort(got.ids)], clean.vectors[np.argsort(clean.ids)], atol=1e-5
    )


def crash_then_resume(args, out, fault, launcher=None):
    crashed = run(args, fault=fault, launcher=launcher)
    assert crashed.returncode != 0, f"the fault {fault} did not stop the run:\n{crashed.stderr}"
    assert not out.exists(), "a killed run must not leave a finished-looking output"
    resumed = run(args, launcher=launcher)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "rows: 41" in resumed.stdout
    assert not out.with_name(out.name + ".partial").exists()
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))
    return resumed


@pytest.mark.slow
@pytest.mark.parametrize("fault", POINTS_1_RANK)
def test_one_rank_killed_then_rerun(fault, clean_table, inquire_dir, tmp_path):
    root, _ = inquire_dir
    out = tmp_path / "out.parquet"
    resumed = crash_then_resume(job_args(root, out), out, fault)
    assert_same_table(read_embeddings(out), clean_table)
    if fault == "commit:2":
        assert "resumed: 16 rows" in resumed.stdout  # two shards of 8 were committed
    if fault == "step:7":
        assert "resumed: 24 rows" in resumed.stdout  # 7 batches of 4: shards 0-2 committed


@pytest.mark.slow
def test_a_long_shard_commits_as_it_goes(clean_table, inquire_dir, tmp_path):
    """``tasks.commit_every_s``: a crash in the middle of a shard loses at most that much work."""
    root, _ = inquire_dir
    out = tmp_path / "out.parquet"
    args = [*job_args(root, out), "tasks.commit_every_s=0.001"]
    args[args.index("tasks.shard_size=8")] = "tasks.shard_size=40"
    resumed = crash_then_resume(args, out, "step:5")
    assert "resumed: 20 rows" in resumed.stdout  # 5 batches of 4 inside the first shard of 40
    assert_same_table(read_embeddings(out), clean_table)


@pytest.mark.slow
@pytest.mark.xdist_group("launch")
@pytest.mark.parametrize("fault", POINTS_2_RANKS)
def test_two_ranks_one_killed_then_rerun(fault, clean_table, inquire_dir, tmp_path):
    root, _ = inquire_dir
    out = tmp_path / "out.parquet"
    args = job_args(root, out)
    crash_then_resume(args, out, fault, launcher=accelerate_two_ranks())
    assert_same_table(read_embeddings(out), clean_table)


def test_resume_refuses_another_checkpoint(tiny_checkpoints, inquire_dir, tmp_path):
    root, _ = inquire_dir
    out = tmp_path / "out.parquet"
    clip = ["models=clip", f"models.clip.model_name={tiny_checkpoints['clip']}"]
    assert run(job_args(root, out, clip), fault="commit:1").returncode != 0
    other = job_args(
        root, out, ["models=clip", f"models.clip.model_name={tiny_checkpoints['siglip']}"]
    )
    refused = run(other)
    assert refused.returncode == 2
    assert f"models.clip.model_name: '{tiny_checkpoints['clip']}' then" in refused.stderr
    assert "tasks.overwrite=true" in refused.stderr
    assert not out.exists()
    started_over = run([*other, "tasks.overwrite=true"])
    assert started_over.returncode == 0 and "rows: 41" in started_over.stdout


def test_resume_refuses_changed_preprocessing(tiny_checkpoints, inquire_dir, tmp_path):
    root, _ = inquire_dir
    checkpoint = tmp_path / "clip"
    shutil.copytree(tiny_checkpoints["clip"], checkpoint)
    out = tmp_path / "out.parquet"
    args = job_args(root, out, ["models=clip", f"models.clip.model_name={checkpoint}"])
    assert run(args, fault="commit:1").returncode != 0
    config_file = checkpoint / "processor_config.json"  # transformers v5 keeps it here
    config = json.loads(config_file.read_text())
    config["image_processor"]["image_mean"] = [0.5, 0.5, 0.5]
    config_file.write_text(json.dumps(config))
    refused = run(args)
    assert refused.returncode == 2
    assert "image_preprocessing changed" in refused.stderr
    assert not out.exists()
