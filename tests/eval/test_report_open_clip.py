"""Published numbers of the open_clip checkpoints in ``img-search report``: INQUIRE's leaderboards
next to a run only at the same metric (AP@50), on a line of their own otherwise; open_clip's
Flickr30k R@1 of the LAION and DFN checkpoints."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from conftest import SAMPLE_PHOTOS, built_once, run_module
from omegaconf import OmegaConf

from img_search.eval.references import REFERENCES, SOURCES
from img_search.eval.report import Run, markdown, rows_of
from img_search.testing.fixtures import synthetic_image

#: Queries over the sample photos, in INQUIRE's supercategories.
QUERIES = [
    ("1", "an astronaut in a flight suit", "Appearance", "People"),
    ("2", "a cat with green eyes", "Species", "Mammals"),
    ("3", "space and stars", "Context", "Sky"),
]
ANNOTATIONS = [("1", "astronaut.jpg"), ("2", "chelsea.jpg"), ("3", "rocket.jpg")]
BIOCLIP = "hf-hub:imageomics/bioclip"
DFN = "hf-hub:apple/DFN5B-CLIP-ViT-H-14-378"


@pytest.fixture(scope="module")
def bioclip_table(tiny_open_clip, tmp_path_factory) -> dict[str, str]:
    """The sample photos and 50 others embedded by ``models=bioclip``, its Hub id served from a Hub cache that
    holds the tiny open_clip model under that name: the table records hf-hub:imageomics/bioclip."""
    from img_search.testing.open_clip_checkpoint import put_in_hub_cache

    def build(root: Path) -> dict[str, str]:
        put_in_hub_cache(tiny_open_clip, root / "hub", "imageomics/bioclip")
        photos = root / "photos"  # the sample photos among others: more than the top 50
        shutil.copytree(SAMPLE_PHOTOS, photos)
        for number in range(50):
            synthetic_image(number, (40, 30)).save(photos / f"other_{number}.png")
        with (root / "queries.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["query_id", "query_text", "supercategory", "iconic_group"])
            writer.writerows(QUERIES)
        with (root / "annotations.csv").open("w", newline="") as handle:
            csv.writer(handle).writerows([("query_id", "image_path"), *ANNOTATIONS])
        result = run_module(
            "img_search.pipeline.embed",
            "models=bioclip",
            "datasets=image_folder",
            f"datasets.image_folder.path={photos}",
            f"output_path={root / 'photos.parquet'}",
            env={"HF_HUB_CACHE": str(root / "hub")},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return {"root": str(root), "images": str(root / "photos.parquet")}

    return built_once(tmp_path_factory, "bioclip-table", build)


@pytest.mark.slow
def test_a_bioclip_table_shows_inquires_leaderboard_with_its_source(bioclip_table, tmp_path):
    root = Path(bioclip_table["root"])
    result = run_module(
        "img_search.search.report",
        f"runs=[{{images:{bioclip_table['images']}}}]",
        "task=[inquire_fullrank]",
        f"inquire_fullrank.queries={root / 'queries.csv'}",
        f"inquire_fullrank.annotations={root / 'annotations.csv'}",
        f"output={tmp_path}",
        env={"HF_HUB_CACHE": str(root / "hub")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    published = {(r["group"], r["metric"]): r for r in rows if r["reference"]}
    assert {key: float(r["reference"]) for key, r in published.items()} == {
        ("all", "AP@50"): 3.6,
        ("supercategory=Appearance", "AP@50"): 2.3,
        ("supercategory=Context", "AP@50"): 2.2,
        ("supercategory=Species", "AP@50"): 21.1,
    }
    assert {r["checkpoint"] for r in rows} == {BIOCLIP}
    assert {r["reference_source"] for r in published.values()} == {"inquire"}
    ours = float(published["all", "AP@50"]["value"])
    text = (tmp_path / "report.md").read_text()
    assert f"| bioclip | bioclip | {BIOCLIP} |" in text
    assert "| task | split | metric | bioclip | bioclip: *published* |" in text
    assert f"| inquire_fullrank |  | AP@50 | {ours:.2f} | 3.60 |" in text
    assert "| group | bioclip | bioclip: *published* |" in text  # by supercategory
    assert (
        "- **inquire**: INQUIRE leaderboards (inquire-benchmark.github.io, app/page.js of "
        "inquire-benchmark/inquire-benchmark.github.io), <https://inquire-benchmark.github.io/> "
        "(used above). The Fullrank and Rerank leaderboards of the INQUIRE project page, whose "
        "tables have not changed since June 2024; the page reports AP@50" in text
    )
    assert "names no split" in text


def fullrank_run(checkpoint: str, k: int, ours: float) -> Run:
    tables = OmegaConf.create({"images": "inat24.parquet", "captions": None})
    run = Run("DFN", tables, ["inquire_fullrank"], "dfn5b_h14_378", checkpoint)
    metrics = {f"AP@{k}": ours, "MRR": 0.5}
    by = {"Species": {"queries": 2, **metrics}}
    run.results["inquire_fullrank"] = {
        **metrics,
        "per_query": [{"query_id": "1", **metrics}],
        "by_supercategory": by,
        "by_iconic_group": {},
    }
    return run


def test_inquires_ap_at_50_never_sits_next_to_another_k():
    at_50 = rows_of(fullrank_run(DFN, 50, 30.0))
    assert [(r["group"], r["metric"], r["value"], r["reference"]) for r in at_50] == [
        ("all", "AP@50", 30.0, 35.6),
        ("all", "MRR", 0.5, ""),
        ("supercategory=Species", "AP@50", 30.0, 52.7),
        ("supercategory=Species", "MRR", 0.5, ""),
    ]
    at_100 = rows_of(fullrank_run(DFN, 100, 40.0))
    assert [(r["group"], r["metric"], r["value"], r["reference"]) for r in at_100] == [
        ("all", "AP@100", 40.0, ""),
        ("all", "MRR", 0.5, ""),
        ("supercategory=Species", "AP@100", 40.0, ""),
        ("supercategory=Species", "MRR", 0.5, ""),
        ("all", "AP@50", None, 35.6),  # the page's number under the page's metric, alone
    ]
    text = markdown([fullrank_run(DFN, 100, 40.0)], at_100, {})
    assert "| inquire_fullrank |  | AP@100 | 40.00 |  |" in text
    assert "| inquire_fullrank |  | AP@50 |  | 35.60 |" in text
    assert rows_of(fullrank_run("/my/dfn", 50, 30.0))[0]["reference"] == ""  # a local copy


def test_open_clips_flickr_numbers_of_the_laion_and_dfn_checkpoints():
    flickr = {
        (r.checkpoint, r.metric): r.value
        for r in REFERENCES
        if r.task == "retrieval" and r.checkpoint.startswith("hf-hub:")
    }
    assert flickr == {
        ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "text_to_image_R@1"): 0.6678,
        ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "image_to_text_R@1"): 0.8410,
        (DFN, "text_to_image_R@1"): 0.8202,
        (DFN, "image_to_text_R@1"): 0.9400,
    }
    assert {r.source for r in REFERENCES} == set(SOURCES)
