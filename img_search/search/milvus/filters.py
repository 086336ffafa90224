"""The filter language of ``milvus`` indexes: a user's text checked against a collection's fields.

``dataset_name == "inquire"``, ``image_id in ["a", "b"]``, ``caption like
"a dog%"``, joined with ``and`` / ``or`` / ``not`` and parentheses. Field names
are checked against the collection's; every string literal becomes a
parameter (``filter_params``) for a server, and is written back quoted by
``Filter.inline`` for Milvus Lite, which has no templates. User text is never
pasted into an expression.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from img_search.search.kinds import FilterError

MAX_FILTER_CHARS = 1000

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
