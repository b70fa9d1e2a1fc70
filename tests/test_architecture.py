"""The shape of the code, read with ``ast``: what may import what, who commits, who
appends audit rows, who reads the environment.

Each rule is checked on the real tree and, first, on small snippets that break it, so a
rule that could never fail is caught too.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FRAMEWORKS = frozenset({
    "fastapi", "starlette", "sqlmodel", "sqlalchemy", "alembic", "psycopg", "git", "httpx",
    "uvicorn", "typer", "click", "rich", "watchdog", "prometheus_client",
})
OUR_PROGRAMS = frozenset({"server", "agent", "clients"})
_AUDIT_TABLE_WRITE = re.compile(
    r"\b(insert\s+into|update|delete\s+from)\s+[\"'`]?audit_(event|head)\b", re.IGNORECASE
)


def sources(package: str) -> dict[str, ast.Module]:
    """Every module of a top-level package, parsed, keyed by its path from the root."""
    return {
        path.relative_to(ROOT).as_posix(): ast.parse(path.read_text("utf-8"), filename=str(path))
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def imported_roots(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """The top-level name of every absolute import, wherever it sits (functions included)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]
        elif (
            isinstance(node, ast.Call)
            and _called_name(node) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value.split(".")[0]


def imported_names(tree: ast.AST, module: str) -> Iterator[tuple[int, str]]:
    """Names imported ``from module import ...``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == module:
            for alias in node.names:
                yield node.lineno, alias.name


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def forbidden_imports(trees: dict[str, ast.Module], forbidden: frozenset[str]) -> list[str]:
    return [
        f"{path}:{line} imports {root}"
        for path, tree in trees.items()
        for line, root in imported_roots(tree)
        if root in forbidden
    ]


def calls_to(tree: ast.AST, *names: str) -> list[int]:
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _called_name(node) in names
    ]


def audit_row_writes(tree: ast.AST) -> list[str]:
    """Ways a module could write the audit tables other than through server.audit."""
    found = [
        f"{line}: constructs an audit row" for line in calls_to(tree, "AuditEvent", "AuditHead")
    ]
    found += [
        f"{line}: imports {name} from server.models"
        for line, name in imported_names(tree, "server.models")
        if name in ("AuditEvent", "AuditHead", "*")
    ]
    found += [
        f"{node.lineno}: SQL writing an audit table"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and _AUDIT_TABLE_WRITE.search(node.value)
    ]
    return found


def environment_uses(tree: ast.AST, *, writes_allowed: bool = False) -> list[int]:
    """Lines that touch the process environment (reads always; writes unless allowed)."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            names = {alias.name for alias in node.names}
            if names & {"environ", "environb", "getenv"}:
                lines.append(node.lineno)
        if not (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in ("environ", "environb", "getenv", "getenvb", "putenv")
        ):
            continue
        if writes_allowed and node.attr == "environ" and _is_environment_write(node, parents):
            continue
        lines.append(node.lineno)
    return lines


def _is_environment_write(node: ast.Attribute, parents: dict) -> bool:
    parent = parents.get(node)
    if isinstance(parent, ast.Attribute) and parent.attr == "update":
        return isinstance(parents.get(parent), ast.Call)
    return isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store)


# ------------------------------------------- the rules can fail (checked first)


@pytest.mark.parametrize(
    ("snippet", "found"),
    [
        ("import fastapi", ["fastapi"]),
        ("import sqlalchemy.orm as orm", ["sqlalchemy"]),
        ("from starlette.requests import Request", ["starlette"]),
        ("def f():\n    from server.db import Database", ["server"]),
        ("import importlib\nimportlib.import_module('server.app')", ["importlib", "server"]),
        ("x = __import__('httpx')", ["httpx"]),
        ("from . import sibling\nfrom .x import y", []),
        ("import json, hashlib", ["json", "hashlib"]),
    ],
)
def test_imports_are_found_wherever_they_hide(snippet, found):
    assert [root for _, root in imported_roots(ast.parse(snippet))] == found


