"""DESIGN.md's layering, checked over every import of the package (module level, inside functions
and under ``TYPE_CHECKING``): cli → api → serve/eval → pipeline/search → data/embedding/store →
base. Never upward, never between siblings, no cycle between packages, config imports nothing
(YAML only), nothing imports the testing helpers, and every ``python -m`` entry of the README is a
thin shim over ``img_search.cli``.

The checker reads source files only (``ast``), so it sees lazy imports that a run would not.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from conftest import REPO

#: Higher may import lower; equal levels are siblings (base aside). cli is the top.
LEVEL = {
    "cli": 6,
    "api": 5,
    "serve": 4,
    "eval": 4,
    "pipeline": 3,
    "search": 3,
    "data": 2,
    "embedding": 2,
    "store": 2,
    "base": 1,
    "config": 1,
}
#: What users type after ``python -m`` (README): each a shim over ``img_search.cli.<command>``.
ENTRY_MODULES = {
    "img_search.pipeline.embed": "img_search.cli.embed",
    "img_search.pipeline.embed_text": "img_search.cli.embed_text",
    "img_search.search.build": "img_search.cli.build",
    "img_search.search.query": "img_search.cli.query",
    "img_search.search.info": "img_search.cli.info",
    "img_search.search.evaluate": "img_search.cli.evaluate",
    "img_search.search.report": "img_search.cli.report",
    "img_search.serve.__main__": "img_search.cli.serve",
}
#: Lines a shim may have (docstring, import, ``__main__`` guard).
THIN = 10


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (the longest existing prefix of what is named)
    where: str  # file:line
    kind: str  # "module", "lazy" (inside a function) or "typing" (under TYPE_CHECKING)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def package_of(module: str, root: Path) -> str:
    """The first folder under img_search/; a top-level module is base (``__init__``: the API);
    a ``python -m`` shim is cli."""
    parts = module.split(".")
    if module in ENTRY_MODULES:
        return "cli"
    if len(parts) == 1:
        return "api"
    if len(parts) == 2 and not (root / "img_search" / parts[1]).is_dir():
        return "base"
    return parts[1]


def read_imports(root: Path) -> tuple[set[str], list[Import]]:
    files = sorted(p for p in (root / "img_search").rglob("*.py") if "__pycache__" not in p.parts)
    modules = {module_name(p, root) for p in files}
    found = []
    for path in files:
        current = module_name(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing, functions = [], []
        for node in ast.walk(tree):
            span = (
                (node.lineno, node.end_lineno or node.lineno) if hasattr(node, "lineno") else None
            )
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                typing.append(span)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append(span)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                named = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = current.split(".")[: None if path.name == "__init__.py" else -1]
                    package = package[: len(package) - node.level + 1]
                    base = ".".join([*package, *([node.module] if node.module else [])])
                named = [
                    f"{base}.{alias.name}" for alias in node.names
                ]  # a module or a name in one
            else:
                continue
            line = node.lineno
            kind = (
                "typing"
                if any(a <= line <= b for a, b in typing)
                else "lazy"
                if any(a <= line <= b for a, b in functions)
                else "module"
            )
            for name in named:
                if name.split(".")[0] != "img_search":
                    continue
                while name not in modules and "." in name:
                    name = name.rpartition(".")[0]
                where = f"{path.relative_to(root)}:{line}"
                found.append(Import(current, name, where, kind))
    return modules, found


def forbidden(source: str, target: str) -> str | None:
    if source == target or source == "testing":
        return None
    if target == "testing":
        return "the package imports the testing helpers"
    if source == "config":
        return "config is YAML only"
    if LEVEL[target] > LEVEL[source]:
        return "upward"
    if LEVEL[target] == LEVEL[source] and "base" not in (source, target):
        return "between siblings"
    return None


def wrong_arrows(root: Path) -> list[str]:
    _, found = read_imports(root)
    wrong = []
    for imp in found:
        source, target = package_of(imp.source, root), package_of(imp.target, root)
        why = forbidden(source, target)
        if why:
            wrong.append(f"{imp.where}: {source} -> {target} ({why}, {imp.kind})")
    return wrong


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def package_cycles(root: Path) -> list[list[str]]:
    """Over the imports that run (module level and lazy)."""
    _, found = read_imports(root)
    edges: dict[str, set[str]] = defaultdict(set)
    for imp in found:
        source, target = package_of(imp.source, root), package_of(imp.target, root)
        if imp.kind != "typing" and source != target:
            edges[source].add(target)
    return cycles(edges)


def module_cycles(root: Path) -> list[list[str]]:
    """Over module-level imports: such a cycle fails at import time, whichever module comes first."""
    _, found = read_imports(root)
    edges: dict[str, set[str]] = defaultdict(set)
    for imp in found:
        if imp.kind == "module" and imp.target != imp.source:
            edges[imp.source].add(imp.target)
    return cycles(edges)


def test_no_package_imports_upward_or_between_siblings() -> None:
    assert wrong_arrows(REPO) == []


def test_packages_import_each_other_in_no_cycle() -> None:
    assert package_cycles(REPO) == []


def test_no_module_level_import_cycle() -> None:
    assert module_cycles(REPO) == []


def test_every_python_m_entry_is_a_shim_of_a_few_lines_over_its_command() -> None:
    modules, found = read_imports(REPO)
    for entry, command in ENTRY_MODULES.items():
        path = REPO / Path(*entry.split(".")).with_suffix(".py")
        assert len(path.read_text(encoding="utf-8").splitlines()) <= THIN, entry
        assert {imp.target for imp in found if imp.source == entry} == {command}, entry
        assert command in modules
        tree = ast.parse((REPO / Path(*command.split(".")).with_suffix(".py")).read_text())
        assert "main" in {getattr(node, "name", None) for node in tree.body}, command


def test_the_checker_reports_each_kind_of_wrong_import_and_both_kinds_of_cycle(tmp_path) -> None:
    """What the tests above would report, on a package made to break each rule."""
    files = {
        "img_search/__init__.py": "",
        "img_search/atomic.py": "",
        "img_search/store/__init__.py": "",
        "img_search/store/reader.py": "def f():\n    from img_search.search import hits\n",
        "img_search/search/__init__.py": "",
        "img_search/search/hits.py": "from img_search.store.reader import f\n",
        "img_search/data/__init__.py": "",
        "img_search/data/text.py": "from img_search.store import reader\nimport img_search.atomic\n",
        "img_search/search/query.py": "import img_search.search.hits\n",  # a shim: cli, may import search
        "img_search/search/a.py": "import img_search.search.b\n",
        "img_search/search/b.py": "from img_search.search import a\n",
        "img_search/config/__init__.py": "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from img_search.data.text import x\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert wrong_arrows(tmp_path) == [
        "img_search/config/__init__.py:3: config -> data (config is YAML only, typing)",
        "img_search/data/text.py:1: data -> store (between siblings, module)",
        "img_search/store/reader.py:2: store -> search (upward, lazy)",
    ]
    assert package_cycles(tmp_path) == [["search", "store"]]
    assert module_cycles(tmp_path) == [["img_search.search.a", "img_search.search.b"]]


#: What one module and one function may hold (``img_search/testing`` aside): past these, a
#: newcomer can no longer see a module's one job, or a function's one step, at a glance.
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def oversized(root: Path) -> list[str]:
    """Modules over ``MAX_MODULE_LINES`` and functions over ``MAX_FUNCTION_LINES`` (def line to
    last line, decorators excluded)."""
    found = []
    for path in sorted((root / "img_search").rglob("*.py")):
        if "testing" in path.relative_to(root).parts or "__pycache__" in path.parts:
            continue
        text, rel = path.read_text(encoding="utf-8"), path.relative_to(root)
        if (lines := len(text.splitlines())) > MAX_MODULE_LINES:
            found.append(f"{rel}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{rel}:{node.lineno}: {node.name} {length} lines")
    return found


def test_no_module_over_400_lines_and_no_function_over_60() -> None:
    assert oversized(REPO) == []


def test_the_size_check_names_a_long_module_and_a_long_function(tmp_path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(60))
    files = {
        "img_search/search/long.py": "def f():\n" + body,
        "img_search/search/big.py": "x = 1\n" * 401,
        "img_search/testing/big.py": "x = 1\n" * 401,  # the test helpers are not counted
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert oversized(tmp_path) == [
        "img_search/search/big.py: 401 lines",
        "img_search/search/long.py:1: f 61 lines",
    ]
