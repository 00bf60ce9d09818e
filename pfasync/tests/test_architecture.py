"""The dependency rules of docs/development.md, read from the code: `ops` -> `synclog` -> `mirror`, never
back, and no import circles.

The import graph is built with `ast` from every production module (tests and migrations aside), with
every import wherever it stands (a function's body, an `if TYPE_CHECKING:` block) and, for the
direction rules, every string that names a project module ("synclog.tasks.write_after_commit" given
to django-q2, "pfasync.logs.JsonFormatter" in a logging config): a name in a string binds the two
modules as surely as an import does, only later.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = ("pfasync", "mirror", "synclog", "ops")
# Which app may not depend on which, by import or by name.
FORBIDDEN = {("mirror", "synclog"), ("mirror", "ops"), ("synclog", "ops")}


def _production_modules() -> dict[str, Path]:
    modules = {}
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "tests" in parts or "migrations" in parts:
                continue
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


MODULES = _production_modules()


def _known_module(dotted: str) -> str | None:
    """The project module `dotted` names, or the module holding the attribute it names."""
    while dotted:
        if dotted in MODULES:
            return dotted
        dotted = dotted.rpartition(".")[0]
    return None


def _imports(name: str, tree: ast.AST) -> set[str]:
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from synclog import worker` imports the module synclog.worker.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        found.update(target for dotted in targets if (target := _known_module(dotted)))
    return found - {name}


def _named_in_strings(name: str, tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(APPS):
            text = node.value.strip()
            if "." in text and " " not in text and (target := _known_module(text)):
                found.add(target)
    return found - {name}


def _graphs() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    imports, names = {}, {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        imports[name] = _imports(name, tree)
        names[name] = _named_in_strings(name, tree)
    return imports, names


IMPORTS, NAMED = _graphs()


def _circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _app(module: str) -> str:
    return module.partition(".")[0]


def test_the_graph_sees_imports_inside_functions_and_names_in_strings():
    # Guards the test itself: these edges exist and are allowed, so a graph without them reads nothing.
    assert "mirror.models" in IMPORTS["synclog.engine"]
    assert "django" not in " ".join(IMPORTS["synclog.engine"])
    assert "synclog.worker" in IMPORTS["synclog.apps"]  # imported inside `ready()`
    assert "synclog.tasks" in NAMED["synclog.worker"]  # the schedules name their tasks


@pytest.mark.parametrize(("low", "high"), sorted(FORBIDDEN))
def test_a_lower_app_neither_imports_nor_names_a_higher_one(low, high):
    edges = [
        f"{module} {how} {target}"
        for graph, how in ((IMPORTS, "imports"), (NAMED, "names"))
        for module, targets in graph.items()
        if _app(module) == low
        for target in sorted(targets)
        if _app(target) == high
    ]
    assert edges == [], f"{low} must not depend on {high}"


def test_no_import_circle():
    circles = [sorted(circle) for circle in _circles(IMPORTS)]
    assert circles == []


def test_the_read_and_the_write_run_share_the_lifecycle_and_not_each_other():
    assert "synclog.writeback" not in IMPORTS["synclog.engine"]
    assert "synclog.engine" not in IMPORTS["synclog.writeback"]
    assert "synclog.runs" in IMPORTS["synclog.engine"] and "synclog.runs" in IMPORTS["synclog.writeback"]
