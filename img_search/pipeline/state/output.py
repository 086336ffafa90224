"""Before any work: what is at the output, and what this job may do there.

Decided by the main process of a launch, from the job's spec and the files
at the output (a finished table's metadata, an unfinished job's ``job.json``,
the live processes):

- the same job as a finished table: nothing to do;
- a job that adds models or datasets to a finished table: embed only the new
  (model, dataset) pairs and append them;
- an unfinished job: continue it (and take on pairs the request adds);
- a different job while another one works on the output: refused, naming
  the holder's host and pid; any other difference: refused, naming it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from img_search.atomic import remove
from img_search.pipeline.plan import Job, compare_specs, spec_fingerprint
from img_search.pipeline.settings import ConfigError
from img_search.pipeline.state.ledger import Ledger, describe
from img_search.store import read_metadata

log = logging.getLogger(__name__)


class JobMismatch(ConfigError):
    """The output holds (or is held by) a different job than the one asked for now."""


@dataclass
class Opening:
    launch: str
    #: The (model, dataset) pairs this job still has to embed; empty: nothing to do.
    todo: list[tuple[str, str]] = field(default_factory=list)
    message: str = ""
    #: The pairs of ``todo`` with shards left to embed (the others wait only to be assembled).
    pending: list[tuple[str, str]] = field(default_factory=list)
    #: This launch wrote the job record (a new job or an append), rather than resuming one.
    started_here: bool = False

    @property
    def complete(self) -> bool:
        return not self.todo


@dataclass(frozen=True)
class Allowed:
    """What a launch may do to what it finds: ``tasks.overwrite`` and ``tasks.resume``, unless it joins."""

    overwrite: bool
    resume: bool


def open_output(job: Job, ledger: Ledger, join: bool = False) -> Opening:
    """Main process of a launch: refuse, or return the pairs to embed (and register this process).

    The process registers before it looks, so that of two different jobs
    starting at the same moment at least one sees the other. ``join``: the
    output was opened by another process (a Ray actor's driver), so this one
    resumes what it finds there and never overwrites or discards it,
    whatever ``tasks.overwrite`` and ``tasks.resume`` say; a table finished
    meanwhile is complete.
    """
    launch = uuid.uuid4().hex[:12]
    ledger.join(spec_fingerprint(job.spec()), launch, rank=0)
    settings = job.settings
    may = Allowed(overwrite=settings.overwrite and not join, resume=settings.resume or join)
    try:
        opening = _open(job, ledger, launch, may)
    except BaseException:
        ledger.depart()
        raise
    if opening.complete:
        ledger.depart()
    opening.pending = [p for p in opening.todo if not _committed(ledger, *p)]
    return opening


def _committed(ledger: Ledger, model: str, dataset: str) -> bool:
    from img_search.pipeline.state.claims import pair_claims

    if ledger.agreed(f"listing-{dataset}") is None:
        return False
    return not pair_claims(ledger, model, dataset).unfinished()


def _open(job: Job, ledger: Ledger, launch: str, may: Allowed) -> Opening:
    spec = job.spec()
    # starting over (overwrite, or resume=false) would pull the state from under any live process
    _refuse_other_jobs(ledger, spec, launch, any_spec=may.overwrite or not may.resume)
    if may.overwrite:
        _start_over(job, ledger)
        ledger.join(spec_fingerprint(spec), launch, rank=0)
    finished = _finished_metadata(job)
    recorded = ledger.read_job()
    if recorded is None and ledger.exists():  # named already: what it stood for is redone
        _refuse_other_jobs(ledger, spec, launch, any_spec=True)
        log.warning("the job state %s is started over", ledger.state_dir)
        _discard_state(ledger)
        ledger.join(spec_fingerprint(spec), launch, rank=0)
    if recorded is not None and not may.resume:
        log.info("tasks.resume=false: the unfinished job at %s is discarded", ledger.state_dir)
        _discard_state(ledger)
        ledger.join(spec_fingerprint(spec), launch, rank=0)
        recorded = None
    if recorded is not None:
        return _continue(job, ledger, recorded, launch)
    if finished is not None:
        return _append_or_nothing(job, ledger, finished, launch, may.resume)
    ledger.write_job({"spec": spec, "pairs": job.pairs(), "todo": job.pairs(), "base": None})
    return Opening(launch, todo=job.pairs(), started_here=True)


def _refuse_other_jobs(ledger: Ledger, spec: dict[str, Any], launch: str, any_spec: bool) -> None:
    mine = spec_fingerprint(spec)
    for member in ledger.live_members():
        if member.get("launch") == launch:
            continue
        if any_spec or member.get("spec_fingerprint") != mine:
            what = "another job" if any_spec else "a different job"
            raise JobMismatch(
                f"{ledger.state_dir.parent / ledger.state_dir.name.removesuffix('.partial')} "
                f"is being written by {what} ({describe(member)}); "
                "wait for it to finish or stop it first"
            )


def _finished_metadata(job: Job) -> dict[str, Any] | None:
    layout = job.layout
    if layout.finished():
        try:
            return read_metadata(layout.path)
        except Exception:  # not ours, or unreadable: never overwrite it silently
            pass
    elif not layout.occupied() or (
        layout.is_folder and layout.path.is_dir() and not any(layout.path.iterdir())
    ):
        return None
    raise ConfigError(
        f"{layout.path} exists and is not a finished img_search table; "
        "move it away or pass tasks.overwrite=true"
    )


def _start_over(job: Job, ledger: Ledger) -> None:
    layout = job.layout
    foreign = layout.is_folder and layout.path.is_dir() and not layout.finished()
    if foreign and any(layout.path.iterdir()):
        raise ConfigError(
            f"{layout.path} is a folder that is not an img_search table: move it away first"
        )
    remove(layout.path)
    layout.errors_path.unlink(missing_ok=True)
    _discard_state(ledger)


def forget_failed_start(ledger: Ledger, opening: Opening) -> None:
    """After a failure, a job this launch started that committed nothing leaves no state behind.

    Otherwise a first try that failed (a missing folder, the Hub out of
    reach) would leave a ``.partial`` that refuses any different job there.
    """
    if not opening.started_here or any(ledger.path("records").rglob("*.json")):
        return
    if any(m.get("launch") != opening.launch for m in ledger.live_members()):
        return
    _discard_state(ledger)


def _discard_state(ledger: Ledger) -> None:
    ledger.leave()
    remove(ledger.state_dir)


def _continue(job: Job, ledger: Ledger, recorded: dict[str, Any], launch: str) -> Opening:
    spec = job.spec()
    comparison = compare_specs(recorded["spec"], recorded["pairs"], spec, job.pairs())
    if comparison.conflict:
        raise JobMismatch(
            f"{ledger.state_dir} holds an unfinished job that differs from this one "
            f"({comparison.conflict}); rerun with the same configuration, "
            "or pass tasks.overwrite=true to start over"
        )
    if comparison.missing_pairs:
        missing = ", ".join(f"{m} × {d}" for m, d in comparison.missing_pairs)
        raise JobMismatch(
            f"{ledger.state_dir} holds an unfinished job that also embeds {missing}; rerun with "
            "the same models and datasets, or pass tasks.overwrite=true to start over"
        )
    if comparison.new_pairs:
        recorded["spec"] = merge_specs(recorded["spec"], spec)
        recorded["pairs"] = [*recorded["pairs"], *comparison.new_pairs]
        recorded["todo"] = [*recorded["todo"], *comparison.new_pairs]
        ledger.write_job(recorded)
        log.info("added to the unfinished job: %s", _pairs_text(comparison.new_pairs))
    log.info("resuming the unfinished job in %s", ledger.state_dir)
    return Opening(launch, todo=[tuple(p) for p in recorded["todo"]])


def _append_or_nothing(
    job: Job, ledger: Ledger, finished: dict[str, Any], launch: str, resume: bool
) -> Opening:
    layout, spec = job.layout, job.spec()
    if not resume:
        raise ConfigError(
            f"{layout.path} exists: pass tasks.overwrite=true to replace it "
            "(or tasks.resume=true to keep it)"
        )
    recorded = finished.get("job")
    if recorded is None:
        raise JobMismatch(
            f"{layout.path} was written by an earlier img_search that did not record its job; "
            "pass tasks.overwrite=true to recompute it"
        )
    recorded = with_recorded_precision(recorded, finished)
    comparison = compare_specs(recorded, recorded_pairs(finished), spec, job.pairs())
    if comparison.conflict:
        raise JobMismatch(
            f"{layout.path} was made by a different job ({comparison.conflict}); choose another "
            "output_path, or pass tasks.overwrite=true to recompute it"
        )
    if not comparison.new_pairs:
        rows = finished.get("rows")
        log.info(
            "%s is already complete (%s rows): nothing to do; tasks.overwrite=true recomputes it",
            layout.path,
            rows,
        )
        return Opening(launch, message=f"output: {layout.path}\nrows: {rows}")
    for name, listing in (finished.get("listings") or {}).items():
        ledger.agree(f"listing-{name}", listing)  # a new pair must see the same items
    for name, identity in (finished.get("models") or {}).items():
        ledger.agree(f"identity-{name}", identity)
    pairs = recorded_pairs(finished)
    ledger.write_job(
        {
            "spec": merge_specs(recorded, spec),
            "pairs": [*pairs, *comparison.new_pairs],
            "todo": comparison.new_pairs,
            "base": {"rows": finished.get("rows", 0), "pairs": pairs},
        }
    )
    log.info("%s is finished; appending %s", layout.path, _pairs_text(comparison.new_pairs))
    return Opening(launch, todo=comparison.new_pairs, started_here=True)


def recorded_pairs(metadata: dict[str, Any]) -> list[tuple[str, str]]:
    """The (model, dataset) pairs a finished table holds."""
    return [(p["model"], p["dataset"]) for p in metadata.get("pairs", [])]


def with_recorded_precision(spec: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    """A table finished before the spec held ``tasks`` recorded each model's precision beside it."""
    if "tasks" in spec:
        return spec
    models = metadata.get("models") or {}
    precisions = {m.get("precision") for m in models.values() if isinstance(m, dict)}
    if len(precisions) != 1 or None in precisions:
        return spec
    return {**spec, "tasks": {"precision": precisions.pop()}}


def merge_specs(before: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    merged = dict(before)
    merged["tasks"] = dict(now.get("tasks") or {})  # compared equal: recorded as known now
    for group in ("models", "datasets"):
        merged[group] = {**(before.get(group) or {}), **(now.get(group) or {})}
    return merged


def _pairs_text(pairs: list[tuple[str, str]]) -> str:
    return ", ".join(f"{m} × {d}" for m, d in pairs)
