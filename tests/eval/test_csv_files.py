"""CSV files in and out of an evaluation: the files a user gives are read strictly (a BOM accepted,
anything else wrong named by file and line, exit 2), and the CSV files we write never hold a
formula a spreadsheet would run; user text with rich markup prints as typed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from img_search.eval.csv_files import (
    CsvFileError,
    read_csv_rows,
    spreadsheet_safe,
    write_csv_rows,
)
from img_search.eval.references import FILE_COLUMNS, read_references

HOSTILE = [  # (query_id, query_text, supercategory, iconic_group): formulas and rich markup
    ("1", '=HYPERLINK("http://example.org/x","click")', "Appearance", "People"),
    ("2", "a cat [/x] with green eyes", "[/x]", ":smile:"),
    ("3", "+space and stars", "@Context", "-Sky"),
    ("4", "\ta cup of coffee", "Context", "[bold]Food"),
]
ANNOTATIONS = [
    ("1", "astronaut.jpg"),
    ("2", "chelsea.jpg"),
    ("3", "rocket.jpg"),
    ("4", "coffee.jpg"),
]
HEADER = ("query_id", "query_text", "supercategory", "iconic_group")


def write_rows(path: Path, rows, encoding: str = "utf-8") -> Path:
    with path.open("w", newline="", encoding=encoding) as handle:
        csv.writer(handle).writerows(rows)
    return path


@pytest.fixture
def inquire_files(tmp_path) -> dict[str, Path]:
    return {
        "queries": write_rows(tmp_path / "queries.csv", [HEADER, *HOSTILE]),
        "annotations": write_rows(
            tmp_path / "annotations.csv", [("query_id", "image_path"), *ANNOTATIONS]
        ),
    }


def fullrank(images: str, queries: Path, annotations: Path, *more: str) -> list[str]:
    return [
        "task=inquire_fullrank",
        f"images={images}",
        f"inquire_fullrank.queries={queries}",
        f"inquire_fullrank.annotations={annotations}",
        "inquire_fullrank.k=3",
        *more,
    ]


# -- reading ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "line", "said"),
    [
        (b"query_id,query_text\n1,a cat\n\n2\n", 4, "1 field where the header has 2"),
        (b"query_id,query_text\n1,a cat,extra\n", 2, "3 fields where the header has 2"),
        (
            b'query_id,query_text\n1,a cat\n2,"' + b"x" * 200_000 + b'"\n',
            3,
            "a field of more than 131,072 characters",
        ),
        (b'query_id,query_text\n1,"a cat\n' + b"2,a dog\n" * 20_000, 2, "a quote left open"),
        ("query_id,query_text\n1,a cat\n2,café\n".encode("latin-1"), 3, "not UTF-8"),
        (b"query_id,query_text\n1,a cat\n , \n", 3, "query_id, query_text left empty"),
    ],
    ids=["short", "long", "huge-field", "open-quote", "latin-1", "empty"],
)
def test_a_malformed_line_is_named_by_file_and_line(tmp_path, content, line, said):
    path = tmp_path / "queries.csv"
    path.write_bytes(content)
    with pytest.raises(CsvFileError) as caught:
        read_csv_rows(path, ("query_id", "query_text"))
    assert str(caught.value).startswith(f"{path} line {line}: ")
    assert said in str(caught.value) and "\n" not in str(caught.value)


def test_a_bom_is_read_past_and_rows_know_their_line(tmp_path):
    text = 'query_id,query_text\n1,"a cat\non two lines"\n\n2,a dog\n'
    plain = tmp_path / "plain.csv"
    plain.write_text(text, encoding="utf-8")
    excel = tmp_path / "excel.csv"
    excel.write_text(text, encoding="utf-8-sig")  # Excel's "CSV UTF-8"
    assert excel.read_bytes().startswith(b"\xef\xbb\xbf")
    rows = read_csv_rows(excel, ("query_id", "query_text"))
    assert rows == read_csv_rows(plain, ("query_id", "query_text"))
    assert rows == [
        {"query_id": "1", "query_text": "a cat\non two lines"},
        {"query_id": "2", "query_text": "a dog"},
    ]
    assert [row.line for row in rows] == [2, 5]


def test_a_references_file_names_its_bad_line(tmp_path):
    path = tmp_path / "published.csv"
    good = ["ckpt", "retrieval", "text_to_image_R@1", "0.5", "paper", "https://x.org", "m"]
    write_rows(path, [FILE_COLUMNS, good, good[:4]])
    with pytest.raises(ValueError, match=rf"^references={path} line 3: 4 fields where"):
        read_references(path, ("retrieval",))
    path.write_text(",".join(FILE_COLUMNS) + "\n" + ",".join(good) + "\n", encoding="utf-8-sig")
    sources, references = read_references(path, ("retrieval",))
    assert [r.value for r in references] == [0.5] and sources["paper"].url == "https://x.org"
    moved = [*good[:4], "paper", "https://y.org", "m"]
    write_rows(path, [FILE_COLUMNS, good, moved])
    with pytest.raises(
        ValueError, match=rf"^references={path} line 3: source 'paper' has two urls"
    ):
        read_references(path, ("retrieval",))


def test_references_of_one_source_share_its_url_and_gather_its_notes(tmp_path):
    path = tmp_path / "published.csv"
    row = ["ckpt", "retrieval", "text_to_image_R@1", "0.5", "paper", "https://x.org", "m"]
    write_rows(
        path,
        [
            [*FILE_COLUMNS, "split", "note"],
            [*row, "", "zero-shot"],
            [*row[:2], "image_to_text_R@1", "0.25", *row[4:], "test", "zero-shot"],
            [*row[:2], "text_to_image_R@5", "0.75", *row[4:], "", "Karpathy split"],
        ],
    )
    sources, references = read_references(path, ("retrieval",))
    assert [(r.metric, r.value, r.split) for r in references] == [
        ("text_to_image_R@1", 0.5, ""),
        ("image_to_text_R@1", 0.25, "test"),
        ("text_to_image_R@5", 0.75, ""),
    ]
    assert list(sources) == ["paper"] and sources["paper"].url == "https://x.org"
    assert sources["paper"].note == (
        f"given in {path}, not checked here; zero-shot; Karpathy split"
    )


# -- writing ---------------------------------------------------------------------------------


def test_cells_a_spreadsheet_would_run_are_written_as_text(tmp_path):
    risky = ["=1+1", "+1", "-cmd", "@SUM(A1)", "\tx", "\rx"]
    assert [spreadsheet_safe(text) for text in risky] == ["'" + text for text in risky]
    assert [spreadsheet_safe(v) for v in ("a=b", "", -0.5, 3, None)] == ["a=b", "", -0.5, 3, None]
    path = write_csv_rows(
        tmp_path / "out.csv",
        ["text", "value"],
        [{"text": text, "value": -1.5} for text in risky] + [{"text": "plain"}],
    )
    rows = list(csv.DictReader(path.open(newline="", encoding="utf-8")))
    assert [row["text"] for row in rows] == ["'" + text for text in risky] + ["plain"]
    assert [row["text"][1:] for row in rows[:-1]] == risky  # the text itself, after the '
    assert [row["value"] for row in rows] == ["-1.5"] * len(risky) + [""]  # numbers as they are


# -- the commands ----------------------------------------------------------------------------


def test_evaluate_writes_formulas_as_text_and_prints_markup_as_typed(
    sample_tables, inquire_files, run_evaluate, tmp_path
):
    images = sample_tables("clip")["images"]
    out = tmp_path / "fullrank.csv"
    printed = run_evaluate(*fullrank(images, *inquire_files.values(), f"output={out}"))
    rows = list(csv.DictReader(out.open(newline="", encoding="utf-8")))
    assert [row["query_id"] for row in rows] == ["1", "2", "3", "4"]
    for row, (_, text, supercategory, group) in zip(rows, HOSTILE, strict=True):
        assert row["query_text"] == spreadsheet_safe(text)
        assert row["supercategory"] == spreadsheet_safe(supercategory)
        assert row["iconic_group"] == spreadsheet_safe(group)
    assert rows[0]["query_text"] == "'" + HOSTILE[0][1] and rows[1]["query_text"] == HOSTILE[1][1]
    for typed in ("supercategory: [/x]", "iconic_group: :smile:", "iconic_group: [bold]Food"):
        assert typed in printed.stdout
    assert f"results: {out}" in printed.stdout
    # numbers stay numbers: each metric cell is the value the run computed, written as it is
    computed = json.loads(
        run_evaluate(*fullrank(images, *inquire_files.values()), "json=true").stdout
    )
    numbers = [n for n, v in computed["per_query"][0].items() if isinstance(v, (int, float))]
    assert {"AP@3", "positives", "retrieved"} <= set(numbers)
    for row, query in zip(rows, computed["per_query"], strict=True):
        assert {n: row[n] for n in numbers} == {n: str(query[n]) for n in numbers}


def test_a_bom_gives_the_same_results(sample_tables, inquire_files, run_evaluate, tmp_path):
    images = sample_tables("clip")["images"]
    excel = {name: tmp_path / f"excel_{path.name}" for name, path in inquire_files.items()}
    for name, path in inquire_files.items():
        excel[name].write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    results = []
    for files in (inquire_files, excel):
        result = run_evaluate(
            *fullrank(images, files["queries"], files["annotations"]), "json=true"
        )
        got = json.loads(result.stdout)
        del got["queries_file"], got["annotations_file"]
        results.append(got)
    assert results[0] == results[1]
    assert [q["query_text"] for q in results[1]["per_query"]] == [q[1] for q in HOSTILE]


@pytest.mark.parametrize(
    ("content", "line", "said"),
    [
        (b"query_id,query_text\n1,a cat\n2\n", 3, "1 field where the header has 2"),
        (b'query_id,query_text\n1,"' + b"x" * 140_000 + b'"\n', 2, "a field of more than"),
        ("query_id,query_text\n1,café\n".encode("latin-1"), 2, "not UTF-8"),
    ],
    ids=["short", "huge-field", "latin-1"],
)
def test_evaluate_refuses_a_malformed_line_in_one_line(
    sample_tables, inquire_files, run_evaluate, tmp_path, content, line, said
):
    queries = tmp_path / "bad.csv"
    queries.write_bytes(content)
    images = sample_tables("clip")["images"]
    result = run_evaluate(*fullrank(images, queries, inquire_files["annotations"]), expect_ok=False)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{queries} line {line}: " in lines[0] and said in lines[0]
    assert "Traceback" not in result.stderr
