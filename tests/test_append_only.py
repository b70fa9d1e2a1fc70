"""The database itself refuses to change or remove audit rows, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from server import models
from server.models import AuditEvent, AuditHead, utcnow


def _refused(app, statement) -> str:
    with pytest.raises(sa.exc.DBAPIError) as caught, app.state.db.engine.begin() as connection:
        connection.execute(statement)
    return str(caught.value.orig)


_ROWS = {
    "checkpoint": (
        models.Checkpoint,
        {"tree_size": 10**9, "root": "0" * 64, "note": "x", "kid": "k"},
    ),
    "merkle_node": (models.MerkleNode, {"level": 60, "idx": 0, "hash": b"0" * 32}),
    "access_log": (
        models.AccessEntry,
        {"actor": "system", "actor_name": "x", "action": "test", "sealed_by_seq": 1},
    ),
}


@pytest.mark.parametrize("table", sorted(_ROWS))
def test_rows_once_written_cannot_be_changed_or_removed(app, table):
    model, values = _ROWS[table]
    columns = model.__table__.c
    with app.state.db.engine.begin() as connection:
        if "created_at" in columns or "at" in columns:
            values = {**values, ("at" if "at" in columns else "created_at"): utcnow()}
        connection.execute(sa.insert(model.__table__).values(**values))
    first = next(iter(values))
    changed = sa.update(model.__table__).values({first: values[first]})
    assert "append-only" in _refused(app, changed)
    assert "append-only" in _refused(app, sa.delete(model.__table__))


def test_an_existing_event_cannot_be_rewritten_or_removed(app):
    first = AuditEvent.__table__.c.seq == 1
    forged = sa.update(AuditEvent).where(first).values(canonical=b"{}")
    assert "append-only" in _refused(app, forged)
    assert "append-only" in _refused(app, sa.delete(AuditEvent).where(first))
    with app.state.db.engine.begin() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(AuditEvent)).scalar()


def test_the_head_only_moves_forward(app):
    backwards = sa.update(AuditHead).values(seq=0)
    assert "only moves forward" in _refused(app, backwards)
    assert "only moves forward" in _refused(app, sa.delete(AuditHead))


def test_truncate_is_refused_on_postgresql(app):
    if app.state.db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no TRUNCATE")
    assert "append-only" in _refused(app, sa.text("TRUNCATE audit_event"))
