"""``pipeline/launch.py``: what an engine's ``Place`` means for a process, and the one launch path.

Real jobs (the ``simulated`` model over the 8 sample photos, shards of 2),
real job state and tables under ``tmp_path``, run in this process.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from conftest import SAMPLE_PHOTOS, run_module

from img_search.pipeline.launch import Launched, Place, conclude, launch, make_run, rounds
from img_search.pipeline.state.finalize import Outcome, finalize
from img_search.pipeline.state.ledger import Ledger, read_json
from img_search.pipeline.state.output import Opening
from img_search.store import read_embeddings, read_metadata

PAIR = ("simulated", "image_folder")
ROWS = 8  # the sample photos


def overrides(out: Path, *extra: str) -> list[str]:
    return [
        "models=simulated",
        "models.simulated.batch_seconds=0",
        "models.simulated.dim=8",
        "datasets=image_folder",
        f"datasets.image_folder.path={SAMPLE_PHOTOS}",
        f"output_path={out}",
        "tasks.batch_size=2",
        "tasks.shard_size=2",
        "tasks.cpu=true",
        *extra,
    ]


def plan(out: Path, *extra: str):
    from img_search.api.jobs import compose
    from img_search.pipeline.modalities import IMAGES, image_dataset_specs
    from img_search.pipeline.plan import plan_job

    cfg = compose("embed_config", overrides(out, *extra))
    return plan_job(cfg, IMAGES, image_dataset_specs(cfg))


def run_of(job, place: Place):
    from img_search.pipeline.distributed import make_accelerator

    accelerator = make_accelerator(cpu=True)
    return make_run(job, place, accelerator, Ledger(job.layout.state_dir), Opening("test"))


def test_a_local_process_takes_its_share_of_the_machines_cores(tmp_path, monkeypatch):
    monkeypatch.setattr("img_search.pipeline.launch.usable_cores", lambda: 6)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two processes of the launch on this machine
    run = run_of(plan(tmp_path / "t.parquet", "tasks.num_workers=-1"), Place())
    assert run.slot == (0, 1)
    assert run.cores == 3.0
    assert run.loader_workers == 3  # on CPU: one idle-priority loader worker per core


def test_a_slurm_array_task_starts_on_its_own_stretch(tmp_path, monkeypatch):
    for key, value in {
        "SLURM_ARRAY_JOB_ID": "77",
        "SLURM_ARRAY_TASK_ID": "3",
        "SLURM_ARRAY_TASK_MIN": "0",
        "SLURM_ARRAY_TASK_MAX": "3",
        "SLURM_ARRAY_TASK_COUNT": "4",
    }.items():
        monkeypatch.setenv(key, value)
    run = run_of(plan(tmp_path / "t.parquet", "tasks.num_workers=1"), Place())
    assert run.slot == (3, 4)
    assert run.loader_workers == 1  # as asked


def test_a_ray_actor_place_gives_its_slot_cores_and_loader_workers(tmp_path):
    job = plan(tmp_path / "t.parquet", "tasks.num_workers=-1")
    run = run_of(job, Place(worker=(1, 3), cores=4, cpu=True, joins=True, role="ray worker 2 of 3"))
    assert (run.slot, run.cores, run.loader_workers) == ((1, 3), 4, 4)
    one_cpu = run_of(job, Place(worker=(2, 3), cores=1, cpu=True))
    assert (one_cpu.slot, one_cpu.loader_workers) == ((2, 3), 0)  # the model keeps its one core


@pytest.fixture
def chatty(monkeypatch):
    """Summaries shown, whatever an earlier test of this process configured."""
    from img_search.console import OUTPUT

    monkeypatch.setattr(OUTPUT, "quiet", False)


def test_a_complete_output_returns_no_outcome_and_its_message(tmp_path, capsys, chatty):
    out = tmp_path / "t.parquet"
    first = launch(plan(out))
    assert first.outcome is not None and first.outcome.finished and first.outcome.rows == ROWS
    again = launch(plan(out))
    assert again.outcome is None and again.reports == []
    assert again.message == f"output: {out}\nrows: {ROWS}"
    capsys.readouterr()
    assert conclude(again, plan(out)) == 0
    assert capsys.readouterr().out.splitlines() == [f"output: {out}", f"rows: {ROWS}"]


def test_a_joining_launch_resumes_a_recorded_job_whatever_overwrite_says(tmp_path):
    """A run killed after its 2nd commit; a joining launch asked to overwrite keeps those 2 shards."""
    out = tmp_path / "t.parquet"
    killed = run_module(
        "img_search.pipeline.embed",
        *overrides(out, "tasks.num_workers=0"),
        env={"IMG_SEARCH_FAULT": "commit:2"},
        timeout=300,
    )
    assert killed.returncode != 0 and not out.exists()
    job = plan(out, "tasks.overwrite=true", "tasks.resume=false", "tasks.num_workers=0")
    joined = launch(job, Place(joins=True, role="joiner"))
    assert joined.resumed == {PAIR: 4}  # 2 shards of 2 rows, committed before it opened
    assert joined.outcome is not None and joined.outcome.finished
    assert sum(len(s.shards) for r in joined.reports for s in r.stats) == 2  # the other 2 shards
    assert len(read_embeddings(out).ids) == ROWS
    roles = [p.get("role") for p in read_metadata(out)["run"]["processes"]]
    assert sorted(map(str, roles)) == ["None", "joiner"]  # the killed run's process, and this one


def test_a_launch_that_embeds_nothing_claims_nothing_and_is_done(tmp_path):
    """The Ray engine's shape in one process: a driver that claims nothing, its worker joining."""
    out = tmp_path / "t.parquet"
    job = plan(out, "tasks.num_workers=0")
    planned = job.settings
    before = copy.deepcopy(planned)
    seen = {}

    def work(run):
        me = run.ledger.processes_dir / f"{run.ledger.me.id}.json"
        seen["driver"] = read_json(me)

        def embed(pending):
            assert pending == [PAIR]
            worker = Place(worker=(0, 1), cores=1, cpu=True, joins=True, role="worker 1 of 1")
            return launch(job, worker).reports

        reports, outcome = rounds(run, embed, lambda: finalize(run.job, run.ledger))
        return reports, outcome

    launched = launch(job, Place(embeds=False, cpu=True, role="driver"), work=work)
    assert seen["driver"]["done"] is True and seen["driver"]["role"] == "driver"
    assert conclude(launched, job) == 0
    processes = {p["role"]: p for p in read_metadata(out)["run"]["processes"]}
    assert processes["driver"]["shards"] == {}
    assert len(processes["worker 1 of 1"]["shards"]["simulated/image_folder"]) == 4
    assert len(read_embeddings(out).ids) == ROWS
    # the settings object is the planned one, unchanged by either launch
    assert job.settings is planned and planned == before


