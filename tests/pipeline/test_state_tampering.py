"""Job state is verified, never trusted: each tampering of ``<output>.partial/`` is named in one line,
its shard redone, nothing outside the output touched, and the table equals a clean run's.

The job is killed while it assembles the table (every shard committed), the
state of shard 1 is tampered with, and the same command is run again.
41 images in shards of 8 (6 shards), batches of 4.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import built_once, run_module

from img_search.store import read_embeddings

SIMULATED = ["models=simulated", "models.simulated.batch_seconds=0.01"]
PAIR = ("simulated", "inquire")


def job_args(data: Path, out: Path) -> list[str]:
    return [
        *SIMULATED,
        "datasets=inquire",
        f"datasets.inquire.path={data}",
        f"output_path={out}",
        "tasks.batch_size=4",
        "tasks.shard_size=8",
        "tasks.num_workers=0",
        "tasks.cpu=true",
    ]


def embed(args: list[str], fault: str | None = None):
    env = {"IMG_SEARCH_FAULT": fault} if fault else None
    return run_module("img_search.pipeline.embed", *args, timeout=300, env=env)


def words(log: str) -> str:
    return " ".join(log.split())


def table_bytes(path: Path) -> dict[str, bytes]:
    """id → the stored vector's bytes: equal means to the bit."""
    table = read_embeddings(path)
    return {
        i: v.astype(np.float32).tobytes() for i, v in zip(table.ids, table.vectors, strict=True)
    }


@pytest.fixture(scope="module")
def clean(inquire_dir, tmp_path_factory) -> dict[str, bytes]:
    root, _ = inquire_dir

    def build(folder: Path) -> str:
        out = folder / "clean.parquet"
        result = embed(job_args(root, out))
        assert result.returncode == 0, result.stderr[-3000:]
        return str(out)

    return table_bytes(Path(built_once(tmp_path_factory, "state-tampering-clean", build)))


@pytest.fixture(scope="module")
def killed(inquire_dir, tmp_path_factory) -> Callable[[Path], Path]:
    """``killed(out)``: the state the job leaves at ``out`` when it is killed while assembling the
    table (every shard committed), made once per form and copied."""
    root, _ = inquire_dir

    def build(folder: Path) -> dict[str, str]:
        states = {}
        for name in ("out.parquet", "photos"):
            out = folder / name
            crashed = embed(job_args(root, out), fault="finalize")
            assert crashed.returncode != 0 and not out.exists()
            state = out.with_name(out.name + ".partial")
            records = sorted((state / "records" / "simulated" / "inquire").glob("*.json"))
            assert len(records) == 6 and all(json.loads(r.read_text())["final"] for r in records)
            states[name] = str(state)
        return states

    states = built_once(tmp_path_factory, "state-tampering-killed", build)

    def copy(out: Path) -> Path:
        state = out.with_name(out.name + ".partial")
        shutil.copytree(states[out.name], state, symlinks=True)
        return state

    return copy


def record_path(state: Path, shard: int) -> Path:
    return state / "records" / "simulated" / "inquire" / f"{shard:06d}.json"


def part_path(state: Path, shard: int) -> Path:
    """Shard ``shard``'s part: committed, or moved already into the folder being assembled."""
    (name,) = [p["name"] for p in json.loads(record_path(state, shard).read_text())["parts"]]
    staged = state / "table" / name
    return staged if staged.exists() else state / "parts" / name


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# -- the tamperings: each changes shard 1's state and returns what the warning names -------------


def duplicated_record(state: Path, _: Path) -> str:
    shutil.copyfile(record_path(state, 0), record_path(state, 1))
    return "it is the record of shard 0 of simulated × inquire"


def truncated_record(state: Path, _: Path) -> str:
    path = record_path(state, 1)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return "not a readable JSON object"


