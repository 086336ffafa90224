"""``img-search report``: two tiny models over the sample photos and captions, checked against the
single-task commands, and the folder a paper takes its table and figures from."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from conftest import run_module
from omegaconf import OmegaConf
from test_evaluate import assert_png_drawn

from img_search.eval.references import FILE_COLUMNS
from img_search.eval.report import Run, rows_of
from img_search.eval.report_markdown import markdown, md_cell
from img_search.store.selection import selection_info

QUERIES = [
    ("1", "an astronaut in a flight suit", "Appearance", "People"),
    ("2", "a cat with green eyes", "Species", "Mammals"),
    ("3", "space and stars", "Context", "Sky"),
    ("4", "a cup of coffee", "Context", "Food"),
]
ANNOTATIONS = [
    ("1", "astronaut.jpg"),
    ("2", "chelsea.jpg"),
    ("3", "hubble_deep_field.jpg"),
    ("3", "rocket.jpg"),
    ("4", "coffee.jpg"),
    ("4", "not_in_the_table.jpg"),
]


def published_line(checkpoint: str) -> list[str]:
    """A line of a references file: the columns of FILE_COLUMNS, then a note."""
    return [
        checkpoint,
        "retrieval",
        "text_to_image_R@1",
        "0.125",
        "A paper, Table 2",
        "https://example.org/paper",
        "Tiny CLIP",
        "1k test split",
    ]


@pytest.fixture(scope="module")
def report(sample_tables, tmp_path_factory):
    """The report over CLIP and SigLIP tables: retrieval, INQUIRE-Fullrank (on the photos) and ANN."""
    root = tmp_path_factory.mktemp("report")
    with (root / "queries.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["query_id", "query_text", "supercategory", "iconic_group"])
        writer.writerows(QUERIES)
    with (root / "annotations.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("query_id", "image_path"), *ANNOTATIONS])
    tables = {model: sample_tables(model) for model in ("clip", "siglip")}
    checkpoint = selection_info(tables["clip"]["images"], None, None).identity["checkpoint"]
    with (root / "published.csv").open("w", newline="") as handle:  # a user's copy of a paper
        writer = csv.writer(handle)
        writer.writerow([*FILE_COLUMNS, "note"])
        writer.writerow(published_line(checkpoint))
    runs = ",".join(f"{{images:{t['images']},captions:{t['captions']}}}" for t in tables.values())
    options = {
        "fullrank": [
            f"inquire_fullrank.queries={root / 'queries.csv'}",
            f"inquire_fullrank.annotations={root / 'annotations.csv'}",
            "inquire_fullrank.k=3",
        ],
        "ann": ["indexes=[faiss_hnsw]", "ann.k=3", "ann.single_seconds=0.05"],
    }
    out = root / "out"
    result = run_module(
        "img_search.search.report",
        f"runs=[{runs}]",
        "task=[retrieval,inquire_fullrank,ann]",
        *options["fullrank"],
        *options["ann"],
        f"references={root / 'published.csv'}",
        f"output={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {"out": out, "tables": tables, "options": options, "result": result, "root": root}


def test_the_folder_holds_csv_json_markdown_and_figures(report):
    out = report["out"]
    assert sorted(p.name for p in out.iterdir()) == [
        "ann_recall_vs_qps.png",
        "inquire_fullrank_supercategory.png",
        "recall_at_k.png",
        "report.md",
        "results.csv",
        "results.json",
    ]
    for figure in out.glob("*.png"):
        assert_png_drawn(figure)
    rows = list(csv.DictReader((out / "results.csv").open()))
    saved = json.loads((out / "results.json").read_text())
    assert len(rows) == len(saved["rows"])
    for row, kept in zip(rows, saved["rows"], strict=True):
        assert float(row["value"]) == kept["value"] and row["metric"] == kept["metric"]
    assert {r["run"] for r in rows} == {"clip", "siglip"}
    assert {r["task"] for r in rows} == {"retrieval", "inquire_fullrank", "ann"}
    assert [run["name"] for run in saved["runs"]] == ["clip", "siglip"]
    text = (out / "report.md").read_text()
    assert "| task | split | metric | clip | siglip |" in text
    assert "**" in text and "![Recall@K](recall_at_k.png)" in text
    assert "open_clip" in text and "INQUIRE" in text  # the sources, named
    # the user's references file: its number next to the run whose table records the checkpoint
    published = [r for r in rows if r["reference"]]
    assert [(r["run"], r["metric"], float(r["reference"])) for r in published] == [
        ("clip", "text_to_image_R@1", 0.125)
    ]
    assert published[0]["reference_source"] == "A paper, Table 2"
    assert "| task | split | metric | clip | siglip | clip: *published* |" in text
    line = next(x for x in text.splitlines() if x.startswith("| retrieval |  | text_to_image_R@1"))
    assert line.endswith("| 12.50 |")
    assert (
        "- **A paper, Table 2**: <https://example.org/paper> (used above). "
        + md_cell(f"given in {report['root'] / 'published.csv'}, not checked here; 1k test split")
        in text
    )
    assert "## INQUIRE-Fullrank AP@3 by supercategory" in text
    printed = report["result"]
    assert "2 runs" in printed.stdout and "text_to_image_R@1" in printed.stdout
    assert "report:" in printed.stderr or "report " in printed.stderr  # the overall progress bar


def values(rows, run, task, group="all"):
    return {
        r["metric"]: float(r["value"])
        for r in rows
        if r["run"] == run and r["task"] == task and r["group"] == group
    }


def test_the_numbers_are_the_single_task_commands(report):
    rows = list(csv.DictReader((report["out"] / "results.csv").open()))
    for model, tables in report["tables"].items():
        retrieval = evaluate(
            "task=retrieval", f"images={tables['images']}", f"captions={tables['captions']}"
        )
        got = values(rows, model, "retrieval")
        assert got == {k: v for k, v in retrieval.items() if "_R@" in k} and len(got) == 6
        fullrank = evaluate(
            "task=inquire_fullrank", f"images={tables['images']}", *report["options"]["fullrank"]
        )
        got = values(rows, model, "inquire_fullrank")
        assert got == {m: fullrank[m] for m in ("AP@3", "nDCG@3", "MRR", "precision@3", "recall@3")}
        for name, means in fullrank["by_supercategory"].items():
            got = values(rows, model, "inquire_fullrank", f"supercategory={name}")
            assert got == {m: v for m, v in means.items() if m != "queries"}
        ann = evaluate("task=ann", f"ann.table={tables['images']}", *report["options"]["ann"])
        for result in ann["results"]:
            got = values(rows, model, "ann", f"index={result['name']}")
            assert got["recall@3"] == result["recall"]
            assert set(got) == {"recall@3", "build_s", "batch_qps", "single_qps", "memory_mib"}


def evaluate(*args: str) -> dict:
    result = run_module("img_search.search.evaluate", *args, "json=true")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_published_numbers_sit_next_to_a_known_checkpoint(tmp_path):
    """report.md of a run whose table records openai/clip-vit-base-patch32: open_clip's R@1."""
    tables = OmegaConf.create({"images": "images.parquet", "captions": "captions.parquet"})
    known = Run("CLIP B/32", tables, ["retrieval"], "clip", "openai/clip-vit-base-patch32")
    other = Run("mine", tables, ["retrieval"], "clip", "/my/checkpoint")
    known.results["retrieval"] = {"text_to_image_R@1": 0.5, "image_to_text_R@1": 0.7}
    other.results["retrieval"] = {"text_to_image_R@1": 0.6, "image_to_text_R@1": 0.7}
    rerank = {"queries": 2, "missing_candidates": 0, "AP": 30.0, "rerank_AP@50": 25.0}
    known.results["inquire"] = {"splits": {"test": {**rerank, "per_query": []}}}
    rows = rows_of(known) + rows_of(other)
    reference = {r["metric"]: r["reference"] for r in rows if r["run"] == "CLIP B/32"}
    assert reference == {
        "text_to_image_R@1": 0.5878,
        "image_to_text_R@1": 0.7890,
        "AP": "",  # INQUIRE's leaderboard says AP@50 and names no split: never next to ours
        "rerank_AP@50": "",
        "AP@50": 31.3,  # on a line of its own, without a value of ours
    }
    assert [(r["split"], r["metric"], r["value"]) for r in rows if r["task"] == "inquire"] == [
        ("test", "AP", 30.0),
        ("test", "rerank_AP@50", 25.0),
        ("", "AP@50", None),
    ]
    assert all(r["reference"] == "" for r in rows if r["run"] == "mine")
    text = markdown([known, other], rows, {})
    assert "| task | split | metric | CLIP B/32 | mine | CLIP B/32: *published* |" in text
    assert "| retrieval |  | text_to_image_R@1 | 50.00 | **60.00** | 58.78 |" in text
    assert "| retrieval |  | image_to_text_R@1 | **70.00** | **70.00** | 78.90 |" in text
    assert "**open_clip**" in text and "(used above)" in text
    assert "| inquire | test | rerank_AP@50 | 25.00 |  |  |" in text
    assert "| inquire |  | AP@50 |  |  | 31.30 |" in text
    assert "**inquire**: INQUIRE leaderboards" in text


