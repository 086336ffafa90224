"""``engine=ray``: Ray actors share a job's shards the way launches do, and leave the same table.

The Ray runs start a local Ray instance (``engine.address=local``, 2 CPUs)
with two one-CPU actors, in a fresh interpreter each (the forked runner is
for runs that start no cluster). Without Ray installed only the tests that
need no Ray run.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import built_once, run_module
from test_scale_out import checked, same_rows
from test_scale_out import clip_job as scale_out_job

from img_search.data.base import position_shards
from img_search.pipeline.engines.ray_cluster import MISSING_RAY, check_resources, fitting_workers
from img_search.pipeline.settings import ConfigError, RayEngine
from img_search.store import read_embeddings, read_metadata
from img_search.testing.fixtures import write_photo_folder

EMBED = "img_search.pipeline.embed"
IMAGES, SHARD, BATCH = 300, 32, 16  # BATCH: test_scale_out.clip_job's tasks.batch_size
#: Set in the Ray runs' environment; also what makes ``run_module`` start a fresh interpreter.
RAY_ENV = {"RAY_DISABLE_DOCKER_CPU_WARNING": "1", "RAY_USAGE_STATS_ENABLED": "0"}
#: 2 actors of 1 CPU on a Ray started here (``local`` ignores RAY_ADDRESS).
RAY = [
    "engine=ray",
    "engine.address=local",
    "engine.workers=2",
    "engine.num_cpus_per_worker=1",
]
RAY_MARKS = (
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None,
        reason="Ray is not installed (pip install '.[ray]')",
    ),
    pytest.mark.slow,
    pytest.mark.xdist_group("launch"),  # with the other tests that start launchers: one at a time
)


def on_ray(test):
    for mark in RAY_MARKS:
        test = mark(test)
    return test


def clip_job(checkpoint: Path, folder: Path, out: Path, *extra: str) -> list[str]:
    """``test_scale_out``'s CLIP job in shards of 32 (then 16s), each process choosing its loader workers."""
    return scale_out_job(
        checkpoint, folder, out, f"tasks.shard_size={SHARD}", "tasks.num_workers=-1", *extra
    )


# Built once per session (``built_once``), not per module: the launch tests of several modules
# run interleaved on one worker, and a module fixture would be made again after each switch.
@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    def build(root: Path) -> str:
        write_photo_folder(root / "photos", IMAGES)
        return str(root / "photos")

    return Path(built_once(tmp_path_factory, "ray-photos", build))


@pytest.fixture(scope="module")
def local_table(photos, tiny_checkpoints, tmp_path_factory):
    """The job run by ``engine=local``: what every engine must write."""

    def build(root: Path) -> str:
        out = root / "local.parquet"
        job = clip_job(tiny_checkpoints["clip"], photos, out, "engine=local")
        checked(run_module(EMBED, *job))
        return str(out)

    return read_embeddings(built_once(tmp_path_factory, "ray-local-table", build))


@pytest.fixture(scope="module")
def ray_run(photos, tiny_checkpoints, tmp_path_factory):
    """One ``engine=ray`` run (about 30 s here: Ray's start and two actors' imports), asserted on below."""

    def build(root: Path) -> dict[str, str]:
        out = root / "ray.parquet"
        job = clip_job(tiny_checkpoints["clip"], photos, out, *RAY)
        result = checked(run_module(EMBED, *job, env=RAY_ENV, timeout=600))
        return {"out": str(out), "stdout": result.stdout, "stderr": result.stderr}

    built = built_once(tmp_path_factory, "ray-run", build)
    return Path(built["out"]), SimpleNamespace(stdout=built["stdout"], stderr=built["stderr"])


@on_ray
def test_ray_writes_the_table_engine_local_writes(ray_run, local_table):
    out, result = ray_run
    same_rows(read_embeddings(out), local_table)
    assert result.stdout.count("rows: 300") == 1
    # one summary, from the driver; the actors print neither tables nor bars
    assert result.stderr.count("img_search embedding summary") == 1
    assert result.stderr.count("per process") == 1
    assert "Loading weights" not in result.stderr
    assert not out.with_name(out.name + ".partial").exists()
    # the driver's progress (a log, not a terminal: lines) counts the job's items to the end
    lines = [line for line in result.stderr.splitlines() if " clip × image_folder: " in line]
    layout = position_shards(IMAGES, SHARD, unit=BATCH)
    assert lines[-1].split("clip × image_folder: ")[1].startswith(f"{IMAGES}/{IMAGES} (100%)")
    assert lines[-1].endswith(f"; {len(layout)}/{len(layout)} shards committed, 0 errors")
    # the per-process table names the driver and each worker; no ANSI code anywhere in the log
    table = result.stderr.split("per process")[1]
    assert all(name in table for name in ("ray driver", "ray worker 1 of 2", "ray worker 2 of 2"))
    assert "rank 0" not in table
    assert "\x1b" not in result.stderr + result.stdout


