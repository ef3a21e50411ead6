"""tui's import graph has no cycle and flows one way: from the command line down to the data.

Every import in tui counts wherever it is written (at the top of a module, inside a function,
under `if TYPE_CHECKING:`): each is a dependency the reader has to follow, and a cycle of
them means no module of the cycle can be understood, or tested, on its own.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The layers, top to bottom, as module-name prefixes. A module belongs to the layer of its
# longest matching prefix, and may import modules of its own layer or of the layers below.
LAYERS: list[tuple[str, ...]] = [
    ("tui.__main__", "tui.cli"),  # parse the command line, dispatch to a command
    ("tui.commands",),  # one module per verb, and what they share
    ("tui.app",),  # the chat app: holds the session, switches screens
    ("tui.screens",),
    ("tui.widgets",),
    ("tui.session",),  # one conversation with several models, saved as it goes
    ("tui",),  # the rest: engine, cards, scenarios, checks, transcripts, history, archive, export, store, labels
]

Edges = dict[tuple[str, str], list[str]]  # (importer, imported) -> where, as "path:line"


def module_names(package: Path) -> dict[str, Path]:
    """Every module of the package folder by dotted name (a package by its own name)."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def import_graph(package: Path) -> Edges:
    """Who imports whom among the package's modules, from their source (nothing is imported).
    `from X import Y` is an edge to X.Y when Y is a module, else to X."""
    modules = module_names(package)

    def known(name: str) -> str | None:  # the module itself, else its nearest enclosing package of ours
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges: Edges = defaultdict(list)
    for source, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [known(alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the importer's package, up `level - 1` packages more
                    parts = source.split(".")[: len(source.split(".")) - node.level + is_package]
                    base = ".".join(parts + ([base] if base else []))
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else known(base) for alias in node.names
                ]
            for target in dict.fromkeys(targets):  # once per statement, in order
                if target is not None and target != source:
                    edges[(source, target)].append(f"{path.relative_to(package.parent)}:{node.lineno}")
    return edges


def layer_of(module: str) -> int:
    matches = [
        (len(prefix), index)
        for index, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    return max(matches)[1]


def cycles(edges: Edges) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    graph: dict[str, list[str]] = defaultdict(list)
    for source, target in edges:
        graph[source].append(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def described(edges: Edges, pairs: list[tuple[str, str]]) -> str:
    return "\n".join(
        f"  {source} -> {target}  ({', '.join(edges[(source, target)])})" for source, target in sorted(pairs)
    )


def test_the_import_graph_has_no_cycle() -> None:
    edges = import_graph(ROOT / "tui")
    found = cycles(edges)
    report = [
        f"cycle of {len(component)} modules:\n"
        + described(edges, [edge for edge in edges if edge[0] in component and edge[1] in component])
        for component in found
    ]
    assert not found, "\n".join(report)


def test_imports_flow_down_the_layers() -> None:
    """No module imports one of a higher layer (commands -> app -> screens -> widgets -> session -> the rest)."""
    edges = import_graph(ROOT / "tui")
    upward = [(source, target) for source, target in edges if layer_of(target) < layer_of(source)]
    assert not upward, "imports that go up a layer:\n" + described(edges, upward)


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The graph is not vacuous: plain, from-, relative, function-level and TYPE_CHECKING imports
    all count, and `from package import module` reaches the module."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "import pkg.b\nfrom pkg import c\nfrom pkg.sub import d\n",
        "b.py": "def f():\n    from .c import name\n",
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub.d import D\nname = 1\n",
        "sub/__init__.py": "from . import d\nfrom .. import a\n",
        "sub/d.py": "from ..b import f\nimport os\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    assert set(import_graph(package)) == {
        ("pkg.a", "pkg.b"),
        ("pkg.a", "pkg.c"),
        ("pkg.a", "pkg.sub.d"),
        ("pkg.b", "pkg.c"),
        ("pkg.c", "pkg.sub.d"),
        ("pkg.sub", "pkg.sub.d"),
        ("pkg.sub", "pkg.a"),
        ("pkg.sub.d", "pkg.b"),
    }


def test_a_cycle_and_an_upward_import_are_both_found() -> None:
    edges: Edges = {
        ("tui.screens.chat", "tui.app"): ["x.py:1"],
        ("tui.app", "tui.screens.chat"): ["y.py:2"],
        ("tui.cards", "tui.store"): ["z.py:3"],
    }
    assert cycles(edges) == [["tui.app", "tui.screens.chat"]]
    assert [(s, t) for s, t in edges if layer_of(t) < layer_of(s)] == [("tui.screens.chat", "tui.app")]
    assert layer_of("tui.commands.ask") == 1 and layer_of("tui.engine.local") == len(LAYERS) - 1