def test_runs_are_checked_before_anything_runs(run_report, sample_tables, tmp_path):
    clip = sample_tables("clip")
    result = run_report(
        f"runs=[{{images:{clip['images']},captoins:{clip['captions']}}}]",
        f"output={tmp_path / 'out'}",
        expect_ok=False,
    )
    assert result.returncode == 2 and "runs[0]: unknown key captoins" in result.stderr
    result = run_report(
        f"runs=[{{images:{clip['images']}}}]",
        "task=[retrieval]",
        f"output={tmp_path / 'out'}",
        expect_ok=False,
    )
    assert result.returncode == 2 and "run clip: task retrieval needs captions=" in result.stderr
    assert not (tmp_path / "out").exists()
    result = run_report(f"output={tmp_path / 'out'}", expect_ok=False)
    assert result.returncode == 2 and "give the runs to compare" in result.stderr
    published = tmp_path / "published.csv"
    for line, said in (
        (
            ["ckpt", "retrieval", "R@1", "high", "p", "u", "m"],
            "line 2: value 'high' is not a number",
        ),
        (["ckpt", "retreival", "R@1", "1", "p", "u", "m"], "line 2: unknown task 'retreival'"),
        (["ckpt", "retrieval", "R@1", "1", "open_clip", "u", "m"], "source open_clip is the name"),
    ):
        published.write_text(",".join(FILE_COLUMNS) + "\n" + ",".join(line) + "\n")
        result = run_report(
            f"runs=[{{images:{clip['images']}}}]",
            "task=[ann]",
            f"references={published}",
            f"output={tmp_path / 'out'}",
            expect_ok=False,
        )
        assert result.returncode == 2 and f"references={published}" in result.stderr, result.stderr
        assert said in result.stderr and len(result.stderr.strip().splitlines()) == 1
    published.write_text("checkpoint,task,value\n")
    result = run_report(f"references={published}", f"output={tmp_path / 'out'}", expect_ok=False)
    assert "no column metric, source, url, as_named; the header is checkpoint," in result.stderr
    assert not (tmp_path / "out").exists()


