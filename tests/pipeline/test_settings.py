"""The ``tasks`` and ``engine`` settings: a refused value names its key, shards are whole batches
of about 64 per listing, and loader workers fit the cores this process may use."""

from __future__ import annotations

import math

import pytest
from omegaconf import OmegaConf

from img_search.failures import ConfigError
from img_search.pipeline import settings as settings_module
from img_search.pipeline.settings import (
    LocalEngine,
    RayEngine,
    TaskSettings,
    engine_settings,
)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("batch_size", 0),
        ("num_workers", -2),
        ("prefetch_factor", 0),
        ("precision", "fp8"),
        ("output_dtype", "int8"),
        ("decode", "tpu"),
        ("shard_size", 0),
        ("commit_every_s", 0.0),
        ("lease_s", -1.0),
        ("collective_timeout_s", 0.0),
    ],
)
def test_task_settings_refuse_a_value_naming_its_key_and_the_value(key, value):
    with pytest.raises(ConfigError) as refused:
        TaskSettings.from_config({key: value})
    assert str(refused.value).startswith(f"tasks.{key} must be ")
    assert str(refused.value).endswith(f", got {value!r}")


@pytest.mark.parametrize(
    ("key", "value"),
    [("workers", 0), ("num_gpus_per_worker", -1.0), ("num_cpus_per_worker", 0.0)],
)
def test_ray_engine_refuses_a_value_naming_its_key_and_the_value(key, value):
    with pytest.raises(ConfigError) as refused:
        engine_settings({"kind": "ray", key: value})
    assert str(refused.value).startswith(f"engine.{key} must be ")
    assert str(refused.value).endswith(f", got {value!r}")


def test_unknown_options_and_engines_are_named_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown tasks option\(s\) \['part_rows'\]; known: \["):
        TaskSettings.from_config({"part_rows": 5, "batch_size": 8})
    with pytest.raises(
        ConfigError, match=r"unknown engine\.kind 'spark'; the engines are: local, ray"
    ):
        engine_settings({"kind": "spark"})
    with pytest.raises(ConfigError, match=r"^tasks\.batch_size: Value 'abc' of type 'str' could"):
        TaskSettings.from_config(OmegaConf.create({"batch_size": "abc"}))


def test_settings_from_a_composed_node_or_a_dict_take_the_defaults_for_the_rest():
    node = OmegaConf.create({"batch_size": 8, "precision": "bf16"})
    assert TaskSettings.from_config(node) == TaskSettings(batch_size=8, precision="bf16")
    assert TaskSettings.from_config(None) == TaskSettings()
    assert engine_settings(None) == LocalEngine()
    ray = engine_settings(OmegaConf.create({"kind": "ray", "workers": 3}))
    assert ray == RayEngine(workers=3)


@pytest.mark.parametrize("batch_size", [1, 32, 48, 100])
@pytest.mark.parametrize("items", [50_000, 100_000, 333_333, 640_000])
def test_shard_size_for_is_whole_batches_of_about_64_shards(items, batch_size):
    size = TaskSettings(batch_size=batch_size).shard_size_for(items)
    assert size % batch_size == 0
    assert 62 <= math.ceil(items / size) <= 64  # (a last shard may be short)


def test_shard_size_for_small_and_huge_listings_keeps_to_the_bounds_and_a_set_size_as_set():
    assert TaskSettings(batch_size=32).shard_size_for(1_000) == 256  # few items: 256 each
    assert TaskSettings(batch_size=100).shard_size_for(1_000) == 300  # whole batches
    assert TaskSettings(batch_size=32).shard_size_for(10**9) == 10_016  # at most 10,000, rounded up
    assert TaskSettings(batch_size=32, shard_size=7).shard_size_for(10**9) == 7


@pytest.mark.parametrize(
    ("device", "cores", "local_processes", "workers"),
    [
        ("cpu", 1, 1, 0),  # the model keeps its one core
        ("cpu", 8, 2, 4),  # one idle-priority worker per core of this process's share
        ("cpu", 64, 1, 8),  # at most 8
        ("cuda", 16, 2, 7),  # on GPU all but one core of the share decode
        ("cuda", 2, 4, 1),  # at least one
    ],
)
def test_loader_workers_auto_is_a_share_of_the_machine(
    monkeypatch, device, cores, local_processes, workers
):
    monkeypatch.setattr(settings_module, "usable_cores", lambda: cores)
    assert TaskSettings().loader_workers(device, local_processes) == workers


def test_loader_workers_of_an_allotment_set_count_or_cheap_items(monkeypatch):
    monkeypatch.setattr(settings_module, "usable_cores", lambda: 64)  # not what a Ray actor has
    auto = TaskSettings()
    assert auto.loader_workers("cpu", 1, cores=1) == 0
    assert auto.loader_workers("cpu", 1, cores=4) == 4
    assert auto.loader_workers("cuda", 1, cores=8) == 7
    assert auto.loader_workers("cuda", 1, cores=1) == 1
    assert auto.loader_workers("cpu", 1, heavy=False) == 0  # captions: no worker processes
    assert TaskSettings(num_workers=2).loader_workers("cpu", 1, cores=8) == 2  # as asked
    assert TaskSettings(num_workers=0).loader_workers("cuda", 1) == 0
