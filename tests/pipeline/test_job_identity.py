"""What a table is made of is compared on resume and against a finished table: same, added, or refused."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.compute as pc
import pytest
from conftest import OFFLINE, REPO, SAMPLE_PHOTOS

from img_search.api.jobs import compose
from img_search.store import read_metadata, read_table
from img_search.testing.fixtures import write_flickr30k_like, write_photo_folder
from img_search.testing.jina_stand_in import StandInJina


def words(log: str) -> str:
    """A log with rich's line wrapping undone."""
    return " ".join(log.split())


def stored_rows(path, model: str) -> dict[str, bytes]:
    """id → the raw bytes of the stored vector: "unchanged" means to the bit."""
    table = read_table(path, columns=["id", "embedding"], filters=pc.field("model_name") == model)
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    return {
        i: v.astype(np.float32).tobytes()
        for i, v in zip(table.column("id").to_pylist(), vectors, strict=True)
    }


def simulated(key: str, seed: int = 0) -> list[str]:
    """Another model key of the simulated model (its seed makes other vectors)."""
    return [
        f"+models.{key}.model=simulated",
        f"+models.{key}.seed={seed}",
        f"+models.{key}.batch_seconds=0",
    ]


@pytest.mark.parametrize("form", ["file", "folder"])
def test_adding_a_model_to_a_finished_table_embeds_only_the_new_pairs(
    form, inquire_dir, tmp_path, run_embed
):
    """One file is rewritten with the new rows; a folder only gets new parts."""
    root, expected_ids = inquire_dir
    out = tmp_path / ("table.parquet" if form == "file" else "table")
    common = ["datasets=inquire", f"datasets.inquire.path={root}", f"output_path={out}"]
    a, b = "simulated", "other"
    first = ["models=simulated", "models.simulated.batch_seconds=0", "tasks.shard_size=8"]
    both = [*first, *simulated("other", seed=1)]
    changed = [*first, "models.simulated.seed=5"]
    difference = "models.simulated.seed: 0 then, 5 now"
    run_embed(*first, *common)
    before = stored_rows(out, a)
    parts_before = {p.name: p.stat().st_ino for p in out.glob("part-*")}
    added = run_embed(*both, *common)
    assert f"appending {b} × inquire" in words(added.stderr)
    assert "rows: 82" in added.stdout
    summary = added.stderr.split("embedding summary")[1]
    assert (
        f"│ {b} " in summary and f"│ {a} " not in summary
    )  # the first model is not embedded again
    assert stored_rows(out, a) == before  # the first model's rows, bit for bit
    assert sorted(stored_rows(out, b)) == sorted(expected_ids)
    metadata = read_metadata(out)
    assert [(p["model"], p["dataset"], p["rows"]) for p in metadata["pairs"]] == [
        (a, "inquire", 41),
        (b, "inquire", 41),
    ]
    assert set(metadata["models"]) == {a, b} and metadata["rows"] == 82
    assert len(metadata["earlier_runs"]) == 1
    after = {p.name: p.stat().st_ino for p in out.glob("part-*")}
    assert {n: i for n, i in after.items() if n in parts_before} == parts_before  # not copied
    again = run_embed(*both, *common)
    assert "already complete" in words(again.stderr) and "rows: 82" in again.stdout
    refused = run_embed(*changed, *common, expect_ok=False)
    assert refused.returncode == 2
    assert difference in words(refused.stderr)


