"""Alembic migrations: from an empty database they build exactly the models' schema,
and they run down to nothing and up again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

import server.models  # registers the tables the migrations must match
from core.chain import GENESIS_HASH
from server import audit, directory
from server.db import Database, make_engine
from server.migrate import alembic_config, current_revision, head_revision, upgrade
from server.settings import Settings
from tests.conftest import PG_URL


@pytest.fixture
def empty_database(tmp_path) -> Iterator[Database]:
    """A database with no tables at all (not the suite's migrated template)."""
    if PG_URL:
        base = sa.make_url(PG_URL).set(drivername="postgresql+psycopg")
        name = f"officium_m{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = base.set(database=name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{tmp_path / 'empty.db'}"
    database = Database(make_engine(Settings(database_url=url, data_dir=tmp_path)))
    yield database
    database.dispose()
    if PG_URL:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def tables(database: Database) -> set[str]:
    return set(sa.inspect(database.engine).get_table_names())


def schema_differences(database: Database) -> list:
    """What autogenerate would still write: the migrated schema against the models."""
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, SQLModel.metadata)


def downgrade_to_base(database: Database) -> None:
    config = alembic_config()
    with database.engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
        connection.commit()


def test_upgrading_an_empty_database_builds_exactly_the_models(empty_database):
    assert tables(empty_database) == set()
    assert current_revision(empty_database.engine) is None
    upgrade(empty_database.engine)
    assert tables(empty_database) == set(SQLModel.metadata.tables) | {"alembic_version"}
    assert schema_differences(empty_database) == []
    assert current_revision(empty_database.engine) == head_revision()
    with empty_database.reading() as session:
        head = session.get(server.models.AuditHead, 1)
        assert (head.seq, head.hash) == (0, GENESIS_HASH)


def test_upgrading_twice_changes_nothing(empty_database):
    upgrade(empty_database.engine)
    with empty_database.writing() as session:
        directory.bootstrap(session, token="off_migration-test-token")
    upgrade(empty_database.engine)  # what every replica does when it starts
    assert schema_differences(empty_database) == []
    with empty_database.reading() as session:
        check = audit.check_chain(session)
    assert (check.ok, check.checked) == (True, 1)


def test_downgrading_to_base_and_upgrading_again_works(empty_database):
    upgrade(empty_database.engine)
    with empty_database.writing() as session:
        directory.bootstrap(session, token="off_migration-test-token")
    downgrade_to_base(empty_database)
    assert tables(empty_database) <= {"alembic_version"}
    assert current_revision(empty_database.engine) is None

    upgrade(empty_database.engine)
    assert schema_differences(empty_database) == []
    with empty_database.writing() as session:
        assert directory.bootstrap(session, token="off_migration-test-token") is not None
    with empty_database.reading() as session:
        check = audit.check_chain(session)
    assert (check.ok, check.checked, check.head_seq) == (True, 1, 1)
