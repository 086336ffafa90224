"""``milvus``: an index kind whose vectors live in a Milvus collection.

The same client (``pymilvus.MilvusClient``) reaches Milvus Lite — a local
``.db`` folder, embedded, the default: the table's ``TableLayout.milvus_lite_file``
— or a Milvus server or cluster (``uri=http://host:19530``, ``token``).
Behind ``VectorIndex`` it is built, saved, reloaded, searched and benchmarked
like the other kinds; the index folder next to the table holds the ids, the
model identity and ``milvus.json`` (where the collection is), never vectors.

- A collection holds one (model, dataset) of a table: ``id`` (primary key),
  ``model_name``, ``dataset_name``, ``vector``, and for caption tables
  ``image_id`` and ``caption``. Its properties record the model identity and
  the layout (dimension, fields, metric, index): a build for another model or
  layout drops and recreates it; otherwise a build upserts only the ids the
  collection lacks and deletes those the table no longer has, so a rerun after
  a crash (fail point ``milvus_batch``) ends with each id exactly once.
- Filters (``dataset_name == "inquire"``, ``image_id in ["a", "b"]``, ``caption
  like "a dog%"``, with ``and`` / ``or`` / ``not``) are parsed here against the
  collection's fields; string literals become parameters (``filter_params``)
  for a server, and are written back quoted by this module for Milvus Lite,
  which has no templates. User text is never pasted into an expression.
- pymilvus is imported on first connection: it is an optional extra
  (``img_search[milvus]``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from img_search.faults import fail_point
from img_search.search.kinds import FilterError, VectorIndex
from img_search.store import TableLayout
from img_search.store.schema import CAPTION_COLUMNS
from img_search.store.selection import TableSelection

log = logging.getLogger(__name__)

INSTALL = "pip install 'img_search[milvus]'"
INDEX_TYPES = ("AUTOINDEX", "HNSW", "IVF_FLAT", "FLAT")
METRICS = ("IP", "COSINE")  # the same order on unit vectors; larger is closer
VECTOR = "vector"
#: Scalar fields and their VARCHAR max_length (bytes); caption tables add the last two.
MAX_LENGTH = {
    "id": 2048,
    "model_name": 256,
    "dataset_name": 256,
    "image_id": 2048,
    "caption": 65535,
}
CAPTION_FIELDS = [c for c in CAPTION_COLUMNS if c in MAX_LENGTH]
IDENTITY, LAYOUT = "img_search.identity", "img_search.layout"
#: Ids per membership query (which ids does the collection already hold?).
LOOKUP_BATCH = 1000
MAX_FILTER_CHARS = 1000
#: Milvus Lite folders this process serves, by path, with how many indexes use each.
_LITE_OPEN: Counter[str] = Counter()


class MilvusError(ValueError):
    """Milvus cannot be used as asked: not installed, unreachable, a collection gone. One line."""


# -- filters -------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\\r\n]|\\.)*"|'(?:[^'\\\r\n]|\\.)*')
      | (?P<op>==|!=|<=|>=|<|>|&&|\|\||!|\(|\)|\[|\]|,)
      | (?P<word>[A-Za-z_]\w*)
      | (?P<number>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)""",
    re.X,
)
_UNESCAPE = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
_ESCAPE = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_KEYWORDS = {"and": "and", "&&": "and", "or": "or", "||": "or", "not": "not", "!": "not"}
_COMPARE = ("==", "!=", "<", "<=", ">", ">=")


def literal(value: str) -> str:
    """A string as a Milvus expression literal, quoted and escaped."""
    return '"' + str(value).translate(_ESCAPE) + '"'


@dataclass(frozen=True)
class Filter:
    """A checked filter: field names from the collection, every literal a parameter ``{pN}``."""

    template: str
    params: dict[str, str | list[str]]

    def inline(self) -> str:
        """The expression with each parameter written as a quoted literal (for Milvus Lite)."""
        values = {
            name: "[" + ", ".join(map(literal, v)) + "]" if isinstance(v, list) else literal(v)
            for name, v in self.params.items()
        }
        return self.template.format_map(values)


def id_filter(ids: list[str]) -> Filter:
    """``id in [...]`` for any ids (pymilvus's own ``ids=`` pastes them unescaped)."""
    return Filter("id in {p0}", {"p0": [str(i) for i in ids]})