def test_a_changed_ids_file_is_refused_on_resume(tmp_path, run_embed):
    stems = write_flickr30k_like(tmp_path / "flickr", n_images=12)
    first, other = tmp_path / "first.txt", tmp_path / "other.txt"
    first.write_text("\n".join(stems[:8]) + "\n")
    other.write_text("\n".join(stems[4:]) + "\n")
    out = tmp_path / "f30k.parquet"

    def args(ids_file):
        return [
            "models=simulated",
            "models.simulated.batch_seconds=0",
            "datasets=flickr30k",
            f"datasets.flickr30k.path={tmp_path / 'flickr'}",
            f"datasets.flickr30k.ids_file={ids_file}",
            f"output_path={out}",
            "tasks.batch_size=2",
            "tasks.shard_size=4",
        ]

    killed = run_embed(*args(first), expect_ok=False, env={"IMG_SEARCH_FAULT": "commit:1"})
    assert killed.returncode != 0 and not out.exists()
    refused = run_embed(*args(other), expect_ok=False)
    assert refused.returncode == 2
    assert f"datasets.flickr30k.ids_file: '{first}' then, '{other}' now" in words(refused.stderr)
    assert "Traceback" not in refused.stderr
    first.write_text("\n".join(stems[:7]) + "\n")  # same file, other content
    refused = run_embed(*args(first), expect_ok=False)
    assert refused.returncode == 2
    assert "datasets.flickr30k: the items differ" in words(
        refused.stderr
    ) and "8 items then, 7 now" in words(refused.stderr)
    first.write_text("\n".join(stems[:8]) + "\n")
    resumed = run_embed(*args(first))
    assert "resumed: 4 rows" in resumed.stdout and "rows: 8" in resumed.stdout


def test_a_changed_jina_task_is_refused_against_the_finished_table(tmp_path, monkeypatch):
    """Jina v4's ``task`` picks its adapter: another task is another job (stand-in model)."""
    import transformers

    from img_search.pipeline.launch import run_job
    from img_search.pipeline.modalities import IMAGES, image_dataset_specs
    from img_search.pipeline.plan import plan_job
    from img_search.pipeline.state.output import JobMismatch

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", lambda *a, **k: StandInJina())
    out = tmp_path / "jina.parquet"

    def job(*extra):
        cfg = compose(
            "embed_config",
            [
                "models=jina_v4",
                "trust_remote_code=true",
                "datasets=image_folder",
                f"datasets.image_folder.path={SAMPLE_PHOTOS}",
                f"output_path={out}",
                "tasks.num_workers=0",
                *extra,
            ],
        )
        return plan_job(cfg, IMAGES, image_dataset_specs(cfg))

    assert run_job(job()) == 0
    assert run_job(job("models.jina_v4.device_map=auto")) == 0  # where it runs is not what it is
    with pytest.raises(
        JobMismatch, match=re.escape("models.jina_v4.task: 'retrieval' then, 'text-matching' now")
    ):
        run_job(job("models.jina_v4.task=text-matching"))
    with pytest.raises(
        JobMismatch, match=re.escape("models.jina_v4.truncate_dim: None then, 128 now")
    ):
        run_job(job("models.jina_v4.truncate_dim=128"))
    assert read_metadata(out)["job"]["models"]["jina_v4"]["task"] == "retrieval"


def test_an_unfinished_job_refuses_fewer_pairs_and_takes_more(inquire_dir, tmp_path, run_embed):
    root, _ = inquire_dir
    out = tmp_path / "t.parquet"
    common = [
        "models=simulated",
        "models.simulated.batch_seconds=0",
        "datasets=inquire",
        f"datasets.inquire.path={root}",
        f"output_path={out}",
        "tasks.shard_size=8",
    ]
    killed = run_embed(
        *common, *simulated("second", 1), expect_ok=False, env={"IMG_SEARCH_FAULT": "commit:2"}
    )
    assert killed.returncode != 0
    fewer = run_embed(*common, expect_ok=False)
    assert fewer.returncode == 2 and "also embeds second × inquire" in words(fewer.stderr)
    more = run_embed(*common, *simulated("second", 1), *simulated("third", 2))
    assert "added to the unfinished job: third × inquire" in words(more.stderr)
    assert "resumed: 16 rows" in more.stdout and "rows: 123" in more.stdout


