"""Planning a job: a config that cannot run is one line before any model library loads, and a
recorded spec is compared with the requested one by naming the first difference."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import OFFLINE, REPO

from img_search.pipeline.identity import task_identity
from img_search.pipeline.plan import compare_specs
from img_search.pipeline.settings import TaskSettings

#: Each case: modality, overrides (``OUT`` is the output file), where the plan must stop.
CASES = {
    "missing_output_path": ("IMAGES", ["datasets.image_folder.path=/photos"]),
    "empty_output_path": ("IMAGES", ["datasets.image_folder.path=/photos", "output_path=''"]),
    "no_model": ("IMAGES", ["datasets.image_folder.path=/photos", "output_path=OUT", "models=[]"]),
    "image_only_model_for_captions": ("CAPTIONS", ["models=efficientnet_lite0", "output_path=OUT"]),
    "remote_code_without_consent": (
        "IMAGES",
        ["models=jina_v4", "datasets.image_folder.path=/photos", "output_path=OUT"],
    ),
}

#: Run in the order of ``CASES``: the checks that need no encoder class first, so that what each
#: case imported is what the ones before it and it imported.
PLAN_CASES = """
import json, sys
from img_search.api.jobs import compose
from img_search.pipeline import modalities
from img_search.pipeline.plan import plan_job
from img_search.pipeline.settings import ConfigError
LIBRARIES = ("torch", "transformers", "open_clip", "timm", "datasets")
seen = {}
for name, (modality, args) in json.loads(sys.argv[1]).items():
    modality = getattr(modalities, modality)
    cfg = compose(modality.config_name, args)
    try:
        plan_job(cfg, modality, modality.dataset_specs(cfg))
        error = None
    except ConfigError as exc:
        error = str(exc)
    seen[name] = {"error": error, "imported": [m for m in LIBRARIES if m in sys.modules]}
print(json.dumps(seen))
"""


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> dict[str, dict]:
    """What planning each case raised, and which model libraries were imported by then."""
    out = str(tmp_path_factory.mktemp("plan") / "out.parquet")
    cases = {
        name: (modality, [a.replace("=OUT", f"={out}") for a in args])
        for name, (modality, args) in CASES.items()
    }
    ran = subprocess.run(
        [sys.executable, "-c", PLAN_CASES, json.dumps(cases)],
        cwd=REPO,
        env={**os.environ, **OFFLINE},
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    return json.loads(ran.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    ("case", "line"),
    [
        ("missing_output_path", "missing value(s): output_path; set on the command line"),
        ("empty_output_path", "output_path is not set: add output_path=<file.parquet>"),
        ("no_model", "no model selected: add models=<name> (or models=[a,b])"),
    ],
)
def test_plan_refuses_an_unrunnable_config_in_one_line_before_torch_is_imported(
    planned, case, line
):
    assert planned[case]["error"].startswith(line)
    assert "\n" not in planned[case]["error"]
    assert planned[case]["imported"] == []


@pytest.mark.parametrize(
    ("case", "line"),
    [
        ("image_only_model_for_captions", "model efficientnet_lite0 (efficientnet_lite0) cannot "),
        ("remote_code_without_consent", "model jina_v4 (jina_v4, checkpoint jinaai/jina-embed"),
    ],
)
def test_plan_refuses_an_encoder_it_cannot_run_in_one_line_before_any_model_library_loads(
    planned, case, line
):
    """The encoder classes import torch (``embedding/__init__``), but no model library is loaded."""
    error = planned[case]["error"]
    assert error.startswith(line) and "\n" not in error
    if case == "image_only_model_for_captions":
        assert error.endswith("cannot embed captions")
    else:
        assert "add trust_remote_code=true" in error
    assert planned[case]["imported"] == ["torch"]


def spec(**changes) -> dict:
    """A recorded image job of two models and two datasets, with ``changes`` made to it."""
    base = {
        "kind": "image",
        "tasks": task_identity(TaskSettings()),
        "models": {"clip": {"dim": 512, "model": "clip"}, "siglip": {"dim": 768}},
        "datasets": {"photos": {"path": "/photos"}, "flickr": {"split": "test"}},
    }
    for key, value in changes.items():
        group, _, name = key.partition("__")
        base[group] = {**base[group], name: value} if name else value
    return base


PAIRS = [("clip", "photos"), ("clip", "flickr"), ("siglip", "photos"), ("siglip", "flickr")]


def test_compare_specs_of_the_same_job_finds_no_conflict_and_no_new_pairs():
    same = compare_specs(spec(), PAIRS, spec(), list(reversed(PAIRS)))
    assert (same.conflict, same.new_pairs, same.missing_pairs) == (None, [], [])


def test_compare_specs_names_the_first_difference_with_both_values():
    changed = spec(models__clip={"dim": 256, "model": "clip-b"}, datasets__photos={"path": "/p"})
    assert (
        compare_specs(spec(), PAIRS, changed, PAIRS).conflict
        == "models.clip.dim: 512 then, 256 now"
    )
    precision = spec(tasks={**task_identity(TaskSettings()), "precision": "bf16"})
    assert compare_specs(spec(), PAIRS, precision, PAIRS).conflict == (
        "tasks.precision: 'fp32' then, 'bf16' now"
    )
    assert compare_specs(spec(), PAIRS, spec(kind="caption"), PAIRS).conflict == (
        "kind: 'image' then, 'caption' now"
    )
    assert compare_specs(spec(), PAIRS, spec(datasets__flickr={}), PAIRS).conflict == (
        "datasets.flickr.split: 'test' then, None now"
    )


def test_compare_specs_a_spec_recorded_before_tasks_takes_their_defaults():
    old = {key: value for key, value in spec().items() if key != "tasks"}
    assert compare_specs(old, PAIRS, spec(), PAIRS).conflict is None
    fp16 = spec(tasks={**task_identity(TaskSettings()), "output_dtype": "float16"})
    assert compare_specs({**old, "output_dtype": "float16"}, PAIRS, fp16, PAIRS).conflict is None


def test_compare_specs_added_and_left_out_pairs_are_not_conflicts():
    requested = spec(models__vit={"dim": 384})
    wanted = [("vit", "photos"), ("clip", "photos"), ("vit", "flickr")]
    comparison = compare_specs(spec(), PAIRS, requested, wanted)
    assert comparison.conflict is None
    assert comparison.new_pairs == [("vit", "photos"), ("vit", "flickr")]  # in the order asked
    assert comparison.missing_pairs == [
        ("clip", "flickr"),
        ("siglip", "flickr"),
        ("siglip", "photos"),
    ]
