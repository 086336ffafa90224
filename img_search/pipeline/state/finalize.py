"""Finish the table once every shard of every pair is committed: errors first, then the table, then tidy up.

Whichever process finds the job complete (the main process of the last
launch to finish, or a rerun) takes the one ``_finalize`` hold, checks that
every part file holds what its completion record vouches for (``verify.py``:
a shard that fails is named in one line and sent back to be redone, and
nothing is published), and:

1. writes the errors table (the earlier table's errors, then every shard
   record's), under a temporary name and renamed;
2. assembles the table: one ``.parquet`` file (the earlier table's rows,
   then the parts, in pair and shard order), or the parts renamed into the
   folder and its ``_common_metadata`` written last;
3. deletes the job state.

A crash at any step leaves the job state, and a rerun does the steps again.
The errors file is renamed before the table, so a finished table never comes
with missing or stale errors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from img_search.atomic import remove
from img_search.pipeline.plan import Job
from img_search.pipeline.state.claims import PairClaims, agreed_shards, pair_claims
from img_search.pipeline.state.ledger import Ledger, describe
from img_search.pipeline.state.record import CompletionRecord
from img_search.pipeline.state.verify import part_problems
from img_search.store import read_metadata
from img_search.store import schema as S
from img_search.store.writer import (
    assemble_file,
    publish_folder,
    read_errors,
    table_schema,
    with_metadata,
    write_errors,
)

log = logging.getLogger(__name__)
FINALIZE = "_finalize"


@dataclass
class Outcome:
    """What the end of a launch found: the finished table, or why it is not finished yet."""

    finished: bool
    rows: int = 0
    new_errors: int = 0
    #: The rows of the errors file: the earlier table's errors too, after an appended model.
    errors: int | None = None
    errors_path: Path | None = None
    waiting: str = ""
    pairs: list[dict[str, Any]] = field(default_factory=list)
    #: The table's ``run.processes``: every process of the job and the shards it committed.
    processes: list[dict[str, Any]] = field(default_factory=list)
    #: Pairs with shards sent back to be redone (a record or part failed its check).
    redo: list[tuple[str, str]] = field(default_factory=list)
    #: Each dataset's listing as the job agreed on it (items, shards), once the table is finished.
    listings: dict[str, Any] = field(default_factory=dict)


def finalize(job: Job, ledger: Ledger) -> Outcome:
    record = ledger.read_job()
    if record is None:
        if job.layout.finished():
            return Outcome(True, rows=int(read_metadata(job.layout.path).get("rows", 0)))
        return Outcome(False, waiting="the job state is gone: rerun to start again")
    todo = [tuple(p) for p in record["todo"]]
    records: dict[tuple[str, str], list[CompletionRecord]] = {}
    working = {str(m.get("id")) for m in ledger.working_members()}
    for model, dataset in todo:
        claims = pair_claims(ledger, model, dataset)
        if agreed_shards(ledger, dataset) is None:
            return _redo([(model, dataset)], "its listing is not recorded")
        # (a shard whose unusable record a live process holds, that process is redoing)
        unusable = [
            i for i in claims.unusable() if ledger.holder(claims.claim_name(i)) not in working
        ]
        if unusable:
            for index in unusable:
                claims.redo(index, "its record is not usable")
            return _redo([(model, dataset)], f"{len(unusable)} record(s) not usable")
        unfinished = claims.unfinished()
        if unfinished:
            return Outcome(False, waiting=_waiting_text(ledger, claims, unfinished))
        records[(model, dataset)] = list(claims.records())
    # a process another machine lost is waited for (its lease), not left to finish the table
    ledger.outwait(lambda: [m.get("id") for m in ledger.working_members()])
    working = ledger.working_members()
    if working:
        return Outcome(False, waiting=_working_text(working))
    mine = ledger.me is not None and ledger.holder(FINALIZE) == ledger.me.id  # (after a redo)
    if not mine and ledger.take(FINALIZE) is None:
        ledger.outwait(lambda: [ledger.holder(FINALIZE)])
        if ledger.take(FINALIZE) is None:
            return Outcome(False, waiting="another process is assembling the table")
    failed = _failed_checks(job, ledger, records)
    if failed:
        return _redo(failed, "a part failed its check")
    return _assemble(job, ledger, record, records)


def _failed_checks(
    job: Job, ledger: Ledger, records: dict[tuple[str, str], list[CompletionRecord]]
) -> list[tuple[str, str]]:
    """Each shard whose part files do not hold what its record vouches for: named and sent back."""
    failed = []
    for (model, dataset), shard_records in records.items():
        claims = pair_claims(ledger, model, dataset)
        for r, problem in part_problems(job.layout, shard_records):
            log.warning(
                "%s: %s; shard %d of %s × %s is redone",
                claims.record_path(r.shard),
                problem,
                r.shard,
                model,
                dataset,
            )
            claims.redo(r.shard, problem)
            failed.append((model, dataset))
    return list(dict.fromkeys(failed))


def _redo(pairs: list[tuple[str, str]], why: str) -> Outcome:
    named = ", ".join(f"{m} × {d}" for m, d in pairs)
    return Outcome(
        False,
        waiting=f"shards of {named} are to be redone ({why}): rerun this same command",
        redo=pairs,
    )


#: What a process that leaves the table to others says, after what they still do.
LEFT_TO_OTHERS = (
    "the last of them to finish writes the table — or rerun this same command once they "
    "have stopped: it takes over what they left"
)


def _waiting_text(ledger: Ledger, claims: PairClaims, unfinished: list[int]) -> str:
    members = {str(data.get("id")): data for data, _ in ledger.members()}
    holders = [ledger.holder(claims.claim_name(i)) for i in unfinished]
    named = sorted({describe(members[h]) if h in members else h or "nobody" for h in holders})
    return (
        f"{len(unfinished)} shard(s) of {claims.model} × {claims.dataset} are still held by "
        f"other processes (array tasks / launches: {_listed(named)}); {LEFT_TO_OTHERS}"
    )


def _working_text(working: list[dict[str, Any]]) -> str:
    return (
        f"every shard is committed, and {len(working)} other process(es) are finishing "
        f"({_listed([describe(m) for m in working])}); {LEFT_TO_OTHERS}"
    )


def _listed(names: list[str], most: int = 4) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _assemble(
    job: Job,
    ledger: Ledger,
    record: dict[str, Any],
    records: dict[tuple[str, str], list[CompletionRecord]],
) -> Outcome:
    layout = job.layout
    for leftover in (layout.path, layout.errors_path):  # a finaliser killed while writing
        for stale in leftover.parent.glob(f".{leftover.name}.tmp-*"):
            remove(stale)
    earlier = read_metadata(layout.path) if layout.finished() else None
    parts: list[Path] = []
    errors: list[tuple[str, str, str, str]] = []
    pairs = []
    for (model, dataset), shard_records in records.items():
        pair_parts = [layout.locate_part(p.name) for r in shard_records for p in r.parts]
        pair_errors = [(e[0], dataset, model, e[1]) for r in shard_records for e in r.errors]
        parts += pair_parts
        errors += pair_errors
        rows = sum(r.rows for r in shard_records)
        pairs.append({"model": model, "dataset": dataset, "rows": rows, "errors": len(pair_errors)})
    dims = {**(_earlier_dims(earlier)), **_part_dims(parts)}
    metadata = _metadata(job, ledger, record, earlier, pairs, dims, records)
    all_errors = read_errors(layout.errors_path) + errors if earlier else errors
    write_errors(layout.errors_path, all_errors)
    dim = next(iter(set(dims.values()))) if len(set(dims.values())) == 1 else None
    extra = job.modality.extra_fields
    if layout.is_folder:
        metadata["parts"] = [*(earlier or {}).get("parts", []), *(p.name for p in parts)]
        _clear_staging(layout, parts)
        schema = table_schema(None, job.settings.output_dtype, extra)
        publish_folder(layout, with_metadata(schema, metadata), parts)
    else:
        schema = table_schema(dim, job.settings.output_dtype, extra)
        base = layout.path if earlier else None
        assemble_file(layout.path, with_metadata(schema, metadata), parts, earlier=base)
    ledger.leave()
    remove(layout.state_dir)
    return Outcome(
        True,
        rows=metadata["rows"],
        new_errors=len(errors),
        errors=len(all_errors),
        errors_path=layout.errors_path if layout.errors_path.exists() else None,
        pairs=pairs,
        processes=metadata["run"]["processes"],
        listings=metadata["listings"],
    )


def _clear_staging(layout: Any, parts: list[Path]) -> None:
    """A new folder table holds its parts only: a part an earlier try moved there before its
    shard was redone goes (the folder is the job's own)."""
    keep = {p.name for p in parts}
    if layout.staging_dir.is_dir():
        for stray in layout.staging_dir.iterdir():
            if stray.name not in keep:
                remove(stray)


def _part_dims(parts: list[Path]) -> dict[str, int]:
    """Each model's dimension, from the first of its part files."""
    dims: dict[str, int] = {}
    for part in parts:
        file = pq.ParquetFile(part)
        if file.metadata.num_rows == 0:
            continue
        model = file.read_row_group(0, columns=[S.MODEL]).column(0)[0].as_py()
        if model in dims:
            continue
        embedding = file.schema_arrow.field(S.EMBEDDING).type
        if pa.types.is_fixed_size_list(embedding):
            dims[model] = embedding.list_size
        else:
            dims[model] = len(file.read_row_group(0, columns=[S.EMBEDDING]).column(0)[0])
    return dims


def _earlier_dims(earlier: dict[str, Any] | None) -> dict[str, int]:
    models = (earlier or {}).get("models") or {}
    return {name: int(info["dim"]) for name, info in models.items() if info.get("dim")}


def _metadata(
    job: Job,
    ledger: Ledger,
    record: dict[str, Any],
    earlier: dict[str, Any] | None,
    pairs: list[dict[str, Any]],
    dims: dict[str, int],
    records: dict[tuple[str, str], list[CompletionRecord]],
) -> dict[str, Any]:
    earlier = earlier or {}
    models = dict(earlier.get("models") or {})
    for model in {m for m, _ in records}:
        identity = dict(ledger.agreed(f"identity-{model}") or {})
        identity["dim"] = dims.get(model, identity.get("dim"))
        models[model] = identity
    datasets = dict(earlier.get("datasets") or {})
    listings = dict(earlier.get("listings") or {})
    for dataset in {d for _, d in records}:
        datasets[dataset] = job.sources[dataset].describe()
        listings[dataset] = ledger.agreed(f"listing-{dataset}") or {}
    config = dict(job.config)
    for group in ("models", "datasets"):
        if group in config or group in (earlier.get("config") or {}):
            config[group] = {
                **((earlier.get("config") or {}).get(group) or {}),
                **(config.get(group) or {}),
            }
    all_pairs = [*(earlier.get("pairs") or []), *pairs]
    processes = _processes(ledger, records)
    run = {
        "processes": processes,
        "collective_calls": sum(p.get("collectives", 0) for p in processes),
    }
    return {
        "format": S.FORMAT,
        "kind": job.modality.kind,
        "output_dtype": job.settings.output_dtype,
        "normalized": True,
        "models": models,
        "datasets": datasets,
        "listings": listings,
        "job": record["spec"],
        "pairs": all_pairs,
        "rows": sum(int(p["rows"]) for p in all_pairs),
        "errors": sum(int(p.get("errors", 0)) for p in all_pairs),
        "config": config,
        "versions": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "num_processes": len(processes),
        "run": run,
        "earlier_runs": [
            *earlier.get("earlier_runs", []),
            *([earlier["run"]] if "run" in earlier else []),
        ],
    }


def _processes(
    ledger: Ledger, records: dict[tuple[str, str], list[CompletionRecord]]
) -> list[dict[str, Any]]:
    """Every process that worked on this job (dead ones too), with the shards it committed."""
    committed: dict[str, dict[str, list[int]]] = {}
    for (model, dataset), shard_records in records.items():
        for r in shard_records:
            owner = str(r.owner)
            committed.setdefault(owner, {}).setdefault(f"{model}/{dataset}", []).append(r.shard)
    processes = []
    for data, _ in ledger.members():
        data = dict(data)
        data["shards"] = committed.pop(str(data.get("id")), {})
        processes.append(data)
    for owner, shards in committed.items():  # a process whose file is gone
        processes.append({"id": owner, "shards": shards})
    return processes


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in (
        "img_search",
        "torch",
        "torchvision",
        "transformers",
        "open_clip_torch",
        "accelerate",
        "datasets",
        "pyarrow",
        "pillow",
    ):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found