def truncated_part(state: Path, _: Path) -> str:
    part = part_path(state, 1)
    size = part.stat().st_size
    part.write_bytes(part.read_bytes()[: size // 2])
    return f"has {size // 2} bytes, and the record vouches for {size}"


def changed_bytes(state: Path, _: Path) -> str:
    part = part_path(state, 1)
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    return "has other bytes than the record vouches for (sha256)"


def rows_of_another_model(state: Path, _: Path) -> str:
    """The part rewritten with ``model_name`` 'clip', and the record made to vouch for it."""
    part = part_path(state, 1)
    table = pq.read_table(part)
    column = table.schema.get_field_index("model_name")
    table = table.set_column(column, "model_name", pa.array(["clip"] * table.num_rows))
    pq.write_table(table, part)
    record = json.loads(record_path(state, 1).read_text())
    record["parts"][0]["size"] = part.stat().st_size
    record["parts"][0]["sha256"] = hashlib.sha256(part.read_bytes()).hexdigest()
    record_path(state, 1).write_text(json.dumps(record))
    return "holds rows of model_name 'clip', not 'simulated'"


TAMPERINGS: dict[str, Callable[[Path, Path], str]] = {
    "duplicated record": duplicated_record,
    "truncated record": truncated_record,
    "truncated part": truncated_part,
    "changed bytes": changed_bytes,
    "rows of another model": rows_of_another_model,
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_tampered_state_is_named_and_its_shard_redone(
    tampering, clean, killed, inquire_dir, tmp_path
):
    root, _ = inquire_dir
    out = tmp_path / "out.parquet"
    state = killed(out)
    named = TAMPERINGS[tampering](state, tmp_path)
    rerun = embed(job_args(root, out))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    warning = [line for line in rerun.stderr.splitlines() if "WARNING" in line]
    assert len(warning) == 1, rerun.stderr[-3000:]  # one line, naming the file
    assert f"{record_path(state, 1)}: " in warning[0] and named in warning[0]
    assert "shard 1 of simulated × inquire is redone" in warning[0]
    assert "resumed: 33 rows" in rerun.stdout and "rows: 41" in rerun.stdout  # shard 1 only
    assert "Traceback" not in rerun.stderr and not state.exists()
    assert table_bytes(out) == clean


def test_a_record_naming_another_tables_part_leaves_that_table_untouched(
    clean, killed, inquire_dir, tmp_path
):
    """``../../other/part-….parquet``: refused as outside the job folder; ``other`` byte-identical."""
    root, _ = inquire_dir
    other = tmp_path / "other"
    assert embed(job_args(root, other)).returncode == 0  # a finished folder table beside it
    before = folder_digest(other)
    out = tmp_path / "out.parquet"
    state = killed(out)
    victim = sorted(p.name for p in other.glob("part-*-000001-*.parquet"))[0]
    record = json.loads(record_path(state, 1).read_text())
    stolen = other / victim
    record["parts"] = [
        {
            "name": f"../../other/{victim}",
            "rows": pq.ParquetFile(stolen).metadata.num_rows,
            "size": stolen.stat().st_size,
            "sha256": hashlib.sha256(stolen.read_bytes()).hexdigest(),
        }
    ]
    record_path(state, 1).write_text(json.dumps(record))
    rerun = embed(job_args(root, out))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (
        f"{record_path(state, 1)}: it names a part outside the job folder "
        f"('../../other/{victim}'); shard 1 of simulated × inquire is redone"
    ) in rerun.stderr
    assert "resumed: 33 rows" in rerun.stdout and "rows: 41" in rerun.stdout
    assert folder_digest(other) == before
    assert table_bytes(out) == table_bytes(other) == clean


def test_a_folder_table_publishes_no_part_of_a_redone_shard(clean, killed, inquire_dir, tmp_path):
    """Killed after moving its parts into the folder being assembled; one of them is then cut short:
    the finished folder holds the redone shard's new part, not the bad one."""
    root, _ = inquire_dir
    out = tmp_path / "photos"
    state = killed(out)
    bad = part_path(state, 1)
    assert bad.parent == state / "table"
    named = truncated_part(state, tmp_path)
    rerun = embed(job_args(root, out))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{record_path(state, 1)}: part {bad.name} {named}" in words(rerun.stderr)
    assert "rows: 41" in rerun.stdout
    parts = sorted(p.name for p in out.glob("part-*"))
    assert len(parts) == 6 and bad.name not in parts
    assert table_bytes(out) == clean


#: State files other than the records, each made not a JSON object: (path in the state, content).
MALFORMED = {
    "job record": ("job.json", b"[1, 2]"),
    "agreed listing": ("agreed/listing-inquire.json", b'"items"'),
    "finaliser's hold": ("claims/_finalize.0", b"\xff\xfe"),
}


@pytest.mark.parametrize("what", list(MALFORMED))
def test_a_malformed_state_file_is_named_once_and_never_a_crash(
    what, clean, killed, inquire_dir, tmp_path
):
    root, _ = inquire_dir
    out = tmp_path / "out.parquet"
    state = killed(out)
    name, content = MALFORMED[what]
    (state / name).write_bytes(content)
    rerun = embed(job_args(root, out))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    named = [line for line in rerun.stderr.splitlines() if f"{state / name}: " in line]
    assert len(named) == 1 and "WARNING" in named[0] and named[0].endswith(": ignored")
    assert "Traceback" not in rerun.stderr and "rows: 41" in rerun.stdout
    if what == "job record":  # what it stood for is done again
        assert "the job state" in rerun.stderr and "resumed" not in rerun.stdout
    assert table_bytes(out) == clean