def test_a_different_job_is_refused_while_one_runs_and_a_killed_one_blocks_nothing(
    tmp_path, run_embed
):
    folder = tmp_path / "photos"
    write_photo_folder(folder, 200)
    out = tmp_path / "busy.parquet"
    job = [
        "models=simulated",
        "datasets=image_folder",
        f"datasets.image_folder.path={folder}",
        f"output_path={out}",
        "tasks.batch_size=4",
        "tasks.num_workers=0",
    ]
    slow = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "img_search.pipeline.embed",
            *job,
            "models.simulated.batch_seconds=0.5",
        ],
        cwd=REPO,
        env={**os.environ, **OFFLINE},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        records = out.with_name(out.name + ".partial") / "agreed"
        deadline = time.time() + 120
        while not any(records.glob("identity-*.json")) and time.time() < deadline:
            time.sleep(0.2)  # the slow job is embedding now
        other = run_embed(*job, "models.simulated.dim=32", expect_ok=False)
        assert other.returncode == 2
        assert (
            f"is being written by a different job (host {os.uname().nodename}, pid {slow.pid})"
            in words(other.stderr)
        )
        assert "Traceback" not in other.stderr
        overwrite = run_embed(*job, "tasks.overwrite=true", expect_ok=False)
        assert overwrite.returncode == 2 and f"pid {slow.pid}" in words(overwrite.stderr)
    finally:
        slow.send_signal(signal.SIGKILL)
        slow.wait()
    assert not out.exists()
    rerun = run_embed(*job, "models.simulated.batch_seconds=0")  # the device time is not the job
    assert "rows: 200" in rerun.stdout


def test_precision_is_part_of_the_job_identity(inquire_dir, tmp_path, run_embed):
    """A job killed at fp32 is not resumed at bf16, and bf16 on an fp32 table is not "complete"."""
    root, _ = inquire_dir
    out = tmp_path / "t.parquet"
    common = [
        "models=simulated",
        "models.simulated.batch_seconds=0",
        "datasets=inquire",
        f"datasets.inquire.path={root}",
        f"output_path={out}",
        "tasks.shard_size=8",
    ]
    killed = run_embed(*common, expect_ok=False, env={"IMG_SEARCH_FAULT": "commit:2"})
    assert killed.returncode != 0
    refused = run_embed(*common, "tasks.precision=bf16", expect_ok=False)
    assert refused.returncode == 2
    assert "tasks.precision: 'fp32' then, 'bf16' now" in words(refused.stderr)
    assert "holds an unfinished job that differs" in words(refused.stderr)
    finished = run_embed(*common)
    assert "resumed: 16 rows" in finished.stdout and "rows: 41" in finished.stdout
    refused = run_embed(*common, "tasks.precision=bf16", expect_ok=False)
    assert refused.returncode == 2 and "already complete" not in words(refused.stderr)
    assert "was made by a different job (tasks.precision: 'fp32' then, 'bf16' now)" in words(
        refused.stderr
    )
    assert read_metadata(out)["job"]["tasks"]["precision"] == "fp32"


def test_a_table_recorded_before_precision_was_in_its_spec_keeps_its_identity(
    inquire_dir, tmp_path, run_embed
):
    """Its spec has no ``tasks``: the output dtype beside the models, the precision by each model."""
    import pyarrow.parquet as pq

    from img_search.store.schema import METADATA_KEY

    root, _ = inquire_dir
    out = tmp_path / "old.parquet"
    common = [
        "models=simulated",
        "models.simulated.batch_seconds=0",
        "datasets=inquire",
        f"datasets.inquire.path={root}",
        f"output_path={out}",
    ]
    run_embed(*common, "tasks.precision=bf16")
    table = pq.read_table(out)
    metadata = read_metadata(out)
    tasks = metadata["job"].pop("tasks")
    metadata["job"]["output_dtype"] = tasks["output_dtype"]
    assert metadata["models"]["simulated"]["precision"] == "bf16"
    encoded = {METADATA_KEY: json.dumps(metadata).encode()}
    pq.write_table(table.replace_schema_metadata(encoded), out)
    same = run_embed(*common, "tasks.precision=bf16")
    assert "already complete" in words(same.stderr)
    refused = run_embed(*common, expect_ok=False)
    assert refused.returncode == 2
    assert "tasks.precision: 'bf16' then, 'fp32' now" in words(refused.stderr)
