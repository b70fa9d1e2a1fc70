"""One tree of errors for the whole product.

Domain errors carry a ``kind`` (a stable word), never an HTTP status: the server maps
kinds to statuses in one table, the SDK rebuilds these classes from the ``kind`` it
reads back, and the CLI turns any of them into a message and an exit code.
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "Forbidden",
    "Invalid",
    "NotFound",
    "OfficiumError",
    "TooLarge",
    "Unauthenticated",
    "Unavailable",
    "error_for_kind",
]


class OfficiumError(Exception):
    """Base of every error Officium reports to a person."""

    kind = "error"
    title = "Error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Invalid(OfficiumError):
    """The request is well-formed but its content breaks a rule."""

    kind = "invalid"
    title = "Invalid request"


class NotFound(OfficiumError):
    """The thing asked for is not recorded."""

    kind = "not-found"
    title = "Not found"


class Conflict(OfficiumError):
    """The request clashes with what is recorded."""

    kind = "conflict"
    title = "Conflict"


class Forbidden(OfficiumError):
    """The caller is known but may not do this."""

    kind = "forbidden"
    title = "Forbidden"


class Unauthenticated(OfficiumError):
    """No valid token came with the request."""

    kind = "unauthenticated"
    title = "Not authenticated"


class TooLarge(OfficiumError):
    """The request body is over the configured limit."""

    kind = "too-large"
    title = "Too large"


class Unavailable(OfficiumError):
    """A part the server needs (database, content store) is not answering."""

    kind = "unavailable"
    title = "Unavailable"


_BY_KIND: dict[str, type[OfficiumError]] = {
    cls.kind: cls
    for cls in (Invalid, NotFound, Conflict, Forbidden, Unauthenticated, TooLarge, Unavailable)
}


def error_for_kind(kind: str) -> type[OfficiumError]:
    """The error class for a ``kind`` word, or the base class for an unknown one."""
    return _BY_KIND.get(kind, OfficiumError)