class _FilterParser:
    """expr := and ("or" and)* ; and := not ("and" not)* ; not := "not" not | "(" expr ")" | condition
    condition := field (== != < <= > >=) string | field ["not"] in [string, ...] | field like string
    """

    def __init__(self, text: str, fields: list[str]) -> None:
        self.text, self.fields, self.params = text, fields, {}
        self.tokens: list[tuple[str, str, int]] = []
        position = 0
        while position < len(text):
            if text[position].isspace():
                position += 1
                continue
            match = _TOKEN.match(text, position)
            if match is None:
                self.fail(f"cannot read {text[position : position + 12]!r}", position)
            kind, value = match.lastgroup or "", match.group()
            if kind == "word" and value.lower() in ("and", "or", "not", "in", "like"):
                kind, value = "op", value.lower()
            self.tokens.append((kind, value, position))
            position = match.end()
        self.at = 0

    def fail(self, message: str, position: int | None = None) -> None:
        if position is None:
            position = self.tokens[self.at][2] if self.at < len(self.tokens) else len(self.text)
        raise FilterError(f"filter {self.text!r}: {message} (column {position + 1})")

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, *values: str) -> str | None:
        token = self.peek()
        if token is not None and token[0] == "op" and _KEYWORDS.get(token[1], token[1]) in values:
            self.at += 1
            return _KEYWORDS.get(token[1], token[1])
        return None

    def expect(self, value: str) -> None:
        if self.take(value) is None:
            self.fail(f"expected {value!r}")

    def parse(self) -> Filter:
        template = self.expr()
        if self.peek() is not None:
            self.fail(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return Filter(template, self.params)

    def expr(self) -> str:
        parts = [self.conjunction()]
        while self.take("or"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"

    def conjunction(self) -> str:
        parts = [self.negation()]
        while self.take("and"):
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else "(" + " and ".join(parts) + ")"

    def negation(self) -> str:
        if self.take("not"):
            return f"not ({self.negation()})"
        if self.take("("):
            inner = self.expr()
            self.expect(")")
            return inner
        return self.condition()

    def condition(self) -> str:
        token = self.peek()
        if token is None or token[0] != "word":
            self.fail("expected a field name" + (f", got {token[1]!r}" if token else ""))
        field = token[1]  # type: ignore[index]
        if field not in self.fields:
            self.fail(f"unknown field {field!r}; this index has {', '.join(self.fields)}")
        self.at += 1
        negated = self.take("not") is not None
        if self.take("in"):
            self.expect("[")
            values = [self.string()]
            while self.take(","):
                values.append(self.string())
            self.expect("]")
            found = f"{field} in {self.param(values)}"
            return f"not ({found})" if negated else found
        if negated:
            self.fail("expected 'in' after 'not'")
        if self.take("like"):
            return f"{field} like {self.param(self.string())}"
        operator = self.take(*_COMPARE)
        if operator is None:
            self.fail(f"expected one of {' '.join(_COMPARE)}, in or like after {field!r}")
        return f"{field} {operator} {self.param(self.string())}"

    def string(self) -> str:
        token = self.peek()
        if token is None or token[0] != "string":
            self.fail(
                "expected a quoted string"
                + (f", got {token[1]!r}" if token else "")
                + ' (every field holds text: dataset_name == "inquire")'
            )
        self.at += 1
        body, out, i = token[1][1:-1], [], 0  # type: ignore[index]
        while i < len(body):
            if body[i] == "\\":
                if body[i + 1] not in _UNESCAPE:
                    self.fail(f"unknown escape \\{body[i + 1]}", token[2] + i + 1)  # type: ignore[index]
                out.append(_UNESCAPE[body[i + 1]])
                i += 2
            else:
                out.append(body[i])
                i += 1
        return "".join(out)

    def param(self, value: str | list[str]) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return "{" + name + "}"


def parse_filter(text: str | None, fields: list[str]) -> Filter | None:
    """A user's filter checked against ``fields``; None when blank. ``FilterError`` says what is wrong."""
    if text is None or not str(text).strip():
        return None
    text = str(text)
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(f"the filter is longer than {MAX_FILTER_CHARS} characters")
    return _FilterParser(text, fields).parse()


# -- connections ---------------------------------------------------------------------------------


def is_lite(uri: str) -> bool:
    return not re.match(r"^(https?|tcp|unix):", uri, re.IGNORECASE)


def check_uri(uri: str | None) -> None:
    if uri is None:
        return
    if is_lite(str(uri)) and not str(uri).endswith(".db"):
        raise MilvusError(
            f"milvus uri {uri!r} is neither a server (http://host:19530) nor a Milvus Lite "
            "file (a path ending in .db)"
        )


def check_installed(lite: bool) -> None:
    missing = [p for p in ("pymilvus", "milvus_lite")[: 1 + lite] if not _importable(p)]
    if missing:
        raise MilvusError(
            f"index kind milvus needs {' and '.join(m.replace('_', '-') for m in missing)}: "
            f"{INSTALL}"
        )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # in sys.modules without a spec (or set to None): not usable
        return False


def _quiet_client_logs() -> None:
    """pymilvus logs every failed call with its own traceback, and Milvus Lite's in-process gRPC
    server each call it does not implement (pymilvus asks it for timestamps): the error we raise
    says what matters, once."""
    for name in ("pymilvus", "milvus_lite", "grpc._server"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _lite_held_elsewhere(path: str) -> bool:
    """Whether another process has this Milvus Lite folder open (it takes an exclusive lock)."""
    try:
        import fcntl
    except ImportError:  # not Unix: Milvus Lite's own error says it
        return False
    lock = Path(path) / "LOCK"
    if _LITE_OPEN[path] or not lock.exists():
        return False
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def connect(uri: str, token: str | None, timeout: float) -> Any:
    """A ``MilvusClient`` for ``uri``, or one line saying why there is none (within ``timeout`` s)."""
    lite = is_lite(uri)
    check_installed(lite)
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    _quiet_client_logs()
    if lite:
        uri = os.path.abspath(uri)
        if _lite_held_elsewhere(uri):
            raise MilvusError(
                f"the Milvus Lite file {uri} is open in another process: Milvus Lite serves one "
                "process at a time; stop that one, or load the vectors into a Milvus server "
                "(indexes.milvus.uri=http://host:19530) that several processes can share"
            )
    try:
        client = MilvusClient(uri=uri, token=token or "", timeout=timeout)
    except MilvusException as exc:
        what = "open the Milvus Lite file" if lite else f"reach Milvus within {timeout:g} s at"
        raise MilvusError(f"cannot {what} {uri}: {exc.message}") from None
    if lite:
        _LITE_OPEN[uri] += 1
    return client


def disconnect(client: Any, uri: str) -> None:
    client.close()
    if is_lite(uri):
        uri = os.path.abspath(uri)
        _LITE_OPEN[uri] -= 1
        if _LITE_OPEN[uri] <= 0:  # the last index of this process on it: stop its server thread
            del _LITE_OPEN[uri]
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(uri)


def collection_name(table: Path, model_name: str, dataset_name: str) -> str:
    """``<side name>_<model>_<dataset>`` in the characters Milvus allows (a hash when any were changed)."""
    wanted = f"{TableLayout(table).side_name}_{model_name}_{dataset_name}"
    name = re.sub(r"\W", "_", wanted, flags=re.ASCII)
    if not re.match(r"[A-Za-z_]", name):
        name = "c_" + name
    if name != wanted or len(name) > 255:
        name = f"{name[:200]}_{hashlib.sha1(wanted.encode()).hexdigest()[:10]}"
    return name


# -- the index -----------------------------------------------------------------------------------


class MilvusIndex(VectorIndex):
    kind = "milvus"
    file_name = "milvus.json"
    filters = True
    defaults: ClassVar[dict[str, Any]] = {
        "uri": None,  # None: the table's Milvus Lite file (TableLayout.milvus_lite_file)
        "token": None,  # never saved; MILVUS_TOKEN when not given
        "collection": None,  # None: <table stem>_<model>_<dataset>[_<index name unless milvus>]
        "index_type": "AUTOINDEX",
        "index_params": {},  # HNSW: M, efConstruction; IVF_FLAT: nlist
        "search_params": {},  # HNSW: ef; IVF_FLAT: nprobe
        "metric": "IP",
        "batch_size": 1000,
        "timeout": 10.0,  # seconds to reach a server, and for each call
        "index_wait": 600.0,  # seconds a build waits for Milvus to finish indexing
    }

    def __init__(self, dim: int, **params: Any) -> None:
        super().__init__(dim, **params)
        self.token = self.params.pop("token", None) or os.environ.get("MILVUS_TOKEN")
        self.params["index_type"] = str(self.params["index_type"]).upper()
        self.params["metric"] = str(self.params["metric"]).upper()
        for key, allowed in (("index_type", INDEX_TYPES), ("metric", METRICS)):
            if self.params[key] not in allowed:
                raise ValueError(
                    f"indexes.milvus.{key}={self.params[key]} is not one of {', '.join(allowed)}"
                )
        check_uri(self.params["uri"])
        check_installed(lite=self.params["uri"] is None or is_lite(str(self.params["uri"])))
        self.client: Any = None
        self.uri = ""  # where the collection is, once placed
        self.lite_file: str | None = None  # the default Lite file's name, next to the index folder
        self.collection = ""
        self.fields = list(MAX_LENGTH)[:3]
        self.identity: dict[str, Any] = {}  # of the model that made the vectors
        self.ids: np.ndarray = np.array([], dtype=object)
        self._position: dict[str, int] | None = None
        self._scratch: str | None = None  # a temporary Lite folder (the ANN benchmark's)

    @property
    def lite(self) -> bool:
        return is_lite(self.uri)

    # -- building --

    def add(self, vectors: np.ndarray) -> None:
        """The ANN benchmark's build: rows named by position, in a scratch Lite file unless a uri is set."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.params["uri"] is None:
            self._scratch = tempfile.mkdtemp(prefix="img_search-milvus-")
            self._place(Path(self._scratch) / "ann.parquet", "ann", f"{len(vectors)}x{self.dim}")
        else:
            self._place(None, "ann", f"{len(vectors)}x{self.dim}")
        ids = np.arange(len(vectors)).astype(str).astype(object)
        # no model here: the vectors themselves say whether a collection of the same size holds them
        identity = {"fingerprint": hashlib.sha1(vectors.tobytes()).hexdigest()}
        self._sync(ids, vectors, {"model_name": "ann", "dataset_name": "ann"}, {}, identity)
        self.attach(ids)

    def add_selection(self, selection: TableSelection, name: str) -> None:
        dataset = (
            selection.dataset_name if name == self.kind else f"{selection.dataset_name}_{name}"
        )
        self._place(selection.path, selection.model_name, dataset)
        scalars = {"model_name": selection.model_name, "dataset_name": selection.dataset_name}
        captions = {c: selection.extra[c] for c in CAPTION_FIELDS if c in selection.extra}
        self._sync(selection.ids, selection.vectors, scalars, captions, selection.identity)

    def _place(self, table: Path | None, model_name: str, dataset_name: str) -> None:
        """Decide the uri and the collection name (from ``dataset_name`` as given), and connect."""
        uri = self.params["uri"]
        if uri is None and table is not None:
            lite = TableLayout(table).milvus_lite_file  # beside the index folders, as they are
            self.lite_file, uri = lite.name, str(lite)
        elif is_lite(str(uri)):  # a Lite file the user named: recorded as an absolute path
            uri = self.params["uri"] = os.path.abspath(str(uri))
        self.uri = str(uri)
        if not self.params["collection"]:
            table = table or Path(f"img_search_{model_name}")
            self.params["collection"] = collection_name(table, model_name, dataset_name)
        self.collection = str(self.params["collection"])
        self.client = connect(self.uri, self.token, float(self.params["timeout"]))

    def _sync(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        scalars: dict[str, str],
        captions: dict[str, np.ndarray],
        identity: dict[str, Any],
    ) -> None:
        """Make the collection hold exactly these rows: recreated if its model or layout differ,
        else only the missing ids upserted and the ids the table lost deleted (finite vectors:
        ``load_selection`` left out the others)."""
        self.fields = ["id", *scalars, *captions]
        columns = {
            "id": _text_column("id", ids),
            **{c: _text_column(c, v) for c, v in captions.items()},
        }
        for name, value in scalars.items():  # the model and dataset names: the same length check
            _text_column(name, np.array([value], dtype=object))
        self.identity = identity
        with self._errors():
            created = self._ensure_collection(self._layout(), identity)
            todo = np.arange(len(ids)) if created else np.flatnonzero(self._missing(ids))
            self._upsert(columns, scalars, vectors, todo)
            self.client.flush(self.collection)
            self.count = self._count()
            if self.count > len(ids):
                self._delete_except(set(columns["id"]))
            self._wait_indexed()

    def _layout(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "fields": self.fields,
            "metric": self.params["metric"],
            "index_type": self.params["index_type"],
            "index_params": dict(self.params["index_params"] or {}),
        }

    def _ensure_collection(self, layout: dict[str, Any], identity: dict[str, Any]) -> bool:
        """True when the collection was (re)created empty."""
        client, name = self.client, self.collection
        if client.has_collection(name):
            held = client.describe_collection(name).get("properties") or {}
            if LAYOUT not in held or _same_model(held, identity) is None:
                raise MilvusError(
                    f"Milvus at {self.uri} has a collection {name} that img_search did not make: "
                    "name another one (indexes.milvus.collection=...), it is left as it is"
                )
            why = _difference(held, layout, identity)
            if not why:
                client.load_collection(name, timeout=self._timeout)
                return False
            log.info("Milvus collection %s at %s: %s; replacing it", name, self.uri, why)
            client.drop_collection(name)
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        for field in self.fields:
            schema.add_field(
                field, DataType.VARCHAR, max_length=MAX_LENGTH[field], is_primary=field == "id"
            )
        schema.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=self.dim)
        index = client.prepare_index_params()
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
        client.create_collection(
            name, schema=schema, index_params=index, properties=properties, timeout=self._timeout
        )
        return True

    def _missing(self, ids: np.ndarray) -> np.ndarray:
        """Which of ``ids`` the collection does not hold, asked in batches."""
        held: set[str] = set()
        for start in range(0, len(ids), LOOKUP_BATCH):
            batch = [str(i) for i in ids[start : start + LOOKUP_BATCH]]
            rows = self._query(id_filter(batch), ["id"], limit=len(batch))
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

        batch_size = max(1, int(self.params["batch_size"]))
        names = [*columns, *scalars, VECTOR]
        with make_progress(enabled=len(rows) > 0) as progress:
            task = progress.add_task(f"milvus {self.collection}", total=len(rows), rate="")
            started, done = time.perf_counter(), 0
            for start in range(0, len(rows), batch_size):
                chosen = rows[start : start + batch_size]
                values = [
                    *(column[chosen] for column in columns.values()),
                    *(itertools.repeat(value) for value in scalars.values()),
                    vectors[chosen],
                ]
                batch = [dict(zip(names, row, strict=False)) for row in zip(*values, strict=False)]
                self.client.upsert(self.collection, batch, timeout=self._timeout)
                fail_point("milvus_batch")
                done += len(chosen)
                rate = done / max(time.perf_counter() - started, 1e-9)
                progress.update(task, completed=done, rate=f"{rate:,.0f} rows/s")
        if len(rows):
            log.info(
                "upserted %d rows into Milvus collection %s at %s",
                len(rows),
                self.collection,
                self.uri,
            )

    def _delete_except(self, keep: set[str]) -> None:
        """Delete the ids the table no longer holds (read back page by page)."""
        iterator = self.client.query_iterator(
            self.collection, batch_size=5000, output_fields=["id"], timeout=self._timeout
        )
        gone: list[str] = []
        try:
            while page := iterator.next():
                gone.extend(row["id"] for row in page if row["id"] not in keep)
        finally:
            iterator.close()
        for start in range(0, len(gone), LOOKUP_BATCH):
            self.client.delete(
                self.collection,
                **self._filter_args(id_filter(gone[start : start + LOOKUP_BATCH])),
                timeout=self._timeout,
            )
        log.info("deleted %d ids the table no longer holds from %s", len(gone), self.collection)
        self.client.flush(self.collection)
        self.count = self._count()

    def _count(self) -> int:
        rows = self._query(None, ["count(*)"])
        return int(rows[0]["count(*)"])

    def _wait_indexed(self) -> None:
        """Until Milvus has indexed every row (searches meanwhile scan), at most ``index_wait`` s."""
        deadline = time.monotonic() + float(self.params["index_wait"])
        if self.lite:
            self._wait_for_lite(deadline)
        while time.monotonic() < deadline:
            state = self.client.describe_index(self.collection, VECTOR, timeout=self._timeout)
            if not int(state.get("pending_index_rows") or 0):
                return
            time.sleep(0.2)
        log.warning("Milvus is still indexing %s; searches scan until it is done", self.collection)

    def _wait_for_lite(self, deadline: float) -> None:
        """Milvus Lite compacts and indexes in a background thread of this process that it does
        not report (``describe_index`` says done at once; searches are 4-6x slower until it is):
        wait for that thread through its engine. Only a wait: if the engine moved, no wait."""
        from milvus_lite.server_manager import server_manager_instance

        with contextlib.suppress(Exception):
            _, db, _ = server_manager_instance._servers[os.path.abspath(self.uri)]
            db.get_collection(self.collection)._wait_for_bg(max(0.0, deadline - time.monotonic()))

    # -- saving and loading --

    def save(self, path: Path) -> None:
        where = {
            "uri": self.params["uri"],  # None: the Lite file below, found next to the index folder
            "lite_file": self.lite_file,
            "collection": self.collection,
            "fields": self.fields,
            "identity": self.identity,
        }
        (path / self.file_name).write_text(json.dumps(where, indent=2, default=str))

    def load(self, path: Path) -> None:
        where = json.loads((path / self.file_name).read_text())
        self.lite_file, self.fields = where.get("lite_file"), list(where["fields"])
        uri = where["uri"] or str(path.with_name(where["lite_file"]))
        self.params["collection"] = where["collection"]
        self.collection = str(where["collection"])
        self.uri = uri
        self.client = connect(uri, self.token, float(self.params["timeout"]))
        with self._errors():
            held = None
            if self.client.has_collection(self.collection):
                held = self.client.describe_collection(self.collection).get("properties") or {}
            why = "has no collection" if held is None else None
            if held is not None and _same_model(held, where.get("identity") or {}) is False:
                why = "now holds vectors of another model than this index's table in collection"
            if why is not None:
                self.close()
                raise MilvusError(
                    f"Milvus at {uri} {why} {self.collection}: build the index again "
                    f"(python -m img_search.search.build ... indexes=[milvus])"
                )
            self.client.load_collection(self.collection, timeout=self._timeout)
            self.count = self._count()

    def attach(self, ids: np.ndarray) -> None:
        self.ids, self._position = ids, None

    def close(self) -> None:
        if self.client is not None:
            disconnect(self.client, self.uri)
            self.client = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    # -- searching --

    def parse_filter(self, text: str | None) -> Filter | None:
        return parse_filter(text, self.fields)

    def search(
        self, queries: np.ndarray, k: int, where: Filter | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        positions = np.full((len(queries), k), -1, dtype=np.int64)
        if k <= 0:
            return scores, positions
        if self._position is None:
            self._position = {str(item): row for row, item in enumerate(self.ids)}
        with self._errors():
            found = self.client.search(
                self.collection,
                data=list(queries),
                limit=k,
                search_params={
                    "metric_type": self.params["metric"],
                    "params": dict(self.params["search_params"] or {}),
                },
                timeout=self._timeout,
                **self._filter_args(where),
            )
        for row, hits in enumerate(found):
            for column, hit in enumerate(hits[:k]):
                positions[row, column] = self._position.get(str(hit["id"]), -1)
                scores[row, column] = hit["distance"]
        return scores, positions

    def vector(self, position: int) -> np.ndarray:
        item = str(self.ids[position])
        with self._errors():
            rows = self._query(id_filter([item]), [VECTOR], limit=1)
        if not rows:
            raise KeyError(f"Milvus collection {self.collection} has no id {item!r}")
        return np.asarray(rows[0][VECTOR], dtype=np.float32)

    def nbytes(self) -> int:
        return 4 * self.count * self.dim  # the float32 vectors, held by Milvus

    # -- helpers --

    @property
    def _timeout(self) -> float:
        return float(self.params["timeout"])

    def _filter_args(self, where: Filter | None) -> dict[str, Any]:
        """A server gets the template and its parameters; Milvus Lite (no templates) the quoted text."""
        if where is None:
            return {}
        if self.lite:
            return {"filter": where.inline()}
        return {"filter": where.template, "filter_params": where.params}

    def _query(self, where: Filter | None, fields: list[str], **kwargs: Any) -> list[dict]:
        return self.client.query(
            self.collection,
            output_fields=fields,
            timeout=self._timeout,
            **self._filter_args(where),
            **({"filter": ""} if where is None else {}),
            **kwargs,
        )

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """A failed Milvus call becomes one line naming the collection and the uri."""
        from pymilvus.exceptions import MilvusException

        try:
            yield
        except MilvusException as exc:
            raise MilvusError(
                f"Milvus collection {self.collection} at {self.uri}: {exc.message}"
            ) from None


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


def _difference(held: dict[str, str], layout: dict[str, Any], identity: dict[str, Any]) -> str:
    """Why a collection made by img_search cannot take these rows as they are ("": it can)."""
    held_layout, layout = json.loads(held[LAYOUT]), json.loads(json.dumps(layout))
    changed = [key for key in layout if held_layout.get(key) != layout[key]]
    if changed:
        return f"{', '.join(changed)} changed"
    return "" if _same_model(held, identity) else "the table's vectors come from another model"


def _same_model(held: dict[str, str], identity: dict[str, Any]) -> bool | None:
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