@pytest.mark.parametrize(
    ("outcome", "died", "code"),
    [
        (Outcome(True, rows=ROWS, new_errors=2), [], 0),
        (Outcome(True, rows=ROWS - 3, new_errors=3), [], 1),  # over tasks.max_errors=2
        (Outcome(False, waiting="2 shard(s) held by nobody"), ["ray worker 1 of 2"], 3),
        (Outcome(False, waiting="another process is assembling the table"), [], 0),
        (Outcome(True, rows=ROWS), ["ray worker 1 of 2"], 0),  # died, but the table is done
    ],
)
def test_conclude_exit_codes(tmp_path, outcome, died, code, capsys, chatty):
    job = plan(tmp_path / "t.parquet", "tasks.max_errors=2")
    assert conclude(Launched([], outcome, died=died), job) == code
    lines = capsys.readouterr().out.splitlines()
    expected = (
        f"rows: {outcome.rows}" if outcome.finished else f"not finished yet: {outcome.waiting}"
    )
    assert lines[:2] == [f"output: {tmp_path / 't.parquet'}", expected]


def test_conclude_on_another_process_prints_nothing(tmp_path, capsys, chatty):
    job = plan(tmp_path / "t.parquet")
    assert conclude(Launched([], Outcome(False, waiting="x"), died=["w"], main=False), job) == 0
    assert capsys.readouterr().out == ""


def test_no_pipeline_module_assigns_to_the_settings():
    """What an engine decides travels in ``Place`` and ``Run``; the planned settings stay as planned."""
    import re

    import img_search.pipeline

    target = r"[\w.]*\bsettings\.[a-z_]+"  # settings.x, job.settings.x, in a tuple too
    assignment = re.compile(rf"^\s*(?:[\w.]+\s*,\s*)*{target}\s*(?:,\s*[\w.]+\s*)*=(?!=)")
    root = Path(img_search.pipeline.__file__).parent
    found = [
        f"{path.relative_to(root)}:{n}: {line.strip()}"
        for path in sorted(root.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if assignment.search(line)
    ]
    assert found == []
