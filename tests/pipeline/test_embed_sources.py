"""Every image source through the CLI: streaming INQUIRE, a Flickr30k subset, a Parquet file."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from img_search.store import read_embeddings
from img_search.testing.fixtures import write_flickr30k_like


def clip_args(checkpoints) -> list[str]:
    return ["models=clip", f"models.clip.model_name={checkpoints['clip']}"]


def test_streaming_inquire_equals_random_access(tiny_checkpoints, inquire_dir, tmp_path, run_embed):
    root, expected_ids = inquire_dir
    tables = {}
    for streaming in ("false", "true"):
        out = tmp_path / f"stream-{streaming}.parquet"
        run_embed(
            *clip_args(tiny_checkpoints),
            "datasets=inquire",
            f"datasets.inquire.path={root}",
            f"datasets.inquire.streaming={streaming}",
            "tasks.num_workers=2",
            "tasks.batch_size=6",
            f"output_path={out}",
        )
        tables[streaming] = read_embeddings(out)
    for table in tables.values():
        assert sorted(table.ids) == sorted(expected_ids)
    a, b = tables["false"], tables["true"]
    np.testing.assert_allclose(
        a.vectors[np.argsort(a.ids)], b.vectors[np.argsort(b.ids)], atol=1e-6
    )


def test_flickr30k_subset_from_an_id_file(tiny_checkpoints, tmp_path, run_embed):
    stems = write_flickr30k_like(tmp_path / "flickr", n_images=12)
    subset = stems[1::3]
    ids_file = tmp_path / "karpathy_test.txt"
    ids_file.write_text("\n".join(subset) + "\n")
    out = tmp_path / "f30k.parquet"
    run_embed(
        *clip_args(tiny_checkpoints),
        "datasets=flickr30k",
        f"datasets.flickr30k.path={tmp_path / 'flickr'}",
        f"datasets.flickr30k.ids_file={ids_file}",
        f"output_path={out}",
    )
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == subset
    assert set(table.column("dataset_name").to_pylist()) == {"flickr30k"}


def test_hf_images_from_a_parquet_file(tiny_checkpoints, inquire_dir, tmp_path, run_embed):
    root, _ = inquire_dir
    file = sorted((root / "data").glob("test-*.parquet"))[0]
    rows = pq.read_table(file, columns=["inat24_file_name"]).column(0).to_pylist()
    out = tmp_path / "generic.parquet"
    run_embed(
        *clip_args(tiny_checkpoints),
        "datasets=hf_images",
        f"datasets.hf_images.path={file}",
        "datasets.hf_images.id_column=inat24_file_name",
        f"output_path={out}",
    )
    ids = read_embeddings(out).ids
    assert list(ids) == list(dict.fromkeys(rows))  # first occurrence wins, order kept
