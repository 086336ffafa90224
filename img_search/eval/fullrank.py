"""INQUIRE-Fullrank: each query's top k over a whole image table (exact search), scored against its annotations.

The benchmark (inquire-benchmark/INQUIRE ``src/eval_fullrank.py``) ranks all
5 million iNat24 images for each of its queries, takes the top k (50) and
calls ``compute_retrieval_metrics`` (``fullrank_metrics``) with
``count_pos`` = every annotated relevant image of the query, retrieved or not.

Matching a table's ids to the annotations: INQUIRE's ``image_path`` is
``train/<class folder>/<file>.jpg``; a table made with ``datasets=image_folder``
pointed at ``inat24/`` has ids ``train/<class folder>/<file>.jpg``, pointed
at ``inat24/train/`` ids ``<class folder>/<file>.jpg``. Both are reduced to
their key, ``<class folder>/<file stem>`` (the last folder and the file name
without its extension; the name alone when there is no folder), which is
unique in iNat24: both ways of pointing the folder give the same numbers, and
the extension does not matter (the reference compares ``image_path + ".jpg"``).

Memory: the vectors are never all in memory (``search.exact.exact_top_k``
streams the table in blocks); the ids are read once more, alone, to count
which annotated images the table holds.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from img_search.eval.csv_files import CsvFileError, read_csv_rows
from img_search.eval.fullrank_metrics import fullrank_query_metrics, mean_metrics
from img_search.search.exact import exact_top_k
from img_search.store import schema as S
from img_search.store.reader import selection_batches

log = logging.getLogger(__name__)

#: The columns the breakdowns are by (from the queries file).
GROUPS = ("supercategory", "iconic_group")


@dataclass
class FullrankQuery:
    query_id: str
    text: str
    supercategory: str = ""
    category: str = ""
    iconic_group: str = ""
    positives: set[str] = field(default_factory=set)  # keys of the annotated relevant images


@dataclass
class FullrankResult:
    k: int
    rows_searched: int
    metrics: dict[str, float]  # means over the queries
    groups: dict[str, dict[str, dict[str, float]]]  # "supercategory" → name → queries + means
    per_query: list[dict[str, Any]]
    positives: int  # annotated (query, image) pairs of the evaluated queries
    positives_in_table: int
    left_out_queries: list[str]  # query ids without any annotated image

    @property
    def positives_missing(self) -> int:
        return self.positives - self.positives_in_table


def image_keys(paths: Iterable[str] | pa.Array | pa.ChunkedArray) -> list[str]:
    """``<last folder>/<file stem>`` of each path (the file stem alone when there is no folder).

    ``train/00042_Animalia/ab12.jpg`` and ``00042_Animalia/ab12.JPG`` both give
    ``00042_Animalia/ab12``.
    """
    return _key_array(paths).to_pylist()


def _key_array(paths: Iterable[str] | pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    values = paths if isinstance(paths, (pa.Array, pa.ChunkedArray)) else pa.array(list(paths))
    last_two = pc.replace_substring_regex(
        values.cast(pa.string()), r"^(?:.*/)?([^/]*/[^/]*)$", r"\1"
    )
    return pc.replace_substring_regex(last_two, r"\.[^./]*$", "")


def read_queries(queries_csv: str | os.PathLike[str], annotations_csv: str | os.PathLike[str]):
    """INQUIRE's queries file and annotations file → the queries with their positives, in file order."""
    query_rows = read_csv_rows(queries_csv, ("query_id", "query_text"))
    annotation_rows = read_csv_rows(annotations_csv, ("query_id", "image_path"))
    queries: dict[str, FullrankQuery] = {}
    first_line: dict[str, int] = {}
    for row in query_rows:
        query_id = row["query_id"].strip()
        if query_id in queries:
            raise CsvFileError(
                Path(queries_csv),
                row.line,
                f"query_id {query_id} appears twice (first on line {first_line[query_id]})",
            )
        first_line[query_id] = row.line
        queries[query_id] = FullrankQuery(
            query_id=query_id,
            text=row["query_text"],
            supercategory=row.get("supercategory", ""),
            category=row.get("category", ""),
            iconic_group=row.get("iconic_group", ""),
        )
    keys = image_keys(row["image_path"] for row in annotation_rows)
    for row, key in zip(annotation_rows, keys, strict=True):
        query = queries.get(row["query_id"].strip())
        if query is not None:  # annotations of the other split
            query.positives.add(key)
    return list(queries.values())


def keys_in_table(
    path: str | os.PathLike[str], model_name: str, dataset_name: str, wanted: set[str]
) -> Counter[str]:
    """How many rows of the selection have each of the ``wanted`` keys (ids read alone, batch by batch)."""
    found: Counter[str] = Counter()
    value_set = pa.array(sorted(wanted), pa.string())
    batches = selection_batches(path, model_name, dataset_name, columns=(S.ID,), batch_rows=65_536)
    for batch in batches:
        keys = _key_array(batch.column(0))
        found.update(keys.filter(pc.is_in(keys, value_set=value_set)).to_pylist())
    return found


