"""A Milvus collection holding one (model, dataset) of a table, and keeping it in step with the table.

A collection holds ``id`` (primary key), ``model_name``, ``dataset_name``,
``vector``, and for caption tables ``image_id`` and ``caption``. Its
properties record the model identity and the layout (dimension, fields,
metric, index): a sync for another model or layout drops and recreates it;
otherwise a sync upserts only the ids the collection lacks and deletes those
the table no longer has, so a rerun after a crash (fail point
``milvus_batch``) ends with each id exactly once. A collection without
img_search's properties is someone else's, and is left as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from img_search.faults import fail_point
from img_search.search.milvus.connection import MilvusError, is_lite
from img_search.search.milvus.filters import Filter, id_filter
from img_search.store import TableLayout

log = logging.getLogger(__name__)

VECTOR = "vector"
#: Scalar fields and their VARCHAR max_length (bytes); caption tables add the last two.
MAX_LENGTH = {
    "id": 2048,
    "model_name": 256,
    "dataset_name": 256,
    "image_id": 2048,
    "caption": 65535,
}
IDENTITY, LAYOUT = "img_search.identity", "img_search.layout"
#: Ids per membership query (which ids does the collection already hold?).
LOOKUP_BATCH = 1000


def collection_name(table: Path, model_name: str, dataset_name: str) -> str:
    """``<side name>_<model>_<dataset>`` in the characters Milvus allows (a hash when any were changed)."""
    wanted = f"{TableLayout(table).side_name}_{model_name}_{dataset_name}"
    name = re.sub(r"\W", "_", wanted, flags=re.ASCII)
    if not re.match(r"[A-Za-z_]", name):
        name = "c_" + name
    if name != wanted or len(name) > 255:
        name = f"{name[:200]}_{hashlib.sha1(wanted.encode()).hexdigest()[:10]}"
    return name


class Collection:
    """One collection reached through a client: the calls made the same way by whoever uses it
    (a filter passed as the server or Milvus Lite takes it, a failed call as one line)."""

    def __init__(self, client: Any, uri: str, name: str, timeout: float) -> None:
        self.client, self.uri, self.name, self.timeout = client, uri, name, timeout

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """A failed Milvus call becomes one line naming the collection and the uri."""
        from pymilvus.exceptions import MilvusException

        try:
            yield
        except MilvusException as exc:
            raise MilvusError(
                f"Milvus collection {self.name} at {self.uri}: {exc.message}"
            ) from None

    def filter_args(self, where: Filter | None) -> dict[str, Any]:
        """A server gets the template and its parameters; Milvus Lite (no templates) the quoted text."""
        if where is None:
            return {}
        if is_lite(self.uri):
            return {"filter": where.inline()}
        return {"filter": where.template, "filter_params": where.params}

    def query(self, where: Filter | None, fields: list[str], **kwargs: Any) -> list[dict]:
        return self.client.query(
            self.name,
            output_fields=fields,
            timeout=self.timeout,
            **self.filter_args(where),
            **({"filter": ""} if where is None else {}),
            **kwargs,
        )

    def count(self) -> int:
        rows = self.query(None, ["count(*)"])
        return int(rows[0]["count(*)"])

    def properties(self) -> dict[str, str] | None:
        """What the collection records (img_search's identity and layout); None: no such collection."""
        if not self.client.has_collection(self.name):
            return None
        return self.client.describe_collection(self.name).get("properties") or {}

    def load(self) -> None:
        self.client.load_collection(self.name, timeout=self.timeout)


@dataclass(frozen=True)
class CollectionRows:
    """What a collection is made to hold: each row's id and vector, the names every row shares
    (model, dataset) and, for a caption table, its caption columns."""

    ids: np.ndarray
    vectors: np.ndarray
    scalars: dict[str, str]
    captions: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def fields(self) -> list[str]:
        """The collection's text fields, in order: ``id``, the shared names, the caption columns."""
        return ["id", *self.scalars, *self.captions]


class CollectionSync:
    """Makes a collection hold exactly a table's rows, in the layout given (``dim``, ``fields``,
    ``metric``, ``index_type``, ``index_params``: recorded on the collection)."""

    def __init__(
        self, collection: Collection, layout: dict[str, Any], batch_size: int, index_wait: float
    ) -> None:
        self.collection, self.layout = collection, layout
        self.batch_size, self.index_wait = max(1, int(batch_size)), float(index_wait)

    def run(self, rows: CollectionRows, identity: dict[str, Any]) -> int:
        """Recreate the collection if its model or layout differ, else upsert only the missing ids
        and delete the ids the table lost (finite vectors: ``load_selection`` left out the
        others); wait until it is indexed. Returns how many rows it holds."""
        ids, vectors, scalars = rows.ids, rows.vectors, rows.scalars
        columns = {
            "id": _text_column("id", ids),
            **{c: _text_column(c, v) for c, v in rows.captions.items()},
        }
        for name, value in scalars.items():  # the model and dataset names: the same length check
            _text_column(name, np.array([value], dtype=object))
        target = self.collection
        with target.errors():
            created = self._ensure_collection(identity)
            todo = np.arange(len(ids)) if created else np.flatnonzero(self._missing(ids))
            self._upsert(columns, scalars, vectors, todo)
            target.client.flush(target.name)
            count = target.count()
            if count > len(ids):
                count = self._delete_except(set(columns["id"]))
            self._wait_indexed()
        return count

    def _ensure_collection(self, identity: dict[str, Any]) -> bool:
        """True when the collection was (re)created empty."""
        target, layout = self.collection, self.layout
        held = target.properties()
        if held is not None:
            if LAYOUT not in held or same_model(held, identity) is None:
                raise MilvusError(
                    f"Milvus at {target.uri} has a collection {target.name} that img_search did "
                    "not make: name another one (indexes.milvus.collection=...), it is left as it is"
                )
            why = _difference(held, layout, identity)
            if not why:
                target.load()
                return False
            log.info("Milvus collection %s at %s: %s; replacing it", target.name, target.uri, why)
            target.client.drop_collection(target.name)
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        for name in layout["fields"]:
            schema.add_field(
                name, DataType.VARCHAR, max_length=MAX_LENGTH[name], is_primary=name == "id"
            )
        schema.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=layout["dim"])
        index = target.client.prepare_index_params()
        index.add_index(
            VECTOR,
            index_type=layout["index_type"],
            metric_type=layout["metric"],
            params=layout["index_params"],
        )
        properties = {
            LAYOUT: json.dumps(layout, sort_keys=True),
            IDENTITY: json.dumps(identity, sort_keys=True, default=str),
        }
        target.client.create_collection(
            target.name,
            schema=schema,
            index_params=index,
            properties=properties,
            timeout=target.timeout,
        )
        return True

    def _missing(self, ids: np.ndarray) -> np.ndarray:
        """Which of ``ids`` the collection does not hold, asked in batches."""
        held: set[str] = set()
        for start in range(0, len(ids), LOOKUP_BATCH):
            batch = [str(i) for i in ids[start : start + LOOKUP_BATCH]]
            rows = self.collection.query(id_filter(batch), ["id"], limit=len(batch))
            held.update(row["id"] for row in rows)
        return np.fromiter((str(i) not in held for i in ids), dtype=bool, count=len(ids))

    def _upsert(
        self,
        columns: dict[str, np.ndarray],
        scalars: dict[str, str],
        vectors: np.ndarray,
        rows: np.ndarray,
    ) -> None:
        """Upsert ``rows`` in batches: the columns zipped into the row dicts pymilvus takes (its
        column path copies each float in Python; the row path hands each vector over whole)."""
        from img_search.console import make_progress

        target = self.collection
        names = [*columns, *scalars, VECTOR]
        with make_progress(enabled=len(rows) > 0) as progress:
            task = progress.add_task(f"milvus {target.name}", total=len(rows), rate="")
            started, done = time.perf_counter(), 0
            for start in range(0, len(rows), self.batch_size):
                chosen = rows[start : start + self.batch_size]
                values = [
                    *(column[chosen] for column in columns.values()),
                    *(itertools.repeat(value) for value in scalars.values()),
                    vectors[chosen],
                ]
                batch = [dict(zip(names, row, strict=False)) for row in zip(*values, strict=False)]
                target.client.upsert(target.name, batch, timeout=target.timeout)
                fail_point("milvus_batch")
                done += len(chosen)
                rate = done / max(time.perf_counter() - started, 1e-9)
                progress.update(task, completed=done, rate=f"{rate:,.0f} rows/s")
        if len(rows):
            log.info(
                "upserted %d rows into Milvus collection %s at %s",
                len(rows),
                target.name,
                target.uri,
            )

    def _delete_except(self, keep: set[str]) -> int:
        """Delete the ids the table no longer holds (read back page by page); the count after."""
        target = self.collection
        iterator = target.client.query_iterator(
            target.name, batch_size=5000, output_fields=["id"], timeout=target.timeout
        )
        gone: list[str] = []
        try:
            while page := iterator.next():
                gone.extend(row["id"] for row in page if row["id"] not in keep)
        finally:
            iterator.close()
        for start in range(0, len(gone), LOOKUP_BATCH):
            target.client.delete(
                target.name,
                **target.filter_args(id_filter(gone[start : start + LOOKUP_BATCH])),
                timeout=target.timeout,
            )
        log.info("deleted %d ids the table no longer holds from %s", len(gone), target.name)
        target.client.flush(target.name)
        return target.count()

    def _wait_indexed(self) -> None:
        """Until Milvus has indexed every row (searches meanwhile scan), at most ``index_wait`` s."""
        target = self.collection
        deadline = time.monotonic() + self.index_wait
        if is_lite(target.uri):
            self._wait_for_lite(deadline)
        while time.monotonic() < deadline:
            state = target.client.describe_index(target.name, VECTOR, timeout=target.timeout)
            if not int(state.get("pending_index_rows") or 0):
                return
            time.sleep(0.2)
        log.warning("Milvus is still indexing %s; searches scan until it is done", target.name)

    def _wait_for_lite(self, deadline: float) -> None:
        """Milvus Lite compacts and indexes in a background thread of this process that it does
        not report (``describe_index`` says done at once; searches are 4-6x slower until it is):
        wait for that thread through its engine. Only a wait: if the engine moved, no wait."""
        from milvus_lite.server_manager import server_manager_instance

        target = self.collection
        with contextlib.suppress(Exception):
            _, db, _ = server_manager_instance._servers[os.path.abspath(target.uri)]
            db.get_collection(target.name)._wait_for_bg(max(0.0, deadline - time.monotonic()))


