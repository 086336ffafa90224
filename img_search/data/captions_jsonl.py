"""Captions from newline-delimited JSON: ``{"image": "1000092795.jpg", "caption": "..." | [...]}``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from img_search.data.text import CaptionTable, number_captions

log = logging.getLogger(__name__)

ON_ERROR = ("skip", "fail")


class CaptionsJsonlDataset(CaptionTable):
    """One JSON object a line with ``image`` and ``caption`` (a string or a list of strings).

    Blank lines are skipped. A malformed line, or a record without
    ``caption``/``image``, is reported with its line number and skipped
    (``on_error: skip``, the default) or stops the run (``on_error: fail``).
    """

    kind = "captions_jsonl"

    def __init__(
        self, name: str, path: str, on_error: str = "skip", encoding: str = "utf-8"
    ) -> None:
        super().__init__(name)
        if not path:
            raise ValueError(f"text_dataset {name}: path is empty; give the .jsonl file")
        if on_error not in ON_ERROR:
            raise ValueError(f"text_dataset.on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.path = Path(path).expanduser()
        self.on_error = on_error
        self.encoding = encoding
        self._problems: list[tuple[str, str]] = []

    def build(self) -> None:
        if not self.path.is_file():
            raise FileNotFoundError(f"captions file not found: {self.path}")
        images: list[str] = []
        captions: list[list[str]] = []
        self._problems = []
        with open(self.path, encoding=self.encoding) as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    image, texts = parse_line(line)
                except ValueError as exc:
                    where = f"{self.path.name}:{number}"
                    if self.on_error == "fail":
                        raise ValueError(f"{self.path} line {number}: {exc}") from None
                    self._problems.append((where, f"line {number}: {exc}"))
                    continue
                images.append(image)
                captions.append(texts)
        self.set_records(*number_captions(images, captions))

    def problems(self) -> list[tuple[str, str]]:
        return list(self._problems)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "on_error": self.on_error}


def parse_line(line: str) -> tuple[str, list[str]]:
    """One JSONL line → (image, captions); ValueError with the reason otherwise."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    missing = [key for key in ("image", "caption") if key not in record]
    if missing:
        raise ValueError(f"record has no {' and no '.join(missing)} field")
    image, caption = record["image"], record["caption"]
    if not isinstance(image, str) or not image:
        raise ValueError("'image' must be a non-empty string")
    if isinstance(caption, str):
        return image, [caption]
    if isinstance(caption, list) and all(isinstance(c, str) for c in caption):
        return image, list(caption)
    raise ValueError("'caption' must be a string or a list of strings")