def inquire_fullrank(
    path: str | os.PathLike[str],
    model_name: str,
    dataset_name: str,
    queries: Sequence[FullrankQuery],
    query_vectors: np.ndarray,
    k: int = 50,
    progress: bool = False,
) -> FullrankResult:
    """Exact top ``k`` of each query over the table, then INQUIRE's metrics of each query and their means.

    A query without any annotated image is left out (the reference divides by
    zero); an image of the top k counts once however many rows share its key.
    """
    kept, left_out = annotated_queries(queries)
    queries = [queries[i] for i in kept]
    in_table = annotated_in_table(path, model_name, dataset_name, queries)
    top = exact_top_k(path, query_vectors[kept], k, model_name, dataset_name, progress=progress)
    if top.rows.shape[1] < k:
        raise ValueError(f"k={k} but {path} holds {top.scanned} rows of {model_name}")
    top_keys = np.asarray(image_keys(top.ids.ravel()), dtype=object).reshape(top.ids.shape)
    per_query = [
        query_row(query, keys, scores, in_table)
        for query, keys, scores in zip(queries, top_keys, top.scores, strict=True)
    ]
    names = [name for name in per_query[0] if name not in QUERY_FIELDS]
    result = FullrankResult(
        k=k,
        rows_searched=top.scanned,
        metrics=mean_metrics([{n: row[n] for n in names} for row in per_query]),
        groups={group: breakdown(per_query, group, names) for group in GROUPS},
        per_query=per_query,
        positives=sum(row["positives"] for row in per_query),
        positives_in_table=sum(row["in_table"] for row in per_query),
        left_out_queries=left_out,
    )
    if result.positives_missing:
        log.warning(
            "%d of %d annotated (query, image) pairs are not in %s: they count as not retrieved",
            result.positives_missing,
            result.positives,
            path,
        )
    return result


def annotated_queries(queries: Sequence[FullrankQuery]) -> tuple[list[int], list[str]]:
    """The positions of the queries with an annotated image, and the ids of those without one
    (said in a warning); none with one is an error."""
    kept = [i for i, q in enumerate(queries) if q.positives]
    left_out = [q.query_id for q in queries if not q.positives]
    if left_out:
        log.warning(
            "%d queries have no annotated image and are left out: %s",
            len(left_out),
            ", ".join(left_out[:10]) + (" …" if len(left_out) > 10 else ""),
        )
    if not kept:
        raise ValueError("no query has an annotated image: check the annotations file's query_id")
    return kept, left_out


def annotated_in_table(
    path: str | os.PathLike[str],
    model_name: str,
    dataset_name: str,
    queries: Sequence[FullrankQuery],
) -> Counter[str]:
    """How many rows of the table have each annotated image's key (a warning when several do)."""
    annotated = set().union(*(q.positives for q in queries))
    in_table = keys_in_table(path, model_name, dataset_name, annotated)
    several = sorted(key for key, count in in_table.items() if count > 1)
    if several:
        log.warning(
            "%d annotated images match several rows of %s (e.g. %s)", len(several), path, several[0]
        )
    return in_table


def query_row(
    query: FullrankQuery, keys: np.ndarray, scores: np.ndarray, in_table: Counter[str]
) -> dict[str, Any]:
    """One query's line: its fields, its counts and its metrics over its top k (``keys``, best
    first); a key seen before in the top k is not relevant again."""
    seen: set[str] = set()
    relevant = []
    for key in keys:
        relevant.append(key in query.positives and key not in seen)
        seen.add(key)
    present = sum(1 for key in query.positives if key in in_table)
    return {
        "query_id": query.query_id,
        "query_text": query.text,
        "supercategory": query.supercategory,
        "category": query.category,
        "iconic_group": query.iconic_group,
        "positives": len(query.positives),
        "in_table": present,
        "missing": len(query.positives) - present,
        "retrieved": int(sum(relevant)),
        **fullrank_query_metrics(
            np.asarray(relevant), scores.astype(np.float64), len(query.positives)
        ),
    }


#: The per-query fields that are not metrics.
QUERY_FIELDS = (
    "query_id",
    "query_text",
    "supercategory",
    "category",
    "iconic_group",
    "positives",
    "in_table",
    "missing",
    "retrieved",
)


def breakdown(
    per_query: Sequence[dict[str, Any]], group: str, names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per value of ``group`` (sorted): its number of queries and the means of their metrics."""
    values = sorted({row[group] for row in per_query})
    if values == [""]:  # the queries file has no such column
        return {}
    out = {}
    for value in values:
        rows = [row for row in per_query if row[group] == value]
        out[value] = {
            "queries": len(rows),
            **mean_metrics([{n: r[n] for n in names} for r in rows]),
        }
    return out
