"""The Ray cluster ``engine=ray`` runs on: joining or starting it, what it holds, why an actor died.

Nothing here knows the job: the driver (``ray_driver.py``) asks how many
actors fit and whether the cluster can hold them; ``import_ray`` is the
first thing ``engine=ray`` does, so a missing Ray is one line before any
model library loads.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Mapping
from typing import Any

from img_search.failures import first_line
from img_search.host import usable_cores
from img_search.pipeline.settings import ConfigError, RayEngine

log = logging.getLogger("img_search")

MISSING_RAY = "engine=ray needs Ray: pip install 'img_search[ray]'"
#: The object store of a Ray instance started here: only configs and reports go through it.
LOCAL_OBJECT_STORE_BYTES = 128 * 2**20


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(MISSING_RAY) from None
    return ray


def is_local(engine: RayEngine) -> bool:
    return engine.address in (None, "local")


def connect(ray: Any, engine: RayEngine) -> bool:
    """Join the cluster ``engine.address`` names, or start one here; True if this call did (and so
    must shut it down). A Ray already initialised in this process (a Python caller's) is used as it is.
    """
    if ray.is_initialized():
        return False
    if not sys.stderr.isatty():  # the prefixes of the actors' lines, in a log file
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    if is_local(engine):
        # enough CPUs for the workers asked for, even beyond the cores: they would wait forever
        needed = math.ceil((engine.workers or 1) * engine.num_cpus_per_worker)
        ray.init(
            address="local",
            num_cpus=max(usable_cores(), needed),
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            include_dashboard=False,
            logging_level=logging.ERROR,  # not its advice on clusters (token authentication …)
        )
        return True
    try:
        ray.init(address=engine.address, logging_level=logging.WARNING)
    except ConnectionError as exc:
        raise ConfigError(
            f"engine.address={engine.address}: {first_line(exc).rstrip('.')}; start a cluster (ray start "
            "--head) or pass engine.address=local to start one in this process"
        ) from None
    return True


def fitting_workers(resources: Mapping[str, float], engine: RayEngine) -> int:
    """``engine.workers=null``: as many actors as the cluster's GPUs (or CPUs) hold now."""
    fits = [resources.get("CPU", 0.0) / engine.num_cpus_per_worker]
    if engine.num_gpus_per_worker > 0:
        fits.append(resources.get("GPU", 0.0) / engine.num_gpus_per_worker)
    count = math.floor(min(fits) + 1e-9)
    if count < 1:
        raise ConfigError(
            f"engine.workers=null: the Ray cluster holds no worker of {engine.num_cpus_per_worker:g} "
            f"CPU(s) and {engine.num_gpus_per_worker:g} GPU(s) now ({format_resources(resources)}); "
            "set engine.workers"
        )
    log.info(
        "engine.workers=null: %d ray workers fit the cluster (%s)",
        count,
        format_resources(resources),
    )
    return count


def check_resources(
    resources: Mapping[str, float], engine: RayEngine, count: int, local: bool
) -> None:
    """Refuse workers a Ray started here can never hold; a cluster's autoscaler may still add nodes."""
    need = {"CPU": count * engine.num_cpus_per_worker, "GPU": count * engine.num_gpus_per_worker}
    short = {k: v for k, v in need.items() if v > resources.get(k, 0.0) + 1e-9}
    if not short:
        return
    text = ", ".join(f"{v:g} {k}s" for k, v in short.items())
    has = format_resources(resources)
    if local:
        raise ConfigError(
            f"{count} ray workers need {text} and this machine has {has}: lower engine.workers "
            "or engine.num_gpus_per_worker"
        )
    log.warning(
        "%d ray workers need %s and the cluster has %s now: some wait for more", count, text, has
    )


def format_resources(resources: Mapping[str, float]) -> str:
    return ", ".join(f"{resources.get(k, 0.0):g} {k}s" for k in ("CPU", "GPU"))


def death_reason(exc: BaseException) -> str:
    """Ray's first line, and its exit type where it says (``SYSTEM_ERROR``: killed, crashed, OOM)."""
    text, why = str(exc), first_line(exc).rstrip(".")
    if "Worker exit type: " in text:
        why += ", " + text.split("Worker exit type: ", 1)[1].split()[0]
    return why
