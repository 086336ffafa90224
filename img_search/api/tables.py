"""``open_table``: one (model, dataset) of an embedding table, to read, search and evaluate from Python.

Searching goes through the same index, query encoder and hit details as
``img-search query`` (``search.hits``), and evaluating through the same task
runners as ``img-search evaluate``, so a notebook and the command line give
the same numbers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from img_search.embedding import Encoder
    from img_search.search.hits import Hits
    from img_search.search.indexes import SavedIndex
    from img_search.search.table_info import TableInfo
    from img_search.store.selection import TableSelection


def open_table(
    path: str | os.PathLike[str], model_name: str | None = None, dataset_name: str | None = None
) -> Table:
    """The rows of one model and dataset of the table at ``path`` (either may be left out when the
    table holds only one)."""
    from img_search.store.selection import choose_selection

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"embedding table not found: {path}")
    model_name, dataset_name = choose_selection(path, model_name, dataset_name)
    return Table(path, model_name, dataset_name)


class Table:
    """``ids``, ``vectors`` (float32, one unit row per id), ``metadata``, ``to_pandas()``,
    ``search(...)`` and ``evaluate(...)``; the vectors are read on first use.

    Rows whose vector is null or not finite are in neither ``ids`` nor
    ``vectors`` (nor any index): a warning names them, and ``left_out`` gives
    each one's reason. ``to_pandas()`` keeps every row as stored.
    """

    def __init__(self, path: Path, model_name: str, dataset_name: str) -> None:
        self.path, self.model_name, self.dataset_name = path, model_name, dataset_name
        self._selection: TableSelection | None = None
        self._indexes: dict[str, SavedIndex] = {}
        self._encoders: dict[str, Encoder] = {}

    def __repr__(self) -> str:
        return f"Table({str(self.path)!r}, model_name={self.model_name!r}, dataset_name={self.dataset_name!r})"

    def __len__(self) -> int:
        return len(self.ids)

    def __fspath__(self) -> str:
        """A ``Table`` goes wherever a table's path does (``open(...)`` aside): ``open_table(t)``,
        ``pd.read_parquet(t)``, ``evaluate(captions=t)``."""
        return str(self.path)

    def info(self) -> TableInfo:
        """What ``img-search info`` shows of the whole table (every model and dataset, not only
        this one's): rows and errors of each, dtype, size, versions, and each saved index with
        whether it is current. ``.as_dict()`` gives it as JSON-ready data."""
        from img_search.search.table_info import table_info

        return table_info(self.path)

    @property
    def selection(self) -> TableSelection:
        if self._selection is None:
            from img_search.store.selection import load_selection

            self._selection = load_selection(self.path, self.model_name, self.dataset_name)
        return self._selection

    @property
    def ids(self) -> np.ndarray:
        return self.selection.ids

    @property
    def vectors(self) -> np.ndarray:
        return self.selection.vectors

    @property
    def left_out(self) -> dict[str, str]:
        """Rows left out of ``ids`` and ``vectors``: id → why (its vector is null, or not finite)."""
        return self.selection.left_out.reasons()

    @property
    def metadata(self) -> dict[str, Any]:
        from img_search.store import read_metadata

        return read_metadata(self.path)

    def to_pandas(self) -> pd.DataFrame:
        """The selected rows, every column (``embedding`` as arrays)."""
        from img_search.store.selection import selection_rows

        return selection_rows(self.path, self.model_name, self.dataset_name).to_pandas()

    # -- search -------------------------------------------------------------------------
    def search(
        self,
        text: str | None = None,
        image: Any = None,
        vector: np.ndarray | None = None,
        id: str | None = None,
        k: int = 10,
        index: str = "flat",
        filter: str | None = None,
        device: str | None = None,
        trust_remote_code: bool = False,
        group_by_image: bool = False,
    ) -> Hits:
        """The ``k`` nearest items to one query: a text, an image (path, bytes or PIL), a vector or an id.

        ``index`` is ``"flat"`` (exact; built and saved next to the table on
        first use, as ``img-search query`` does), the name of an index built
        with ``img-search build`` (``"faiss_hnsw"``, ``"milvus"``), or the path
        of a saved index folder. Hits carry id, score, and the file path or
        caption where the table knows them; ``.to_pandas()`` makes them a
        DataFrame. ``group_by_image=True`` (caption tables): the ``k`` best
        images, each once, at its best caption's score, with its ``captions``.
        """
        from img_search.search.hits import query_vector, search

        asked = (("text", text), ("image", image), ("vector", vector), ("id", id))
        given = [name for name, value in asked if value is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of text=, image=, vector= or id= (got {', '.join(given) or 'none'})"
            )
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        saved = self._index(index)
        where = saved.parse_filter(filter)
        query = query_vector(
            saved,
            text=text,
            image=image,
            item_id=id,
            vector=vector,
            device=device or "auto",
            trust_remote_code=trust_remote_code,
            loaded=self._encoders,  # the model loads once, for every query of this table
        )
        return search(saved, query, k, None if id is None else str(id), where, group_by_image)

    def _index(self, index: str) -> SavedIndex:
        from img_search.search.indexes import build_command, open_index, saved_index_dir

        if index not in self._indexes:
            folder = Path(index)
            if not (folder / "index.json").is_file():
                folder = saved_index_dir(self.path, self.model_name, self.dataset_name, index)
                if index != "flat" and not (folder / "index.json").is_file():
                    command = build_command(
                        self.path, f"model_name={self.model_name}", f"indexes=[{index}]"
                    )
                    raise FileNotFoundError(
                        f"no index {index!r} of {self.model_name} × {self.dataset_name} next to "
                        f"{self.path}: build it with {command}"
                    )
                folder = self.path
            self._indexes[index] = open_index(folder, self.model_name, self.dataset_name, index)
        return self._indexes[index]

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, task: str, **options: Any) -> dict[str, Any]:
        """``img-search evaluate task=<task>`` over this table, its results as a dict.

        ``task="retrieval"`` takes ``captions=`` a caption table (an ``open_table(...)`` or
        its path); ``task="inquire"``
        takes ``inquire={"path": <local copy>}``; ``task="inquire_fullrank"`` takes
        ``inquire_fullrank={"queries": <csv>, "annotations": <csv>, "k": 50}``; other
        options are the command's (``ks=[1, 5, 10]``, ``device="cpu"``).
        """
        from img_search.api.jobs import compose, flat_overrides
        from img_search.eval.tasks import RUNNERS

        if task not in RUNNERS:
            raise ValueError(f"unknown task {task!r}; the tasks are: {', '.join(RUNNERS)}")
        args = [f"task={task}", *flat_overrides("images", str(self.path))]
        args += flat_overrides("model_name", self.model_name)
        args += flat_overrides("dataset_name", self.dataset_name)
        captions = options.get("captions")
        if isinstance(captions, Table) and "caption_dataset_name" not in options:
            args += flat_overrides("caption_dataset_name", captions.dataset_name)
        for key, value in options.items():
            args += flat_overrides(key, value)  # a Table or a Path is its path (os.PathLike)
        cfg = compose("evaluate", args, module="img_search.config.search")
        results = RUNNERS[task](cfg)
        results.pop("_table", None)
        return results

    def close(self) -> None:
        """Release what the indexes hold (a milvus index's connection)."""
        for saved in self._indexes.values():
            saved.close()
        self._indexes.clear()
