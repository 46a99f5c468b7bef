#!/usr/bin/env python3
# -*- test-case-name: tests.test_deps -*-
"""
Print the import graph of netdemo's source, and check its two rules.

Each module of the package is listed with the modules of the package it
imports, wherever the import statement is: at the top, inside a function
(marked C{lazy}), or under C{if TYPE_CHECKING:} (marked C{type}).  The
source is read with L{ast}, never imported: the script needs nothing but
Python, sees the imports a running program may never make, and runs no
code of the package.

The exit status is 1 when
  - modules import each other, directly or around a loop (a cycle), lazy
    and type-only imports included: either way the two modules cannot be
    understood, tested or moved one without the other;
  - a service module (L{SERVICES}) imports another service module: what
    two services share belongs in a module of its own.

Usage: C{python tools/deps.py [PACKAGE_DIRECTORY]} (C{src/netdemo} by
default), or C{make deps}.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

#: The service modules, by name within the package: none may import
#: another.
SERVICES = frozenset(
    {"echo", "pubsub", "broadcast", "udpecho", "udppeer", "multicast", "web"}
)

#: How an import statement is placed.
TOP, LAZY, TYPE = "top", "lazy", "type"
_RANK = {TOP: 0, LAZY: 1, TYPE: 2}

USAGE = "usage: python tools/deps.py [PACKAGE_DIRECTORY]"

DEFAULT_PACKAGE = Path(__file__).resolve().parent.parent / "src" / "netdemo"


@dataclass(frozen=True, order=True)
class Edge:
    """
    One module importing another of the package.

    @ivar source: The importing module (its dotted name).
    @ivar target: The imported module.
    @ivar kind: L{TOP}, L{LAZY} (inside a function) or L{TYPE} (only for
        the type checker).
    @ivar line: Where, in C{source}.
    """

    source: str
    target: str
    kind: str
    line: int


def modules(package: Path) -> dict[str, Path]:
    """
    Every module of the package in directory C{package}, by dotted name
    (C{netdemo}, C{netdemo.echo}, C{netdemo.clients.ping}, ...).
    """
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _isTypeChecking(test: ast.expr) -> bool:
    """
    Whether an C{if} tests C{TYPE_CHECKING} or C{typing.TYPE_CHECKING}.
    """
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _imports(
    nodes: Iterable[ast.AST], kind: str = TOP
) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """
    Every import statement in or below C{nodes}, with how it is placed.
    """
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, kind
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inner = TYPE if kind == TYPE else LAZY
            yield from _imports(ast.iter_child_nodes(node), inner)
        elif isinstance(node, ast.If) and _isTypeChecking(node.test):
            yield from _imports(node.body, TYPE)
            yield from _imports(node.orelse, kind)
        else:
            yield from _imports(ast.iter_child_nodes(node), kind)


def _known(name: str, known: Iterable[str]) -> str | None:
    """
    The longest module of C{known} that C{name} is or lies in.
    """
    parts = name.split(".")
    names = set(known)
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in names:
            return candidate
    return None


def importsOf(module: str, path: Path, known: Iterable[str]) -> list[Edge]:
    """
    The imports of C{module} (read from C{path}) of modules in C{known}.
    """
    known = list(known)
    tree = ast.parse(path.read_text(), str(path))
    isPackage = path.name == "__init__.py"
    edges = []
    for statement, kind in _imports(tree.body):
        targets: list[str] = []
        if isinstance(statement, ast.Import):
            targets = [alias.name for alias in statement.names]
        else:
            base = statement.module or ""
            if statement.level:
                # Relative: from the module's own package, up level - 1.
                parts = module.split(".")
                if not isPackage:
                    parts.pop()
                parts = parts[: len(parts) - (statement.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            # "from package import name" names a module or an attribute.
            targets = [f"{base}.{alias.name}" for alias in statement.names]
        for target in targets:
            resolved = _known(target, known)
            if resolved is not None and resolved != module:
                edges.append(Edge(module, resolved, kind, statement.lineno))
    # One edge per imported module: the one that binds most (a top-level
    # import over a lazy one over a type-only one), then the first.
    strongest: dict[str, Edge] = {}
    for edge in sorted(edges, key=lambda e: (_RANK[e.kind], e.line)):
        strongest.setdefault(edge.target, edge)
    return sorted(strongest.values())


def importGraph(package: Path) -> dict[str, list[Edge]]:
    """
    Every module of the package in C{package} and what it imports of it.
    """
    found = modules(package)
    return {module: importsOf(module, path, found) for module, path in found.items()}


def cycles(graph: dict[str, list[Edge]]) -> list[list[Edge]]:
    """
    One loop of imports in each group of modules that import each other
    (a strongly connected component of more than one module).
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(module: str) -> None:
        # Tarjan's algorithm; the package is small, so recursion is fine.
        index[module] = low[module] = len(index)
        stack.append(module)
        for edge in graph.get(module, []):
            if edge.target not in index:
                visit(edge.target)
                low[module] = min(low[module], low[edge.target])
            elif edge.target in stack:
                low[module] = min(low[module], index[edge.target])
        if low[module] == index[module]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(group)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return [_loop(graph, group) for group in sorted(groups, key=min)]


def _loop(graph: dict[str, list[Edge]], group: set[str]) -> list[Edge]:
    """
    A shortest loop of imports through the first module of C{group}.
    """
    start = min(group)
    paths: dict[str, list[Edge]] = {start: []}
    queue = [start]
    for module in queue:
        for edge in graph[module]:
            if edge.target == start:
                return [*paths[module], edge]
            if edge.target in group and edge.target not in paths:
                paths[edge.target] = [*paths[module], edge]
                queue.append(edge.target)
    raise AssertionError(f"no loop through {start}")


def serviceImports(graph: dict[str, list[Edge]], package: str) -> list[Edge]:
    """
    The imports of a service module by another service module.
    """
    services = {f"{package}.{name}" for name in SERVICES}
    return [
        edge
        for edges in graph.values()
        for edge in edges
        if edge.source in services and edge.target in services
    ]


def report(graph: dict[str, list[Edge]], package: str) -> tuple[list[str], bool]:
    """
    The lines to print, and whether both rules hold.
    """

    def short(module: str) -> str:
        return module[len(package) + 1 :] if module != package else package

    def mark(edge: Edge) -> str:
        return short(edge.target) + ("" if edge.kind == TOP else f" ({edge.kind})")

    lines = [
        f"{package} import graph: module -> the {package} modules it imports",
        "(lazy: inside a function; type: only under TYPE_CHECKING)",
        "",
    ]
    for module in sorted(graph, key=short):
        targets = ", ".join(mark(edge) for edge in graph[module]) or "-"
        lines.append(f"{short(module)} -> {targets}")
    loops = cycles(graph)
    lines += ["", f"cycles: {len(loops) or 'none'}"]
    for loop in loops:
        lines.append("  " + " -> ".join([short(loop[0].source), *map(mark, loop)]))
    crossing = serviceImports(graph, package)
    lines.append(
        f"service modules importing service modules: {len(crossing) or 'none'}"
    )
    for edge in crossing:
        lines.append(f"  {short(edge.source)}:{edge.line} -> {mark(edge)}")
    return lines, not loops and not crossing


def main(argv: Sequence[str] | None = None) -> int:
    """
    Print the graph of the package directory named in C{argv} (by default
    C{src/netdemo}); return 1 if a rule is broken.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or any(arg.startswith("-") for arg in args):
        print(USAGE, file=sys.stderr)
        return 2
    package = Path(args[0]) if args else DEFAULT_PACKAGE
    lines, ok = report(importGraph(package), package.name)
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
