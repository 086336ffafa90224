"""Every option of the composed configs either changes the job identity or is on the one list of
options that say where and how fast a job runs (``img_search/pipeline/identity.py``).

Each option of ``embed`` and ``embed_text`` — the top level, ``tasks``,
``engine``, ``logging``, and every option of every file of the ``models``,
``datasets`` and ``text_dataset`` groups — is given another value; the job
is planned again (nothing loaded), and its spec's fingerprint must change,
unless the option is on ``RUNTIME_OPTIONS``, where it must not. A new option
fails here until it is classified.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLE_CAPTIONS, SAMPLE_PHOTOS
from omegaconf import DictConfig, ListConfig, OmegaConf

import img_search.config
from img_search.api.jobs import compose
from img_search.pipeline.identity import IDENTITY_TASK_OPTIONS, RUNTIME_OPTIONS, is_runtime
from img_search.pipeline.modalities import CAPTIONS, IMAGES, image_dataset_specs, text_dataset_specs
from img_search.pipeline.plan import plan_job, spec_fingerprint
from img_search.pipeline.settings import ConfigError

CONFIG = Path(img_search.config.__file__).parent
ENTRIES = {
    "embed_config": (IMAGES, image_dataset_specs),
    "embed_text_config": (CAPTIONS, text_dataset_specs),
}
#: Where the default of an option is no value, or a value the generic rules cannot vary.
ALTERNATIVES: dict[str, Any] = {
    "tasks.precision": "bf16",
    "tasks.output_dtype": "float16",
    "tasks.decode": "gpu",
    "tasks.shard_size": 8,
    "models.jina_v4.task": "text-matching",
    "models.jina_v4.prompt_name": "passage",
    "models.jina_v4.truncate_dim": 128,
    "models.minilm.max_seq_length": 16,
    "datasets.hf_images.id_transform": "stem",
    "text_dataset.on_error": "fail",
    "text_dataset.encoding": "latin-1",
    "text_dataset.caption_key": "json:caption",
    "engine.workers": 2,
    "models.simulated.jitter": 0.5,
    "datasets.flickr30k.ids_file": str(SAMPLE_CAPTIONS),  # (any file that is there)
    "text_dataset.ids_file": str(SAMPLE_CAPTIONS),
}
#: The keys that pick a spec's class: recorded in the spec as they are (``model: clip``).
CLASS_KEYS = {"model", "dataset"}
#: The groups whose options are the specs of models and datasets, walked file by file.
SPEC_GROUPS = ("models.", "datasets.", "text_dataset.")


def composed(config: str, overrides: list[str]) -> DictConfig:
    return compose(config, overrides)


def fingerprint(config: str, cfg: DictConfig) -> str:
    modality, specs = ENTRIES[config]
    return spec_fingerprint(plan_job(cfg, modality, specs(cfg)).spec())


def leaves(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in node.items_ex(resolve=False) if isinstance(node, DictConfig) else []:
        path = f"{where}.{key}" if where else str(key)
        if isinstance(value, DictConfig):
            yield from leaves(value, path)
        else:
            yield path, OmegaConf.to_container(value) if isinstance(value, ListConfig) else value


def other_values(path: str, value: Any) -> list[Any]:
    if path in ALTERNATIVES:
        return [ALTERNATIVES[path]]
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1]
    if isinstance(value, float):
        return [value * 2 + 1]
    if isinstance(value, str):
        return [f"{value}-other"]
    if isinstance(value, list):
        return [[*value, f"{value[-1] if value else 'x'}-other"], value[:-1]]
    return ["other", 1]


def varied(config: str, cfg: DictConfig, path: str, value: Any) -> str:
    """The fingerprint with ``path`` set to another value."""
    tried = []
    for other in other_values(path, value):
        changed = copy.deepcopy(cfg)
        try:
            OmegaConf.update(changed, path, other, merge=False)
            return fingerprint(config, changed)
        except (ConfigError, ValueError, TypeError, OSError) as exc:
            tried.append(f"{other!r}: {exc}")
    pytest.fail(
        f"{path}: no other value plans a job ({'; '.join(tried)}); add one to ALTERNATIVES in "
        f"{Path(__file__).name}"
    )


def audit(config: str, overrides: list[str], walked: Callable[[str], bool]) -> None:
    """Fail with each ``walked`` option that is misclassified, and what to do about it."""
    cfg = composed(config, overrides)
    base = fingerprint(config, cfg)
    wrong = []
    for path, value in leaves(cfg):
        if not walked(path):
            continue
        if path.rsplit(".", 1)[-1] in CLASS_KEYS:
            assert value in class_names(config, cfg), path
            continue
        changes = varied(config, cfg, path, value) != base
        group, _, option = path.partition(".")
        if is_runtime(path):
            if changes:
                wrong.append(f"{path} is on RUNTIME_OPTIONS but changes the job identity")
        elif group == "tasks" and option not in IDENTITY_TASK_OPTIONS:
            wrong.append(
                f"{path} is not classified: add it to IDENTITY_TASK_OPTIONS (it changes which rows "
                "exist or their vectors) or to RUNTIME_OPTIONS (where and how fast the job runs), "
                "with the reason, in img_search/pipeline/identity.py"
            )
        elif not changes:
            wrong.append(
                f"{path} changes neither the job identity nor is it on RUNTIME_OPTIONS: classify it "
                "in img_search/pipeline/identity.py (RUNTIME_OPTIONS, with the reason), or make it "
                "part of the spec"
            )
    assert not wrong, "\n".join(wrong)


def class_names(config: str, cfg: DictConfig) -> set[str]:
    """The encoder and dataset classes the job's spec records (``model:`` / ``dataset:``)."""
    modality, specs = ENTRIES[config]
    spec = plan_job(cfg, modality, specs(cfg)).spec()
    models = {m["model"] for m in spec["models"].values()}
    return models | {d["dataset"] for d in spec["datasets"].values()}


