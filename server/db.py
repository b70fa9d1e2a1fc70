"""Engines and transactions: the request boundary is the only place that commits.

Every writing transaction is serialised: on SQLite it starts with ``BEGIN IMMEDIATE``
(the database's single writer lock, taken up front so two writers never deadlock on
an upgrade), on PostgreSQL it locks the audit chain's head row first (see
:func:`server.audit.lock_chain`). Appends to the chain are therefore gapless without a
SEQUENCE, and version numbers per document cannot race.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session

from core.errors import Unavailable
from server import audit
from server.settings import Settings

__all__ = ["Database", "make_engine"]

_BEGIN_OPTION = "officium_begin"


def make_engine(settings: Settings) -> Engine:
    """An engine for the configured database, tuned for Officium's transactions."""
    url = sa.make_url(settings.resolved_database_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, settings)
    if url.get_backend_name() == "postgresql" and url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return sa.create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=True,
    )


def _sqlite_engine(url: sa.URL, settings: Settings) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url,
        connect_args={"timeout": 60, "check_same_thread": False},
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
    )
    synchronous = settings.sqlite_synchronous

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Take transaction control away from the driver so BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        # Path prefixes are case-sensitive, as they are on PostgreSQL.
        cursor.execute("PRAGMA case_sensitive_like=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        mode = connection.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


class Database:
    """The process's engine, handing out reading and writing sessions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for queries; closing it ends its transaction without committing.

        (Closing rather than rolling back keeps loaded objects readable after the block.)
        """
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A serialised transaction, committed when the block ends without error."""
        options = {_BEGIN_OPTION: "IMMEDIATE"} if self.is_sqlite else {}
        with Session(self.engine, expire_on_commit=False) as session:
            session.connection(execution_options=options)
            audit.lock_chain(session)
            try:
                yield session
                audit.finish(session)
            except BaseException:
                audit.forget(session)
                session.rollback()
                raise
            session.commit()

    def ping(self) -> None:
        """Raise ``Unavailable`` unless the database answers."""
        try:
            with self.engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
        except sa.exc.SQLAlchemyError as exc:
            raise Unavailable(f"the database is not answering: {type(exc).__name__}") from exc

    def check_schema(self) -> None:
        """Raise ``Unavailable`` unless the database is migrated to this code's revision."""
        from server.migrate import current_revision, head_revision

        current, head = current_revision(self.engine), head_revision()
        if current != head:
            raise Unavailable(
                f"the database schema is at revision {current or 'none'}, this server needs "
                f"{head}: run 'officium serve' once (it migrates) or 'alembic upgrade head'"
            )

    def dispose(self) -> None:
        self.engine.dispose()
