"""This process's share of a job's pending (model, dataset) pairs: build each dataset and model, agree, embed.

The processes of a launch build every dataset and then each model together
(``distributed.build_everywhere``), agree through the job state on what each
dataset lists and on what each model is (a rerun must match the job it
resumes), and then embed every pair (``embed_pass.py``).
"""

from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING

import torch
from accelerate import Accelerator

from img_search.data.base import BuildContext, EmptyDataset
from img_search.embedding import Encoder
from img_search.faults import fail_point
from img_search.host import usable_cores
from img_search.pipeline.distributed import (
    COUNT,
    build_everywhere,
    local_world_size,
    on_main,
)
from img_search.pipeline.embed_pass import embed_pair
from img_search.pipeline.plan import Job
from img_search.pipeline.reporting import ProcessReport
from img_search.pipeline.state.ledger import Ledger
from img_search.pipeline.state.output import JobMismatch

if TYPE_CHECKING:
    from img_search.pipeline.launch import Run

log = logging.getLogger(__name__)


def run_pairs(run: Run, pending: list[tuple[str, str]]) -> ProcessReport:
    """This process's share of every ``pending`` (model, dataset) pair of the launch ``run``."""
    job, accelerator, ledger, settings = run.job, run.accelerator, run.ledger, run.job.settings
    retry = {"retries": settings.build_retries, "backoff": settings.build_backoff_s}
    rank = run.place.worker[0] if run.place.worker else accelerator.process_index
    report = ProcessReport(rank, ledger.me.id if ledger.me else "", role=run.place.role or "")
    datasets = list(dict.fromkeys(d for _, d in pending))
    for name in datasets:
        source = job.sources[name]
        source.context = build_context(run, name)
        build_everywhere(
            accelerator,
            source.build,
            f"dataset {name}",
            together=source.builds_together,
            local_copy=job.modality.local_copy(name),
            **retry,
        )
    layouts = on_main(accelerator, lambda: agree_on_listings(job, ledger, datasets))
    for key, encoder in job.encoders.items():
        names = [d for m, d in pending if m == key]
        if not names:
            continue
        fail_point("model_build")
        build_everywhere(
            accelerator,
            lambda e=encoder: e.load(accelerator.device, settings.precision, job.trust_remote_code),
            f"model {key} ({encoder.model_name})",
            local_copy=f"models.{key}.model_name=<local folder>",
            **retry,
        )
        on_main(accelerator, lambda e=encoder: agree_on_model(ledger, e))
        for name in names:
            stats = embed_pair(run, encoder, job.sources[name], layouts[name])
            report.stats.append(stats)
            ledger.update({"passes": [s.as_dict() for s in report.stats]})
        release(encoder, accelerator)
    report.collectives, report.collective_bytes = COUNT.calls, COUNT.bytes
    # "done" last: a finaliser of another launch waits for live processes without it
    ledger.update({"collectives": COUNT.calls, "collective_bytes": COUNT.bytes, "done": True})
    return report


def build_context(run: Run, name: str) -> BuildContext:
    """What building dataset ``name`` may share: a folder of the job's state, this process's place
    among all that may work on the job, and its share of the machine's cores."""
    return BuildContext(run.ledger.path("built", name), *run.slot, max(1, int(run.cores)))


def agree_on_listings(job: Job, ledger: Ledger, names: list[str]) -> dict[str, tuple[int, int]]:
    """Main process: every dataset lists the items the job started with; returns each one's shard layout.

    The layout (shard size, and the batch size its tail shrinks to) is the
    one the job started with, whatever this run's settings say.
    """
    settings, layouts = job.settings, {}
    for name in names:
        source = job.sources[name]
        items, fingerprint = source.listing()
        if items == 0:
            raise EmptyDataset(
                f"dataset {name} holds no items (after its filters, if any: ids, ids_file, "
                "splits, dedupe): nothing to embed"
            )
        size = settings.shard_size_for(items)
        value = {
            "items": items,
            "fingerprint": fingerprint,
            "shard_size": size,
            "tail_unit": settings.batch_size,
            "shards": len(source.shards(size, settings.batch_size)),
        }
        agreed = ledger.agree(f"listing-{name}", value)
        if (agreed.get("items"), agreed.get("fingerprint")) != (items, fingerprint):
            raise JobMismatch(
                f"datasets.{name}: the items differ from those this output was started with "
                f"({agreed.get('items')} items then, {items} now, or the same number but other "
                "ids); rerun on the same data, or pass tasks.overwrite=true to start over"
            )
        if settings.shard_size is not None and settings.shard_size != agreed["shard_size"]:
            log.warning(
                "datasets.%s keeps the shard size it started with (%d), not tasks.shard_size=%d",
                name,
                agreed["shard_size"],
                settings.shard_size,
            )
        # a job started before shards had a tail has none
        layouts[name] = (int(agreed["shard_size"]), int(agreed.get("tail_unit", 0)))
    return layouts


def agree_on_model(ledger: Ledger, encoder: Encoder) -> None:
    """Main process: the loaded model preprocesses as the job's first one did."""
    identity = encoder.identity()
    agreed = ledger.agree(f"identity-{encoder.name}", identity)
    if agreed.get("fingerprint") != identity.get("fingerprint"):
        changed = sorted(
            k
            for k in set(agreed) | set(identity)
            if agreed.get(k) != identity.get(k) and k not in ("fingerprint", "dim", "precision")
        )
        raise JobMismatch(
            f"model {encoder.name} differs from the one that started this output "
            f"({', '.join(changed) or 'fingerprint'} changed); pass tasks.overwrite=true to start over"
        )


def release(encoder: Encoder, accelerator: Accelerator) -> None:
    """Free one model's memory before the next model of the job loads."""
    for attribute in ("model", "processor"):
        if hasattr(encoder, attribute):
            setattr(encoder, attribute, None)
    gc.collect()
    if accelerator.device.type == "cuda":
        torch.cuda.empty_cache()


def share_cpu_threads(accelerator: Accelerator, cores: float | None = None) -> None:
    """On CPU, processes of one machine split its cores instead of each spawning one thread per core;
    a process given ``cores`` (a Ray actor's allotment) uses that many threads, on any device."""
    if cores is not None:
        torch.set_num_threads(max(1, int(cores)))
        return
    local = local_world_size(accelerator)
    if accelerator.device.type != "cpu" or local == 1:
        return
    torch.set_num_threads(max(1, usable_cores() // local))
