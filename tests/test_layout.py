"""The layout's rules, read from the source: no import cycles between files, imports one way (the data side and the
models never import the engine), and the engine's files small enough to read (at most 450 lines each).

No two files of the repository import each other, directly or through others.

A cycle works only as long as each module's imports happen to be resolved in the right order (a late import, a
function-level import), and breaks on the next reordering; so every import counts here: module-level, inside
functions and classes, ``import a.b``, ``from a import b`` and relative ``from . import x``. The graph is built from
the source with ``ast`` (nothing is imported), over every ``.py`` file of the repository.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIPPED_DIRS = {".git", ".venv", "venv", "__pycache__", "data", "runs", "pretrained_pth", "build", "dist", "docs"}


def repository_modules(root: Path) -> dict[str, Path]:
    """{dotted module name: file} of every ``.py`` file under ``root`` (a package by its ``__init__.py``)."""
    modules = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
        for name in names:
            if name.endswith(".py"):
                parts = list((Path(folder) / name).relative_to(root).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                if parts:
                    modules[".".join(parts)] = Path(folder) / name
    return modules


def deepest_module(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` or its closest parent that is a module of the repository (None for outside modules)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The repository modules that module ``name`` (file ``path``) imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(deepest_module(alias.name, modules) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:  # `from package import module` imports the module itself
                submodule = f"{source}.{alias.name}" if source else alias.name
                found.add(submodule if submodule in modules else deepest_module(source, modules))
    found.discard(None)
    found.discard(name)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = repository_modules(root)
    return {name: imported_modules(name, path, modules) for name, path in sorted(modules.items())}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected group of modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(start: str) -> None:  # Tarjan's algorithm, iterative (no recursion limit)
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return [cycle_in(group, graph) for group in groups]


def cycle_in(group: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected group (breadth-first)."""
    members, start = set(group), group[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {group}")  # pragma: no cover - a group always has one


def test_no_import_cycles_between_files_of_the_repository():
    cycles = find_cycles(import_graph(REPO))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_the_data_side_imports_neither_the_engine_nor_the_models():
    """datasets/ is imported by networks/ (episode keys) and utils/ (everything); it never imports them."""
    graph = import_graph(REPO)
    offenders = sorted(f"{name} -> {target}" for name, targets in graph.items() if name.split(".")[0] == "datasets"
                       for target in targets if target.split(".")[0] in ("utils", "networks"))
    assert not offenders, offenders


def test_the_models_do_not_import_the_engine():
    """networks/ is imported by utils/ (the engine); it never imports it (imports go ``utils -> networks``)."""
    graph = import_graph(REPO)
    offenders = sorted(f"{name} -> {target}" for name, targets in graph.items() if name.split(".")[0] == "networks"
                       for target in targets if target.split(".")[0] == "utils")
    assert not offenders, offenders


MAX_ENGINE_FILE_LINES = 450


def test_no_engine_file_is_over_450_lines():
    sizes = {path.relative_to(REPO).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
             for path in sorted((REPO / "utils").rglob("*.py"))}
    assert sizes, "no files found under utils/"
    too_long = {path: lines for path, lines in sizes.items() if lines > MAX_ENGINE_FILE_LINES}
    assert not too_long, f"split these files (over {MAX_ENGINE_FILE_LINES} lines): {too_long}"


def test_the_cycle_finder_sees_every_kind_of_import(tmp_path):
    """Function-level imports, ``from . import x`` and ``import a.b`` all make edges; a cycle is named in order."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from . import b\n")
    (package / "b.py").write_text("import pkg.c\n")
    (package / "c.py").write_text("from .a import f\n")
    (package / "d.py").write_text("from pkg import a\n")  # d -> a, no cycle
    graph = import_graph(tmp_path)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"} and graph["pkg.d"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
