"""The package's shape, checked from its imports: data flows one way (DEVELOPERS.md).

Reads every module of ``newsletter/`` with ``ast`` (nothing is imported or run), builds
the graph of imports between the package's own modules, and fails on an import cycle,
on a stage importing a face or the pipeline, and on the pure stages (``matching``,
``render``) touching the database or doing I/O.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "newsletter"

FACES = {"cli", "web", "scheduler", "workers", "__main__"}  # workers: Celery (issue 15)
PIPELINE = "pipeline"
STAGES = {"ingest", "profiles", "matching", "render", "delivery", "db"}
# Below the stages: plain values, settings, errors and pure helpers every stage may use.
BASE = {"models", "config", "errors", "domain", "periods", "tokens", "clock", "__init__"}
PURE = {"matching", "render"}
# Modules a pure stage may not import: the database, the network, processes, files.
IMPURE_MODULES = (
    "sqlalchemy",
    "alembic",
    "psycopg",
    "socket",
    "smtplib",
    "http",
    "urllib.request",
    "subprocess",
    "multiprocessing",
    "shutil",
    "tempfile",
    "requests",
)
IMPURE_CALLS = {"open"}
IMPURE_METHODS = {"read_text", "read_bytes", "write_text", "write_bytes", "unlink", "mkdir"}


@dataclass(frozen=True)
class Module:
    name: str  # newsletter.render.mime
    path: Path
    tree: ast.Module

    @property
    def top(self) -> str:
        """The first part below ``newsletter``: the stage, face or base module."""
        parts = self.name.split(".")
        return parts[1] if len(parts) > 1 else "__init__"


def _modules() -> dict[str, Module]:
    out: dict[str, Module] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        if "migrations" in rel.parts:  # Alembic's scripts, loaded by Alembic
            continue
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        out[name] = Module(name, path, ast.parse(path.read_text(encoding="utf-8")))
    return out


MODULES = _modules()


def _imported(module: Module) -> Iterator[tuple[str, int]]:
    """Every absolute name ``module`` imports (``from a import b`` gives ``a`` and
    ``a.b``), with its line."""
    is_package = module.path.name == "__init__.py"
    package = module.name.split(".") if is_package else module.name.split(".")[:-1]
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package[: len(package) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield base, node.lineno
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno


def _own(name: str) -> str | None:
    """The package module ``name`` refers to (a module, or the module holding a name)."""
    while name:
        if name in MODULES:
            return name
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return None


def _graph() -> dict[str, dict[str, int]]:
    graph: dict[str, dict[str, int]] = {m: {} for m in MODULES}
    for name, module in MODULES.items():
        for imported, line in _imported(module):
            target = _own(imported)
            # A package's own submodules are below it: importing them is not an edge up.
            if target and target != name and not name.startswith(target + "."):
                graph[name].setdefault(target, line)
    return graph


GRAPH = _graph()


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _where(src: str, dst: str) -> str:
    return f"{MODULES[src].path.relative_to(PACKAGE.parent)}:{GRAPH[src][dst]} imports {dst}"


def test_the_walk_sees_the_whole_package() -> None:
    # Guard against a walk that silently reads nothing: every stage and face is there,
    # with the edges everyone knows of.
    tops = {m.top for m in MODULES.values()}
    assert STAGES | FACES - {"__main__"} | {PIPELINE} <= tops
    assert "newsletter.render" in GRAPH["newsletter.pipeline.compose"]
    assert "newsletter.pipeline.send" in GRAPH["newsletter.cli.send"]


def test_no_import_cycle_between_modules() -> None:
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [
        ["a", "b", "c"]
    ]


def _layer(top: str) -> int:
    if top in FACES:
        return 3
    if top == PIPELINE:
        return 2
    if top in STAGES:
        return 1
    assert top in BASE, f"newsletter.{top} belongs to no layer: add it to this test's map"
    return 0


def test_imports_point_down_the_layers() -> None:
    """faces -> pipeline -> stages -> base: never up, and a stage never imports a face
    or the pipeline."""
    wrong = [
        _where(src, dst)
        for src, targets in GRAPH.items()
        for dst in targets
        if _layer(MODULES[dst].top) > _layer(MODULES[src].top)
    ]
    assert wrong == []


def test_stages_import_only_what_their_docstring_allows() -> None:
    # Stage -> stage edges are the exception; these are the ones the design has.
    allowed = {("profiles", "matching")}  # the keyword rules: textnorm
    wrong = [
        _where(src, dst)
        for src, targets in GRAPH.items()
        for dst in targets
        if MODULES[src].top in STAGES
        and MODULES[dst].top in STAGES
        and MODULES[src].top != MODULES[dst].top
        and (MODULES[src].top, MODULES[dst].top) not in allowed
    ]
    assert wrong == []


@pytest.mark.parametrize("stage", sorted(PURE))
def test_pure_stages_touch_no_database_and_do_no_io(stage: str) -> None:
    problems: list[str] = []
    for module in MODULES.values():
        if module.top != stage:
            continue
        rel = module.path.relative_to(PACKAGE.parent)
        for imported, line in _imported(module):
            if _own(imported) and MODULES[_own(imported) or ""].top == "db":
                problems.append(f"{rel}:{line} imports {imported}")
            if any(imported == m or imported.startswith(m + ".") for m in IMPURE_MODULES):
                problems.append(f"{rel}:{line} imports {imported}")
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Call):
                fn = node.func
                if isinstance(fn, ast.Name) and fn.id in IMPURE_CALLS:
                    problems.append(f"{rel}:{node.lineno} calls {fn.id}()")
                if isinstance(fn, ast.Attribute) and fn.attr in IMPURE_METHODS:
                    problems.append(f"{rel}:{node.lineno} calls .{fn.attr}()")
    assert problems == []


def test_at_most_ten_top_level_modules_and_none_over_500_lines() -> None:
    top_level = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top_level) <= 10, top_level
    long = [
        f"{m.path.relative_to(PACKAGE.parent)}: {n} lines"
        for m in MODULES.values()
        if (n := len(m.path.read_text(encoding="utf-8").splitlines())) > 500
    ]
    assert long == []


# The public API of named tuples, which starts with an underscore to stay out of the way.
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}


def _private_defined(tree: ast.Module) -> set[str]:
    """The ``_names`` a module defines itself: functions, methods, class attributes,
    ``self._x = ...`` and ``__slots__`` entries."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # __slots__ = ("_a", "_b")
    return {n for n in names if n.startswith("_")}


def _private_reaches(module: Module) -> list[str]:
    own = _private_defined(module.tree)
    rel = module.path.relative_to(PACKAGE.parent)
    return [
        f"{rel}:{node.lineno} uses {ast.unparse(node)}"
        for node in ast.walk(module.tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and node.attr not in own | NAMEDTUPLE_API
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    ]


def test_no_module_reaches_into_another_modules_private_members() -> None:
    """A class's ``_private`` methods are its own: another module uses its public API
    (``pipeline.batch`` runs a queued batch with ``SendRun.run_batches``)."""
    problems = [p for m in MODULES.values() for p in _private_reaches(m)]
    assert problems == []


def test_the_private_member_check_sees_a_reach() -> None:
    source = "def f(run):\n    run._loop()\n    run.finish()\n"
    module = Module("newsletter.x", PACKAGE / "x.py", ast.parse(source))
    assert _private_reaches(module) == ["newsletter/x.py:2 uses run._loop"]
