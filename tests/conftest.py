"""Fixtures: the real app on a fresh, migrated database per test.

SQLite by default; PostgreSQL when OFFICIUM_TEST_DATABASE_URL is set. Each test gets
its own database, copied from a template migrated once per session (a file copy on
SQLite, CREATE DATABASE ... TEMPLATE on PostgreSQL) — never a shared one cleaned up.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from server.app import create_app
from server.db import Database, make_engine
from server.settings import Settings

ADMIN_TOKEN = "off_test-admin-token-0123456789abcdef"
PG_URL = os.environ.get("OFFICIUM_TEST_DATABASE_URL")


def _migrate_and_bootstrap(url: str, data_dir: Path) -> None:
    from server import directory
    from server.migrate import upgrade

    settings = Settings(data_dir=data_dir, database_url=url)
    database = Database(make_engine(settings))
    try:
        upgrade(database.engine)
        with database.writing() as session:
            directory.bootstrap(session, token=ADMIN_TOKEN)
    finally:
        database.dispose()


class _SqliteDatabases:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.template = root / "template.db"
        _migrate_and_bootstrap(f"sqlite:///{self.template}", root)

    def fresh(self, where: Path) -> str:
        target = where / "officium.db"
        where.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.template, target)
        return f"sqlite:///{target}"

    def drop(self, url: str) -> None:
        """SQLite files go with the test's temporary directory."""

    def close(self) -> None:
        """Nothing is held open."""


class _PostgresDatabases:
    def __init__(self, url: str, root: Path) -> None:
        self.base = sa.make_url(url).set(drivername="postgresql+psycopg")
        self.admin = sa.create_engine(
            self.base, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
        )
        self.prefix = f"officium_t{uuid.uuid4().hex[:8]}"
        self.template = f"{self.prefix}_template"
        self.counter = itertools.count()
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{self.template}"')
        _migrate_and_bootstrap(self.base.set(database=self.template).render_as_string(False), root)

    def fresh(self, where: Path) -> str:
        name = f"{self.prefix}_{next(self.counter)}"
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return self.base.set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        name = sa.make_url(url).database
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
        self.admin.dispose()


@pytest.fixture(scope="session")
def databases(tmp_path_factory):
    """Makes a fresh migrated database (with the bootstrap admin) per call."""
    root = tmp_path_factory.mktemp("template")
    factory = _PostgresDatabases(PG_URL, root) if PG_URL else _SqliteDatabases(root)
    yield factory
    factory.close()


@pytest.fixture
def database_url(databases, tmp_path) -> Iterator[str]:
    url = databases.fresh(tmp_path / "db")
    yield url
    databases.drop(url)


@pytest.fixture
def settings(tmp_path, database_url) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


class MovableClock:
    """The app's clock in tests: real time plus an offset the test can move forward."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def app(settings, clock):
    return create_app(settings, clock=clock)


@pytest.fixture
def http(app) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def admin_token() -> str:
    return ADMIN_TOKEN


@pytest.fixture
def client_for(http) -> Callable:
    """A factory of SDK clients over the in-process app, one per token."""
    from clients.sdk import OfficiumClient

    def make(token: str | None):
        return OfficiumClient("http://testserver", token, http_client=http)

    return make


@pytest.fixture
def admin(client_for):
    return client_for(ADMIN_TOKEN)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def commit_id(n: int) -> str:
    return hashlib.sha1(str(n).encode()).hexdigest()


class AgentDouble:
    """Speaks the agent's side of the wire through raw HTTP: upload, then report.

    It stands in for the agent (a later issue) so the register can be tested alone.
    """

    def __init__(self, http: TestClient, token: str, folder: str) -> None:
        self.http = http
        self.token = token
        self.folder = folder
        self.commits = itertools.count(1)
        self.headers = {"Authorization": f"Bearer {token}"}

    def upload(self, data: bytes):
        return self.http.put(f"/api/v1/content/{sha(data)}", content=data, headers=self.headers)

    def report(self, *reports: dict, expect: int = 200):
        response = self.http.post(
            f"/api/v1/folders/{self.folder}/reports",
            json={"reports": list(reports)},
            headers=self.headers,
        )
        assert response.status_code == expect, response.text
        return response.json()

    def entry(
        self,
        path: str,
        data: bytes | None,
        *,
        kind: str = "modified",
        commit: str | None = None,
        **more,
    ) -> dict:
        entry = {
            "path": path,
            "kind": kind,
            "commit": commit or commit_id(next(self.commits) + 10_000 * id(self) % 997),
            "observed_at": datetime.now(UTC).isoformat(),
            **more,
        }
        if data is not None:
            entry.update(sha256=sha(data), size=len(data))
        return entry

    def save(self, path: str, data: bytes, **more) -> dict:
        """Upload and report one save; return its result."""
        assert self.upload(data).status_code in (200, 201)
        return self.report(self.entry(path, data, **more))["results"][0]


@pytest.fixture
def office_and_folder(http):
    """An office 'Planning' and a folder 'plans' it owns by default."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert (
        http.post("/api/v1/offices", json={"name": "Planning"}, headers=headers).status_code == 201
    )
    response = http.post(
        "/api/v1/folders",
        json={"name": "plans", "root": "/srv/share/plans", "default_owner": "Planning"},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return "Planning", "plans"


@pytest.fixture
def agent(http, office_and_folder) -> AgentDouble:
    """The agent of folder 'plans', speaking over HTTP."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = http.post("/api/v1/tokens", json={"folder": "plans"}, headers=headers)
    assert response.status_code == 201, response.text
    return AgentDouble(http, response.json()["token"], "plans")


@pytest.fixture
def live_server(app):
    """The app behind a real uvicorn server on a free loopback port; yields its URL."""
    import threading

    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the test server did not start"
        thread.join(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def share(tmp_path) -> Path:
    """An empty shared folder."""
    folder = tmp_path / "share"
    folder.mkdir()
    return folder


@pytest.fixture
def start_agent(live_server, tmp_path):
    """Starts FolderAgents on folders against the live server; stops them after the test."""
    from agent.runner import FolderAgent
    from agent.settings import AgentSettings
    from clients.sdk import OfficiumClient

    started = []
    client = OfficiumClient(live_server, ADMIN_TOKEN)

    def start(folder: Path, *, poll: bool = False, name: str | None = None, **settings):
        settings.setdefault("state_dir", tmp_path / "agent-state")
        settings.setdefault("poll_seconds", 0.1)
        folder_agent = FolderAgent(
            folder,
            settings=AgentSettings(**settings),
            client=client,
            name=name,
            poll=poll,
        )
        folder_agent.start()
        started.append(folder_agent)
        return folder_agent

    yield start
    for folder_agent in reversed(started):
        folder_agent.stop(drain_seconds=0)
    client.close()


@pytest.fixture
def live_admin(live_server):
    """An SDK client for the live server, as the bootstrap admin."""
    from clients.sdk import OfficiumClient

    with OfficiumClient(live_server, ADMIN_TOKEN) as client:
        yield client