def test_two_runs_of_one_model_are_told_apart(run_report, sample_tables, tmp_path):
    clip = sample_tables("clip")
    copy = tmp_path / "copy.parquet"
    copy.write_bytes(Path(clip["images"]).read_bytes())
    out = tmp_path / "out"
    printed = run_report(
        f"runs=[{{images:{clip['images']}}},{{images:{copy}}}]",
        "task=[ann]",
        *("indexes=[flat]", "ann.k=2", "ann.single_seconds=0.01"),
        f"output={out}",
        "json=true",
    )
    saved = json.loads((out / "results.json").read_text())
    assert json.loads(printed.stdout) == saved
    assert [run["name"] for run in saved["runs"]] == [
        "clip (images.parquet)",
        "clip (copy.parquet)",
    ]
    assert [r["value"] for r in saved["rows"] if r["metric"] == "recall@2"] == [1.0, 1.0]


def cells_of(line: str) -> list[str]:
    """The cells of a markdown table line: split at each ``|`` not escaped by a backslash."""
    return re.split(r"(?<!\\)((?:\\\\)*)\|", line.strip())[::2][1:-1]


def test_markdown_cells_escape_table_syntax_html_and_line_breaks():
    assert md_cell("a|b") == "a\\|b" and cells_of(f"| {md_cell('a|b')} | 1 |") == [" a\\|b ", " 1 "]
    assert md_cell("<img src=x onerror=alert(1)> & co") == (
        "&lt;img src=x onerror=alert(1)&gt; &amp; co"
    )
    assert md_cell("[click](http://x) *a* _b_ `c` ~d~ $x$") == (
        "\\[click\\](http://x) \\*a\\* \\_b\\_ \\`c\\` \\~d\\~ \\$x\\$"
    )
    assert md_cell("text_to_image_R@1") == "text_to_image_R@1"  # never emphasis: kept as typed
    assert md_cell("one\ntwo\r\nthree") == "one<br>two<br>three"
    path = md_cell("C:\\data\\|x")
    assert path == "C:\\\\data\\\\\\|x" and len(cells_of(f"| {path} | 1 |")) == 2


