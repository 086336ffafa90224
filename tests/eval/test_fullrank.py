"""INQUIRE-Fullrank end to end: a 3,000-image gallery in iNat24's folders, the CLI against INQUIRE's definitions.

The reference is written here from the definitions: each query's top 50 by
cosine with the same text vectors (ties by lower row, as the search ranks),
then ``compute_retrieval_metrics`` as INQUIRE's ``eval_fullrank.py`` calls it
(``image_path + ".jpg" in pos_images``, ``count_pos = len(pos_images)``),
kept as given in ``test_fullrank_metrics.reference``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import built_once, cli_runner
from test_fullrank_metrics import reference

from img_search.eval.fullrank import image_keys, read_queries
from img_search.store import read_embeddings
from img_search.testing.fixtures import inat24_class_folder, write_inat24_like

K = 50
TOLERANCE = 1e-9
TEXTS = [
    "a heron standing in shallow water",
    "a red fox showing signs of mange",
    "an immature bald eagle",
    "a male mandarin duck in breeding plumage",
    "elephant with radio collar",
    "Honey Bee carrying pollen baskets",
    "a bearded dragon with an inflated beard",
    "Wolf spider carrying spiderlings on its back",
    "raccoon observed in urban setting",
    "Purple Sea Urchin",
    "common lilac with powdery mildew",
    "a rose bedeguar gall",
]
SUPERCATEGORIES = ("Appearance", "Behavior", "Context", "Species")
ICONIC_GROUPS = ("Birds", "Mammals", "Insects")
NONE_RETRIEVED = 11  # this query's positives are all outside its top 50, or missing


@pytest.fixture(scope="module")
def gallery(tiny_checkpoints, tmp_path_factory):
    """3,000 32×32 JPEGs in 30 class folders, embedded by the tiny CLIP with image_folder pointed
    at inat24/ (ids train/<class>/<file>.jpg) and at inat24/train/ (ids <class>/<file>.jpg);
    built once for all the test workers."""

    def build(root: Path) -> dict:
        paths = write_inat24_like(root / "inat24", classes=30, per_class=100)
        tables = {"inat24": root / "inat24.parquet", "train": root / "train.parquet"}
        for folder, table in (("inat24", tables["inat24"]), ("inat24/train", tables["train"])):
            cli_runner("img_search.pipeline.embed")(
                "models=clip",
                f"models.clip.model_name={tiny_checkpoints['clip']}",
                "datasets=image_folder",
                f"datasets.image_folder.path={root / folder}",
                "tasks.batch_size=256",
                "tasks.cpu=true",
                f"output_path={table}",
            )
        return {"root": str(root), "paths": list(paths), **{k: str(v) for k, v in tables.items()}}

    built = built_once(tmp_path_factory, "fullrank-gallery", build)
    return {
        "root": Path(built["root"]),
        "paths": built["paths"],
        "inat24": Path(built["inat24"]),
        "train": Path(built["train"]),
    }


@pytest.fixture(scope="module")
def benchmark(gallery, tiny_checkpoints, tmp_path_factory):
    """Queries and annotations written like INQUIRE's, with positives chosen from the true ranking:
    some in the top 50, some below it, some not in the table; one query with none retrieved."""
    from img_search.embedding import get_encoder

    table = read_embeddings(gallery["inat24"])
    assert len(table) == 3000 and set(table.ids) == set(gallery["paths"])
    encoder = get_encoder({"model": "clip", "model_name": str(tiny_checkpoints["clip"])}).load()
    text_vectors = encoder.encode_texts(TEXTS).numpy().astype(np.float32)  # one batch, as the CLI
    scores = text_vectors @ table.vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")
    rng = np.random.default_rng(13)
    queries, positives = [], {}
    for q, text in enumerate(TEXTS):
        query_id = str(300 - 7 * q)
        below = order[q, rng.choice(np.arange(K, 3000), int(rng.integers(0, 12)), replace=False)]
        if q == NONE_RETRIEVED:
            inside = []
            below = order[q, rng.choice(np.arange(K, 3000), 5, replace=False)]
        else:
            inside = order[q, rng.choice(K, int(rng.integers(1, 9)), replace=False)]
        missing = [  # not in the table: 0 to 2 per query
            f"train/{inat24_class_folder(q % 30)}/{q:08x}-{j}-gone-img.jpg" for j in range(q % 3)
        ]
        positives[query_id] = [table.ids[i] for i in [*inside, *below]] + missing
        queries.append(
            {
                "": str(q),
                "query_id": query_id,
                "query_text": text,
                "supercategory": SUPERCATEGORIES[q % 4],
                "category": f"category {q % 5}",
                "iconic_group": ICONIC_GROUPS[q % 3],
            }
        )
    root = tmp_path_factory.mktemp("inquire")  # this worker's own files (the gallery is shared)
    with (root / "inquire_queries_test.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(queries[0]))
        writer.writeheader()
        writer.writerows(queries[::-1])
    annotations = [(qid, path) for qid, paths in positives.items() for path in paths]
    annotations += [("9999", gallery["paths"][0])]  # a query of the other split: ignored
    annotations += [annotations[0]]  # a repeated pair counts once, as in the reference's set
    with (root / "inquire_annotations.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["query_id", "image_path"])
        writer.writerows(annotations)
    files = {
        "queries": str(root / "inquire_queries_test.csv"),
        "annotations": str(root / "inquire_annotations.csv"),
    }
    return {
        "files": files,
        "options": [f"inquire_fullrank.{name}={path}" for name, path in files.items()],
        "queries": {q["query_id"]: q for q in queries},
        "positives": positives,
        "ids": table.ids,
        "scores": scores,
        "order": order,
    }


def expected_rows(benchmark) -> dict[str, dict[str, float]]:
    """Per query id: INQUIRE's metrics of the top 50, in the CLI's units and names."""
    rows = {}
    in_table = set(benchmark["ids"])
    for q, query_id in enumerate(benchmark["queries"]):
        pos_images = set(benchmark["positives"][query_id])
        top = benchmark["order"][q, :K]
        y_pred = benchmark["scores"][q, top]
        y_true = np.asarray([benchmark["ids"][i] in pos_images for i in top])
        precision, recall, ap, ndcg_value, mrr = reference(y_true, y_pred, len(pos_images))
        rows[query_id] = {
            "positives": len(pos_images),
            "missing": len(pos_images - in_table),
            "retrieved": int(y_true.sum()),
            f"AP@{K}": 100 * ap,
            f"nDCG@{K}": 100 * ndcg_value,
            "MRR": mrr,
            f"precision@{K}": 100 * precision,
            f"recall@{K}": recall,
        }
    return rows


METRICS = (f"AP@{K}", f"nDCG@{K}", "MRR", f"precision@{K}", f"recall@{K}")


@pytest.mark.slow
def test_fullrank_cli_equals_the_inquire_definitions(gallery, benchmark, run_evaluate, tmp_path):
    result = run_evaluate(
        "task=inquire_fullrank", f"images={gallery['inat24']}", *benchmark["options"], "json=true"
    )
    got = json.loads(result.stdout)
    expected = expected_rows(benchmark)
    assert (got["k"], got["queries"], got["rows_searched"]) == (K, 12, 3000)
    # query file order, the INQUIRE metadata kept
    assert [r["query_id"] for r in got["per_query"]] == [str(300 - 7 * q) for q in range(12)][::-1]
    for row in got["per_query"]:
        want = expected[row["query_id"]]
        assert row["query_text"] == benchmark["queries"][row["query_id"]]["query_text"]
        assert row["iconic_group"] == benchmark["queries"][row["query_id"]]["iconic_group"]
        assert (row["positives"], row["missing"], row["retrieved"]) == (
            want["positives"],
            want["missing"],
            want["retrieved"],
        )
        for name in METRICS:
            assert row[name] == pytest.approx(want[name], abs=TOLERANCE), (row["query_id"], name)
    for name in METRICS:
        assert got[name] == pytest.approx(
            np.mean([w[name] for w in expected.values()]), abs=TOLERANCE
        )
    none = expected[str(300 - 7 * NONE_RETRIEVED)]
    assert none["retrieved"] == 0 and none[f"AP@{K}"] == 0 and none["positives"] >= 5
    assert sum(w["retrieved"] > 0 for w in expected.values()) == 11
    missing = sum(w["missing"] for w in expected.values())
    assert missing > 0 and got["positives_missing"] == missing
    assert got["positives"] == sum(w["positives"] for w in expected.values())
    assert got["positives_in_table"] == got["positives"] - missing
    assert f"{missing} of {got['positives']} annotated (query, image) pairs are not in" in (
        result.stderr
    )
    for group, values in (("supercategory", SUPERCATEGORIES), ("iconic_group", ICONIC_GROUPS)):
        assert sorted(got[f"by_{group}"]) == sorted(values)
        for value, means in got[f"by_{group}"].items():
            members = [
                expected[qid] for qid, q in benchmark["queries"].items() if q[group] == value
            ]
            assert means["queries"] == len(members)
            assert means[f"AP@{K}"] == pytest.approx(
                np.mean([m[f"AP@{K}"] for m in members]), abs=TOLERANCE
            )
    assert "exact top-50" in result.stderr  # the search's progress


def test_both_ways_of_pointing_the_folder_give_the_same_numbers(
    gallery, benchmark, run_evaluate, tmp_path
):
    import img_search

    runs = {}
    for name in ("inat24", "train"):
        out = tmp_path / f"{name}.csv"
        printed = run_evaluate(
            "task=inquire_fullrank", f"images={gallery[name]}", *benchmark["options"], "json=true"
        )
        run_evaluate(
            "task=inquire_fullrank",
            f"images={gallery[name]}",
            *benchmark["options"],
            f"output={out}",
        )
        runs[name] = json.loads(printed.stdout)
        assert runs[name].pop("images") == str(gallery[name])
        rows = list(csv.DictReader(out.open()))
        assert [r["query_id"] for r in rows] == [r["query_id"] for r in runs[name]["per_query"]]
        for row, want in zip(rows, runs[name]["per_query"], strict=True):
            assert {m: float(row[m]) for m in METRICS} == {m: want[m] for m in METRICS}
            assert int(row["missing"]) == want["missing"]
    assert runs["inat24"] == runs["train"]
    assert {r["query_id"] for r in runs["train"]["per_query"]} == set(benchmark["queries"])
    from_python = img_search.open_table(gallery["train"]).evaluate(
        "inquire_fullrank",
        inquire_fullrank={**benchmark["files"], "k": K},
        device="cpu",
    )
    from_python.pop("images")
    assert from_python == runs["train"]


def test_table_ids_and_annotations_meet_by_class_folder_and_file_stem():
    assert image_keys(
        [
            "train/00042_Animalia/ab12.jpg",
            "00042_Animalia/ab12.JPG",
            "00042_Animalia/ab12",
            "inat24/train/00042_Animalia/ab12.jpeg",
            "astronaut.jpg",
            "a.b/c.d.png",
        ]
    ) == ["00042_Animalia/ab12"] * 4 + ["astronaut", "a.b/c.d"]


def test_files_without_the_columns_are_one_clear_error(tmp_path, run_evaluate, demo_tables):
    queries, annotations = tmp_path / "q.csv", tmp_path / "a.csv"
    queries.write_text("id,text\n1,a cat\n")
    annotations.write_text("query_id,image_path\n1,chelsea.jpg\n")
    with pytest.raises(
        ValueError, match=r"q.csv has no column query_id, query_text \(it has id, text\)"
    ):
        read_queries(queries, annotations)
    result = run_evaluate(
        "task=inquire_fullrank", f"images={demo_tables['images']}", expect_ok=False
    )
    assert result.returncode == 2
    assert "task=inquire_fullrank needs inquire_fullrank.queries=<inquire_queries_test.csv>" in (
        result.stderr
    )
