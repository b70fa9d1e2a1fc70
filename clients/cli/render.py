"""Rich renderings of the wire models, for people at a terminal.

Every value that comes from the register goes into a ``Text`` (never into markup), so a
file called ``plan [draft].docx`` prints as it is named.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from core.schemas import (
    AuditEvent,
    Awaiting,
    ChainCheck,
    DocumentStatus,
    History,
    VerifyResult,
    Version,
    VersionRef,
)

__all__ = [
    "actor_name",
    "awaiting_text",
    "chain_check",
    "document_name",
    "documents_table",
    "events_table",
    "history",
    "moment",
    "records_table",
    "short_hash",
    "status_panel",
    "verify_result",
    "versions_table",
]

_NONE = Text("—", style="dim")


def short_hash(sha256: str) -> str:
    """The first 12 hex digits of a SHA-256, enough to tell versions apart by eye."""
    return sha256[:12]


def moment(value: datetime | str | None) -> str:
    """A time in the reader's zone, to the minute."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    return value.astimezone().strftime("%Y-%m-%d %H:%M")


def document_name(document: DocumentStatus) -> str:
    """``FOLDER:path``, the way the CLI accepts it back."""
    return f"{document.folder}:{document.path}"


def _version(ref: VersionRef | None) -> Text:
    if ref is None:
        return _NONE
    return Text(f"v{ref.number}  {short_hash(ref.sha256)}")


def awaiting_text(awaiting: Sequence[Awaiting]) -> Text:
    """Whose move it is, one party per line."""
    if not awaiting:
        return _NONE
    lines = []
    for item in awaiting:
        line = f"{item.party}: {item.action} (since {moment(item.since)}"
        line += f", due {moment(item.due)})" if item.due else ")"
        lines.append(line)
    return Text("\n".join(lines))


def status_panel(document: DocumentStatus) -> Panel:
    """One document: owner, state, latest and final versions, whose move it is."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("owner", Text(document.owner_office or "—"))
    grid.add_row("state", Text(document.state.value + ("  (deleted)" if document.deleted else "")))
    grid.add_row("latest", _version(document.latest))
    grid.add_row("final", _version(document.final))
    grid.add_row("awaiting", awaiting_text(document.awaiting))
    title = Text(f"{document_name(document)}  #{document.id}")
    return Panel(grid, title=title, title_align="left", expand=False)


def documents_table(documents: Iterable[DocumentStatus]) -> Table:
    """Documents with their state, owner and versions."""
    table = Table(show_edge=False, pad_edge=False)
    for column in ("id", "document", "state", "owner", "latest", "final", "awaiting"):
        table.add_column(column, justify="right" if column == "id" else "left")
    for document in documents:
        table.add_row(
            str(document.id),
            Text(document_name(document), style="strike" if document.deleted else ""),
            document.state.value,
            Text(document.owner_office or "—"),
            f"v{document.latest.number}",
            f"v{document.final.number}" if document.final else _NONE,
            Text(", ".join(item.party for item in document.awaiting)),
        )
    return table


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def versions_table(versions: Iterable[Version], *, final: VersionRef | None) -> Table:
    """A document's versions, oldest first, marking the final one."""
    table = Table(title="versions", title_justify="left", show_edge=False, pad_edge=False)
    for column in ("v", "sha256", "size", "author", "recorded", ""):
        table.add_column(column, justify="right" if column in ("v", "size") else "left")
    for version in versions:
        is_final = final is not None and final.number == version.number
        table.add_row(
            str(version.number),
            short_hash(version.sha256),
            _size(version.size),
            Text(version.author),
            moment(version.recorded_at),
            Text("final", style="bold green") if is_final else "",
        )
    return table


def actor_name(actor: dict[str, Any]) -> str:
    """Who acted, as briefly as the event allows."""
    for key in ("username", "name", "folder", "kind"):
        if actor.get(key):
            return str(actor[key])
    return "—"


def events_table(events: Iterable[AuditEvent], *, title: str | None = None) -> Table:
    """Audit events in order: sequence, time, action, actor, hash."""
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for column in ("seq", "time", "action", "actor", "hash"):
        table.add_column(column, justify="right" if column == "seq" else "left")
    for event in events:
        table.add_row(
            str(event.seq),
            moment(event.time),
            Text(event.action),
            Text(actor_name(event.actor)),
            short_hash(event.hash),
        )
    return table


def history(record: History) -> Group:
    """A document's status, every version, every event."""
    return Group(
        status_panel(record.document),
        versions_table(record.versions, final=record.document.final),
        Text(""),
        events_table(record.events, title="events"),
    )


def verify_result(result: VerifyResult, *, label: str) -> RenderableType:
    """Which recorded versions a local copy is, and whether it is the final one."""
    if not result.matches:
        return Text(f"{label} ({short_hash(result.sha256)}) is not a recorded version")
    lines = []
    for match in result.matches:
        facts = ["the latest" if match.is_latest else f"superseded by v{match.superseded_by}"]
        if match.is_final:
            facts.append("final")
        if match.deleted:
            facts.append("document deleted")
        lines.append(
            f"{label} is v{match.number} of {match.folder}:{match.path} "
            f"(#{match.document_id}): {', '.join(facts)}"
        )
    return Text("\n".join(lines))


def chain_check(check: ChainCheck, *, where: str) -> Text:
    """The outcome of a chain check in one line."""
    if check.ok:
        return Text(
            f"OK: {check.checked} events verified ({where}); head #{check.head_seq} "
            f"{check.head_hash}",
            style="green",
        )
    return Text(
        f"BROKEN at event #{check.first_broken_seq} ({where}): {check.reason}; "
        f"{check.checked} events verified before it",
        style="bold red",
    )


def records_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A plain table of directory records (offices, persons, tokens ...)."""
    table = Table(show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(column, justify="right" if column == "id" else "left")
    for row in rows:
        table.add_row(*(Text("—" if cell is None else str(cell)) for cell in row))
    return table
