"""Captions from newline-delimited JSON: ``{"image": "1000092795.jpg", "caption": "..." | [...]}``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from img_search.data.limits import DEFAULT_MAX_CAPTION_BYTES, checked_limit, in_words
from img_search.data.text import CaptionTable, checked_text, number_captions, parse_json

log = logging.getLogger(__name__)

ON_ERROR = ("skip", "fail")
#: Bytes read at a time while skipping the rest of a line over the limit.
SKIP_CHUNK = 2**20


class CaptionsJsonlDataset(CaptionTable):
    """One JSON object a line with ``image`` and ``caption`` (a string or a list of strings).

    Blank lines are skipped. A line that is not a record (malformed JSON, too
    deeply nested, not in ``encoding``, a caption with a lone surrogate, no
    ``caption``/``image``, over ``max_line_bytes``) is reported with its line
    number and skipped (``on_error: skip``, the default) or stops the run
    (``on_error: fail``). A line over the limit is never held in memory whole.
    """

    kind = "captions_jsonl"

    def __init__(
        self,
        name: str,
        path: str,
        on_error: str = "skip",
        encoding: str = "utf-8",
        max_line_bytes: int = DEFAULT_MAX_CAPTION_BYTES,
    ) -> None:
        super().__init__(name)
        if not path:
            raise ValueError(f"text_dataset {name}: path is empty; give the .jsonl file")
        if on_error not in ON_ERROR:
            raise ValueError(f"text_dataset.on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.path = Path(path).expanduser()
        self.on_error = on_error
        self.encoding = ascii_compatible(encoding)
        self.max_line_bytes = checked_limit(max_line_bytes, "text_dataset.max_line_bytes")
        self._problems: list[tuple[str, str]] = []

    def build(self) -> None:
        if not self.path.is_file():
            raise FileNotFoundError(f"captions file not found: {self.path}")
        images: list[str] = []
        captions: list[list[str]] = []
        self._problems = []
        with open(self.path, "rb") as file:
            for number, line in bounded_lines(file, self.max_line_bytes):
                try:
                    if line is None:
                        raise ValueError(
                            f"the line is over the size limit of {in_words(self.max_line_bytes, exact=True)} "
                            "(text_dataset.max_line_bytes)"
                        )
                    text = self.decode(line)
                    if not text.strip():
                        continue
                    image, texts = parse_line(text)
                except ValueError as exc:
                    if self.on_error == "fail":
                        raise ValueError(f"{self.path} line {number}: {exc}") from None
                    self._problems.append((f"{self.path.name}:{number}", f"line {number}: {exc}"))
                    continue
                images.append(image)
                captions.append(texts)
        self.set_records(*number_captions(images, captions))

    def decode(self, line: bytes) -> str:
        try:
            return line.decode(self.encoding)
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"not {self.encoding} text (byte 0x{line[exc.start]:02x} at column {exc.start + 1}); "
                "text_dataset.encoding names the file's encoding"
            ) from None

    def problems(self) -> list[tuple[str, str]]:
        return list(self._problems)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(self.path),
            "on_error": self.on_error,
            "max_line_bytes": self.max_line_bytes,
        }


def ascii_compatible(encoding: str) -> str:
    """``encoding``, when JSON's own characters and the newline are single ASCII bytes in it."""
    try:
        fits = '{"image": 1}\n'.encode(encoding) == b'{"image": 1}\n'
    except LookupError:
        raise ValueError(f"text_dataset.encoding: unknown encoding {encoding!r}") from None
    if not fits:
        raise ValueError(
            f"text_dataset.encoding={encoding} is not read line by line: give the file in "
            "UTF-8 (JSON's own encoding) or another ASCII-compatible encoding (latin-1, cp1252)"
        )
    return encoding


def bounded_lines(file: IO[bytes], limit: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, the line's bytes) of every line; None for a line over ``limit`` bytes,
    whose rest is read past a MiB at a time."""
    number = 0
    while line := file.readline(limit + 1):
        number += 1
        if line.endswith(b"\n") or len(line) <= limit:
            yield number, line
            continue
        while not line.endswith(b"\n") and (line := file.readline(SKIP_CHUNK)):
            pass
        yield number, None


def parse_line(line: str) -> tuple[str, list[str]]:
    """One JSONL line → (image, captions); ValueError with the reason otherwise."""
    record = parse_json(line)
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    missing = [key for key in ("image", "caption") if key not in record]
    if missing:
        raise ValueError(f"record has no {' and no '.join(missing)} field")
    image, caption = record["image"], record["caption"]
    if not isinstance(image, str) or not image:
        raise ValueError("'image' must be a non-empty string")
    if isinstance(caption, str):
        return checked_text(image, "'image'"), [checked_text(caption)]
    if isinstance(caption, list) and all(isinstance(c, str) for c in caption):
        return checked_text(image, "'image'"), [checked_text(c) for c in caption]
    raise ValueError("'caption' must be a string or a list of strings")
