"""The testing rules of docs/development.md, read from the tests.

No test replaces an attribute of our own code (`monkeypatch.setattr`, `monkeypatch.delattr`, `setitem`, `mock.patch` and its `.object`,
`.dict` and `.multiple`, a plain `setattr`) so it reaches what it covers through real data, a real
setting, the real simulator.

The target is read with `ast`: a string naming a project module ("mirror.pems.fast.MAX_KNOWN_COLUMNS"),
or an expression rooted at a name imported from one (`mirror_admin.BoundedValuesFilter`). Third-party
objects (django-q2's `Conf`, `django_q.tasks.async_task`) stay patchable: they are not ours to reach.

No test asserts right after a sleep: what a test waits for it waits for as a condition (a polling
loop, `wait_until`), so a slow machine makes it slower, not wrong. A sleep that is part of the
scenario (a lease running out) is followed by the act that depends on it, not by an assertion.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = ("pfasync", "mirror", "synclog", "ops")
PATCHERS = {
    f"{prefix}{name}"
    for prefix in ("", "mock.", "unittest.mock.")
    for name in ("patch", "patch.object", "patch.dict", "patch.multiple")
}
MONKEYPATCH_METHODS = {"setattr", "delattr", "setitem", "delitem"}


def _test_modules() -> list[Path]:
    paths = [ROOT / "conftest.py"]
    for app in APPS:
        paths += sorted((ROOT / app / "tests").rglob("*.py"))
    return [path for path in paths if path.exists()]


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (head := _dotted(node.value)):
        return f"{head}.{node.attr}"
    return None


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute | ast.Subscript | ast.Call):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _is_project(dotted: str) -> bool:
    return dotted.split(".")[0] in APPS


def _project_names(tree: ast.AST) -> set[str]:
    """The names a module binds to project modules, or to what it imports from them."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_project(alias.name):
                    names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and _is_project(node.module):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def _is_patch(call: ast.Call) -> bool:
    func = _dotted(call.func) or ""
    if func in PATCHERS or func == "setattr":
        return True
    return isinstance(call.func, ast.Attribute) and call.func.attr in MONKEYPATCH_METHODS and "monkeypatch" in func


def patches_of_project_code(source: str) -> list[int]:
    """The lines of `source` where a test patches a project module's attribute."""
    tree = ast.parse(source)
    project = _project_names(tree)
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args or not _is_patch(node):
            continue
        target = node.args[0]
        if isinstance(target, ast.Constant) and isinstance(target.value, str):
            ours = _is_project(target.value)
        else:
            ours = _root_name(target) in project
        if ours:
            lines.append(node.lineno)
    return sorted(lines)


def _is_sleep(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Call)
        and (_dotted(statement.value.func) or "").split(".")[-1] == "sleep"
    )


def _waits(statement: ast.stmt) -> bool:
    """Whether the statement waits for a condition (calls a `wait...`/`...until` function)."""
    for node in ast.walk(statement):
        if isinstance(node, ast.Call):
            name = (_dotted(node.func) or "").split(".")[-1].lower()
            if "wait" in name or "until" in name:
                return True
    return False


def sleeps_then_asserts(source: str) -> list[int]:
    """The lines of `source` where a `sleep(...)` statement is followed, in its block, by an
    assertion with no wait for a condition between them."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        for body in (getattr(node, field, None) for field in ("body", "orelse", "finalbody")):
            if not isinstance(body, list):
                continue
            for index, statement in enumerate(body):
                if not _is_sleep(statement):
                    continue
                for following in body[index + 1 :]:
                    if _waits(following):
                        break
                    if isinstance(following, ast.Assert):
                        lines.append(statement.lineno)
                        break
    return sorted(lines)


def test_the_rule_sees_every_way_of_patching_our_code_and_only_ours():
    source = """
from unittest import mock
from unittest.mock import patch
import mirror.pems.fast
from mirror import admin as mirror_admin
from mirror.admin import BoundedValuesFilter
from django_q.conf import Conf

def test(monkeypatch, api):
    monkeypatch.setattr(mirror_admin, "_estimated_rows", len)
    monkeypatch.setattr("mirror.pems.fast.MAX_KNOWN_COLUMNS", 2)
    monkeypatch.setattr(BoundedValuesFilter, "sample_size", 1)
    with mock.patch("synclog.runs.sync_claim"):
        pass
    with patch.object(mirror.pems.fast, "MAX_KNOWN_COLUMNS", 2):
        pass
    setattr(mirror_admin.BoundedValuesFilter, "sample_size", 1)
    monkeypatch.setitem(mirror_admin.__dict__, "x", 1)
    monkeypatch.setattr(Conf, "SYNC", True)
    monkeypatch.setattr("django_q.tasks.async_task", len)
    monkeypatch.setenv("SYNC_ORGS", "RIO")
    api.patch("/api/organizations/RIO", {"name": "Rio"})
"""
    assert patches_of_project_code(source) == [10, 11, 12, 13, 15, 17, 18]


def test_no_test_patches_our_own_code():
    found = {
        str(path.relative_to(ROOT)): lines
        for path in _test_modules()
        if (lines := patches_of_project_code(path.read_text()))
    }
    assert found == {}, "reach the behaviour through real data or a setting, not by patching our code"


def test_the_sleep_rule_sees_an_assertion_right_after_a_sleep_and_not_a_polling_loop():
    source = """
import time

def test(run):
    time.sleep(0.5)
    assert run.count == 3
    while not run.done():
        time.sleep(0.1)
    assert run.done()
    if run:
        sleep(1)
        assert run.count == 4
    time.sleep(3.5)  # the lease runs out
    run.check()
    assert run.failed()
    time.sleep(3.5)
    run.check()
    wait_until(run.failed)
    assert run.error
"""
    assert sleeps_then_asserts(source) == [5, 11, 13]


def test_no_test_asserts_right_after_a_sleep():
    found = {
        str(path.relative_to(ROOT)): lines
        for path in _test_modules()
        if (lines := sleeps_then_asserts(path.read_text()))
    }
    assert found == {}, "wait for the condition (wait_until) instead of sleeping and asserting"
