"""``img_search.embed``: the command line's job from Python, the same table, resumable the same way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import OFFLINE, REPO, SAMPLE_CAPTIONS, SAMPLE_PHOTOS, cli_runner

from img_search.api.jobs import choice, hydra_value
from img_search.store import read_metadata

#: What differs between any two runs of the same job: when and by which processes.
RUN_KEYS = {"created", "run", "earlier_runs"}


def python(script: str) -> dict:
    """``script`` in a fresh interpreter, as in a notebook; its last stdout line is JSON."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={**__import__("os").environ, **OFFLINE},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_python_and_the_command_line_make_the_same_table(tiny_checkpoints, tmp_path) -> None:
    clip = str(tiny_checkpoints["clip"])
    by_cli = tmp_path / "cli.parquet"
    cli_runner("img_search.pipeline.embed")(
        "models=clip",
        f"models.clip.model_name={clip}",
        "datasets=image_folder",
        f"datasets.image_folder.path={SAMPLE_PHOTOS}",
        "tasks.cpu=true",
        "tasks.batch_size=3",
        "logging=quiet",
        f"output_path={by_cli}",
    )
    by_api = tmp_path / "api.parquet"
    script = f"""
import dataclasses, json, img_search
def run():
    summary = img_search.embed(
        {{"clip": {{"model_name": {clip!r}}}}},
        {{"image_folder": {{"path": {str(SAMPLE_PHOTOS)!r}}}}},
        {str(by_api)!r},
        tasks={{"cpu": True, "batch_size": 3}},
        logging="quiet",
    )
    return {{k: str(v) if k == "path" else v for k, v in dataclasses.asdict(summary).items()}}
first = run()
before = open({str(by_api)!r}, "rb").read()
second = run()
print(json.dumps({{"first": first, "second": second,
                  "unchanged": open({str(by_api)!r}, "rb").read() == before}}))
"""
    out = python(script)
    assert pq.read_table(by_api).equals(pq.read_table(by_cli))  # ids, names and vector bytes
    api_meta, cli_meta = read_metadata(by_api), read_metadata(by_cli)
    config = ("config", "output_path")
    for meta in (api_meta, cli_meta):
        meta[config[0]].pop(config[1])
    assert {k: v for k, v in api_meta.items() if k not in RUN_KEYS} == {
        k: v for k, v in cli_meta.items() if k not in RUN_KEYS
    }
    first, second = out["first"], out["second"]
    assert (first["finished"], first["rows"], first["errors"], first["exit_code"]) == (
        True,
        len(list(SAMPLE_PHOTOS.glob("*.jpg"))),
        0,
        0,
    )
    assert first["pairs"] == [{"model": "clip", "dataset": "image_folder", "rows": 8, "errors": 0}]
    assert second["rows"] == first["rows"] and out["unchanged"]  # done already: nothing rewritten


def test_captions_and_one_line_mistakes(tiny_checkpoints, tmp_path) -> None:
    import img_search

    with pytest.raises(ValueError, match=r"^unknown datasets option 'nope'; the options are: "):
        img_search.embed("clip", "nope", tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="one of them"):
        img_search.embed("clip", output_path=tmp_path / "x.parquet")
    out = python(
        f"""
import json, img_search
s = img_search.embed({{"clip": {{"model_name": {str(tiny_checkpoints["clip"])!r}}}}},
    text_dataset={{"captions_jsonl": {{"path": {str(SAMPLE_CAPTIONS)!r}, "name": "sample"}}}},
    output_path={str(tmp_path / "captions.parquet")!r}, tasks={{"cpu": True}}, logging="quiet")
print(json.dumps({{"rows": s.rows, "pairs": s.pairs}}))
"""
    )
    captions = pq.read_table(tmp_path / "captions.parquet")
    assert out["rows"] == captions.num_rows > 8
    assert out["pairs"][0]["dataset"] == "sample"


def test_values_reach_hydra_as_written() -> None:
    assert choice("models", "clip") == ["models=clip"]
    assert choice("models", ["clip", "siglip"]) == ["models=[clip,siglip]"]
    assert choice("datasets", {"image_folder": {"path": Path("/a b/it's")}}) == [
        "datasets=[image_folder]",
        "datasets.image_folder.path='/a b/it\\'s'",
    ]
    assert choice("text_dataset", {"captions_jsonl": {"path": "c.jsonl"}}, single=True) == [
        "text_dataset=captions_jsonl",
        "text_dataset.path='c.jsonl'",
    ]
    assert [hydra_value(v) for v in (None, True, 3, 0.5, ["a", 1])] == [
        "null",
        "true",
        "3",
        "0.5",
        "['a',1]",
    ]
