"""What an attacker with the database owner's rights can do: lift the append-only guards.

Tamper tests use this to alter the trail the way such an attacker would, and then show
that the alteration is found anyway.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["lift_append_only_guards"]


def lift_append_only_guards(connection: sa.Connection) -> None:
    """Disable the triggers that refuse UPDATE and DELETE on the audit tables."""
    if connection.dialect.name == "postgresql":
        # A superuser's session can skip ordinary triggers until the transaction ends.
        connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        return
    names = connection.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    ).scalars()
    for name in list(names):
        connection.exec_driver_sql(f'DROP TRIGGER "{name}"')