@on_ray
def test_each_shard_once_and_both_actors_registered(ray_run):
    out, _ = ray_run
    metadata = read_metadata(out)
    roles = {p.get("role"): p for p in metadata["run"]["processes"]}
    assert set(roles) == {"ray driver", "ray worker 1 of 2", "ray worker 2 of 2"}
    assert roles["ray driver"]["shards"] == {}  # the driver claims nothing
    shards = [roles[f"ray worker {i} of 2"]["shards"].get("clip/image_folder", []) for i in (1, 2)]
    # How the shards split is timing: the job is one second of work here, and an actor that loads
    # its model after the other has finished rightly finds nothing left (both committing is shown
    # by test_killed_actors_then_a_local_rerun_resume_one_state, where each stops after 2 commits).
    layout = position_shards(IMAGES, SHARD, unit=BATCH)
    assert sorted(shards[0] + shards[1]) == list(range(len(layout)))  # each one once
    # the actors' config is the driver's, with the output made absolute
    assert metadata["config"]["engine"]["kind"] == "ray"
    assert metadata["config"]["output_path"] == str(out)


@on_ray
def test_killed_actors_then_a_local_rerun_resume_one_state(
    photos, tiny_checkpoints, local_table, tmp_path
):
    """Each actor (with a loader worker of its own) dies after its 2nd commit; engine=local finishes."""
    out = tmp_path / "killed.parquet"
    job = clip_job(tiny_checkpoints["clip"], photos, out)
    crashed = run_module(
        EMBED,
        *job,
        *RAY,
        "tasks.num_workers=1",
        env={**RAY_ENV, "IMG_SEARCH_FAULT": "commit:2"},
        timeout=600,
    )
    assert crashed.returncode == 3, crashed.stderr[-5000:]
    died = [line for line in crashed.stderr.splitlines() if " died (" in line]
    assert sorted(line.split(" ERROR ")[1].split(" (host")[0] for line in died) == [
        "ray worker 1 of 2",
        "ray worker 2 of 2",
    ]
    assert "rerun (engine=ray or local) to resume" in died[0]
    assert "not finished yet" in crashed.stdout
    assert not out.exists()
    records = out.with_name(out.name + ".partial") / "records" / "clip" / "image_folder"
    before = {r["shard"]: r for r in (json.loads(p.read_text()) for p in records.glob("*.json"))}
    assert len([r for r in before.values() if r.get("final")]) == 4  # 2 commits by each actor

    rerun = checked(run_module(EMBED, *job, "engine=local"))
    assert f"resumed: {sum(r['rows'] for r in before.values())} rows" in rerun.stdout
    same_rows(read_embeddings(out), local_table)
    redone = read_metadata(out)["run"]["processes"]
    local = [p for p in redone if not p.get("role")]
    assert not set(local[0]["shards"]["clip/image_folder"]) & set(before)


def test_without_ray_engine_ray_is_one_line_before_any_model_library(tmp_path):
    blocked = tmp_path / "blocked"
    (blocked / "ray").mkdir(parents=True)
    (blocked / "ray" / "__init__.py").write_text("raise ImportError('not installed')\n")
    result = run_module(
        EMBED,
        f"datasets.image_folder.path={tmp_path}",
        f"output_path={tmp_path / 'out.parquet'}",
        "engine=ray",
        launcher=[sys.executable, "-X", "importtime"],
        env={"PYTHONPATH": str(blocked)},
    )
    lines = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert result.returncode == 2
    assert len(lines) == 1 and lines[0].endswith(MISSING_RAY), lines
    assert "torch" not in imported
    assert list(tmp_path.iterdir()) == [blocked]  # no output, no job state


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["engine=spark"], "unknown engine option 'spark'; the options are: local, ray"),
        (["engine=ray", "engine.workers=0"], "engine.workers must be positive or null, got 0"),
        (["engine.workers=2"], "unknown key engine.workers; engine has kind"),
    ],
)
def test_engine_mistakes_are_one_line(args, line, tmp_path):
    result = run_module(
        EMBED,
        f"datasets.image_folder.path={tmp_path}",
        "output_path=x.parquet",
        *args,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().endswith(line), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_workers_fit_the_cluster_and_a_local_ray_refuses_what_it_lacks():
    gpus = RayEngine(num_gpus_per_worker=1, num_cpus_per_worker=4)
    assert fitting_workers({"CPU": 64.0, "GPU": 8.0}, gpus) == 8
    assert fitting_workers({"CPU": 16.0, "GPU": 8.0}, gpus) == 4  # 4 CPUs each
    assert fitting_workers({"CPU": 8.0, "GPU": 2.0}, RayEngine(num_gpus_per_worker=0.5)) == 4
    assert fitting_workers({"CPU": 7.0}, RayEngine(num_cpus_per_worker=2)) == 3
    with pytest.raises(ConfigError, match=r"set engine\.workers"):
        fitting_workers({"CPU": 8.0}, gpus)
    with pytest.raises(ConfigError, match="2 ray workers need 2 GPUs and this machine has"):
        check_resources({"CPU": 8.0, "GPU": 1.0}, RayEngine(num_gpus_per_worker=1), 2, local=True)
    check_resources({"CPU": 8.0}, RayEngine(num_gpus_per_worker=1), 2, local=False)  # waits