def test_user_text_cannot_break_the_report(run_report, sample_tables, tmp_path):
    """Run names and INQUIRE fields holding table syntax, HTML, rich markup, math text and
    formulas: the report runs (exit 0), every table line has its header's cells, results.csv
    holds no formula, the figures are drawn and the printed table shows the names as typed."""
    names = ("a|b [/x]", "=cmd $\\frac$ <i>x</i>")
    with (tmp_path / "queries.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(
            [
                ("query_id", "query_text", "supercategory", "iconic_group"),
                ("1", "an astronaut [/x]", "Appearance|People", "$\\frac$"),
                ("2", "=1+1 a cat", "<b>Species</b>", "[bold]Mammals"),
                ("3", "space\nand stars", "Context\nSky", ":smile:"),
            ]
        )
    with (tmp_path / "annotations.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("query_id", "image_path"), *ANNOTATIONS[:4]])
    images = sample_tables("clip")["images"]
    out = tmp_path / "out"
    printed = run_report(
        "runs=[" + ",".join(f"{{images:{images},name:'{name}'}}" for name in names) + "]",
        "task=[inquire_fullrank]",
        f"inquire_fullrank.queries={tmp_path / 'queries.csv'}",
        f"inquire_fullrank.annotations={tmp_path / 'annotations.csv'}",
        "inquire_fullrank.k=3",
        f"output={out}",
    )
    text = (out / "report.md").read_text()
    blocks = re.findall(r"(?m)(?:^\|.*\n)+", text)  # the tables: runs, results, two breakdowns
    assert len(blocks) == 4
    for block in blocks:
        lines = block.splitlines()
        assert [len(cells_of(line)) for line in lines] == [len(cells_of(lines[0]))] * len(lines)
    assert f"| task | split | metric | {md_cell(names[0])} | {md_cell(names[1])} |" in text
    assert "<i>" not in text and "<b>" not in text and "&lt;b&gt;Species&lt;/b&gt;" in text
    assert "| Context<br>Sky |" in text and "| Appearance\\|People |" in text
    rows = list(csv.DictReader((out / "results.csv").open(newline="", encoding="utf-8")))
    assert {row["run"] for row in rows} == {names[0], "'" + names[1]}
    for figure in out.glob("*.png"):
        assert_png_drawn(figure)
    assert (out / "inquire_fullrank_supercategory.png").exists()
    assert all(name in printed.stdout for name in names)