@pytest.mark.parametrize(
    ("snippet", "count"),
    [
        ("row = AuditEvent(seq=1)", 1),
        ("row = models.AuditHead(id=1)", 1),
        ("from server.models import AuditEvent, Document", 1),
        ("from server.models import *", 1),
        ("session.execute(text('UPDATE audit_event SET hash = :h'))", 1),
        ("session.execute(text('delete from \"audit_head\"'))", 1),
        ("session.execute(text('insert into audit_event values (1)'))", 1),
        ("page = schemas.AuditEventPage(events=[], next=None)", 0),
        ("audit.append(session, actor=a, action='x', subject={})", 0),
        ("from server.models import Document", 0),
        ("q = 'SELECT seq FROM audit_event'", 0),
    ],
)
def test_audit_row_writes_are_found(snippet, count):
    assert len(audit_row_writes(ast.parse(snippet))) == count


@pytest.mark.parametrize(
    ("snippet", "writes_allowed", "count"),
    [
        ("import os\nos.environ['X']", False, 1),
        ("import os\nos.environ.get('X')", False, 1),
        ("import os\nos.getenv('X')", False, 1),
        ("from os import environ", False, 1),
        ("from os import getenv as g", False, 1),
        ("import os\nos.environ.update({'A': '1'})", False, 1),
        ("import os\nos.environ.update({'A': '1'})", True, 0),
        ("import os\nos.environ['A'] = '1'", True, 0),
        ("import os\nvalue = os.environ['A']", True, 1),
        ("import os\nos.environ.get('A')", True, 1),
        ("import os\nos.path.join('a', 'b')", False, 0),
    ],
)
def test_environment_uses_are_found(snippet, writes_allowed, count):
    assert len(environment_uses(ast.parse(snippet), writes_allowed=writes_allowed)) == count


# -------------------------------------------------------------- the real tree


@pytest.fixture(scope="module")
def core() -> dict[str, ast.Module]:
    trees = sources("core")
    assert {"core/canonical.py", "core/chain.py", "core/schemas.py"} <= set(trees)
    return trees


@pytest.fixture(scope="module")
def server() -> dict[str, ast.Module]:
    trees = sources("server")
    assert {"server/audit.py", "server/db.py", "server/app.py"} <= set(trees)
    return trees


def test_the_core_imports_no_framework_and_none_of_the_programs(core):
    assert forbidden_imports(core, FRAMEWORKS | OUR_PROGRAMS) == []


@pytest.mark.parametrize("package", ["agent", "clients"])
def test_the_agent_and_the_clients_never_import_the_server(package):
    trees = sources(package)
    assert trees, f"{package}/ has no modules"
    assert forbidden_imports(trees, frozenset({"server"})) == []


def test_services_speak_no_http(server):
    # Domain errors carry no HTTP codes; only the app, its routers and the command that
    # runs it know about the web framework.
    web = {"server/app.py", "server/asgi.py", "server/commands.py"}
    services = {
        path: tree for path, tree in server.items()
        if path not in web and not path.startswith(("server/api/", "server/migrations/"))
    }
    assert "server/reports.py" in services
    assert forbidden_imports(services, frozenset({"fastapi", "starlette", "uvicorn"})) == []


def test_only_the_audit_module_writes_audit_rows(server):
    exempt = {"server/audit.py", "server/models.py"}
    offenders = {
        path: found
        for path, tree in server.items()
        if path not in exempt and not path.startswith("server/migrations/")
        for found in [audit_row_writes(tree)]
        if found
    }
    assert offenders == {}
    # ...and the audit module really is where events are written.
    assert any(
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "AuditEvent"
        and node.attr == "__table__"
        for node in ast.walk(server["server/audit.py"])
    )


def test_nothing_below_the_request_boundary_commits(server):
    allowed = {"server/db.py", "server/migrate.py"}
    commits = {
        path: lines
        for path, tree in server.items()
        if path not in allowed
        for lines in [calls_to(tree, "commit")]
        if lines
    }
    assert commits == {}
    assert calls_to(server["server/db.py"], "commit")  # the one place a request commits


def test_only_the_settings_read_the_environment(server):
    uses = {
        path: lines
        for path, tree in server.items()
        if path != "server/settings.py"
        # The multi-worker `serve` hands its options to worker processes through it.
        for lines in [environment_uses(tree, writes_allowed=path == "server/commands.py")]
        if lines
    }
    assert uses == {}