def same_model(held: dict[str, str], identity: dict[str, Any]) -> bool | None:
    """Whether a collection's recorded identity is ``identity`` (by fingerprint where both have
    one); None when it records none."""
    try:
        recorded = json.loads(held.get(IDENTITY) or "null")
    except ValueError:
        return None
    if recorded is None:
        return None
    fingerprints = (recorded.get("fingerprint"), identity.get("fingerprint"))
    if all(fingerprints):
        return fingerprints[0] == fingerprints[1]
    return recorded == json.loads(json.dumps(identity, default=str))


def _difference(held: dict[str, str], layout: dict[str, Any], identity: dict[str, Any]) -> str:
    """Why a collection made by img_search cannot take these rows as they are ("": it can)."""
    held_layout, layout = json.loads(held[LAYOUT]), json.loads(json.dumps(layout))
    changed = [key for key in layout if held_layout.get(key) != layout[key]]
    if changed:
        return f"{', '.join(changed)} changed"
    return "" if same_model(held, identity) else "the table's vectors come from another model"


def _text_column(field: str, values: np.ndarray) -> np.ndarray:
    """Strings (None → ""), refused when longer than the field holds."""
    array = pc.fill_null(pa.array(values, pa.string()), "")
    longest = pc.max(pc.binary_length(array)).as_py() or 0
    if longest > MAX_LENGTH[field]:
        row = pc.index(pc.binary_length(array), longest).as_py()
        raise MilvusError(
            f"{field} {array[row].as_py()[:60]!r}… is {longest} bytes long; a Milvus "
            f"{field} holds at most {MAX_LENGTH[field]}"
        )
    return array.to_numpy(zero_copy_only=False)