def group_files(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG / group).glob("*.yaml"))


BASE = {
    "embed_config": [
        "models=simulated",
        "datasets=image_folder",
        f"datasets.image_folder.path={SAMPLE_PHOTOS}",
        "output_path=/tmp/audit.parquet",
    ],
    "embed_text_config": [
        "models=minilm",
        "text_dataset=captions_jsonl",
        f"text_dataset.path={SAMPLE_CAPTIONS}",
        "output_path=/tmp/audit.parquet",
    ],
}
#: What the ``???`` of each file of a group is filled with.
REQUIRED = {
    "hf_images": ["datasets.hf_images.path=/data/images.parquet"],
    "image_folder": [f"datasets.image_folder.path={SAMPLE_PHOTOS}"],
    "webdataset": ["datasets.webdataset.urls=/data/shards"],
    "captions_jsonl": [f"text_dataset.path={SAMPLE_CAPTIONS}"],
    "webdataset_captions": ["text_dataset.urls=/data/shards"],
}


@pytest.mark.parametrize("config", list(ENTRIES))
def test_every_option_outside_models_and_datasets_is_identity_or_runtime(config):
    """The top level, ``tasks``, ``engine``, ``logging`` and any group added later."""
    audit(config, BASE[config], lambda p: not p.startswith(SPEC_GROUPS))


@pytest.mark.parametrize("model", group_files("models"))
def test_every_option_of_every_model_changes_the_identity_or_is_runtime(model):
    config = "embed_config"
    overrides = [*BASE[config][1:], f"models={model}", "trust_remote_code=true"]
    try:
        fingerprint(config, composed(config, overrides))
    except ConfigError:  # a text-only model
        config = "embed_text_config"
        overrides = [*BASE[config][1:], f"models={model}", "trust_remote_code=true"]
    audit(config, overrides, lambda p: p.startswith(f"models.{model}."))


@pytest.mark.parametrize(
    ("config", "dataset"),
    [("embed_config", d) for d in group_files("datasets")]
    + [("embed_text_config", d) for d in group_files("text_dataset")],
)
def test_every_option_of_every_dataset_changes_the_identity_or_is_runtime(config, dataset):
    group = "datasets" if config == "embed_config" else "text_dataset"
    overrides = [BASE[config][0], f"{group}={dataset}", *REQUIRED.get(dataset, [])]
    overrides.append("output_path=/tmp/audit.parquet")
    prefix = f"datasets.{dataset}." if group == "datasets" else "text_dataset."
    audit(config, overrides, lambda p: p.startswith(prefix))


def test_every_runtime_entry_names_options_that_exist_and_says_why():
    """No stale entry: each pattern matches an option of some composed config, with a reason."""
    options = set()
    for config, overrides in BASE.items():
        options |= {path for path, _ in leaves(composed(config, overrides))}
    for model in group_files("models"):
        options |= {p for p, _ in leaves(composed("embed_config", [f"models={model}"]))}
    for pattern, why in RUNTIME_OPTIONS.items():
        assert len(why) > 10, pattern
        assert any(is_runtime(o) and _matches(o, pattern) for o in options), pattern
    assert not set(IDENTITY_TASK_OPTIONS) & {p.removeprefix("tasks.") for p in RUNTIME_OPTIONS}


def _matches(option: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(option, pattern)
