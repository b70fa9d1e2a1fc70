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
    AccessRecord,
    AuditEvent,
    Awaiting,
    ChainCheck,
    DecisionView,
    DocumentStatus,
    FinalVersion,
    History,
    InboxItem,
    Removal,
    ReviewView,
    VerifyResult,
    Version,
    VersionRef,
)

__all__ = [
    "access_table",
    "actor_name",
    "awaiting_text",
    "chain_check",
    "decisions_table",
    "document_name",
    "documents_table",
    "events_table",
    "final_panel",
    "history",
    "inbox_table",
    "moment",
    "records_table",
    "removal_text",
    "review_panel",
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


def _grid() -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    return grid


def _pinned(review: ReviewView) -> str:
    """The pinned version, and whether a newer one has been recorded since."""
    text = f"v{review.version.number}  {short_hash(review.version.sha256)}"
    return text if review.pinned_is_latest else f"{text}  (no longer the latest version)"


def removal_text(removal: Removal) -> str:
    """Who removed a deleted document's file, the agent's author hint, and when."""
    parts = [f"by {removal.by}"]
    if removal.reason:
        parts.append(removal.reason)
    parts.append(f"author hint: {removal.author_hint}" if removal.author_hint else "no author hint")
    parts.append(f"at {moment(removal.at)} (event #{removal.seq})")
    return "; ".join(parts)


def status_panel(document: DocumentStatus, *, review: ReviewView | None = None) -> Panel:
    """One document: owner, state, latest and final versions, drift, whose move it is."""
    grid = _grid()
    grid.add_row("owner", Text(document.owner_office or "—"))
    grid.add_row("state", Text(document.state.value + ("  (deleted)" if document.deleted else "")))
    if document.removed is not None:
        grid.add_row("removed", Text(removal_text(document.removed)))
    grid.add_row("latest", _version(document.latest))
    grid.add_row("final", _version(document.final))
    if document.note:
        grid.add_row("note", Text(document.note, style="yellow"))
    elif document.copy_of is not None:
        source = document.copy_of
        grid.add_row("copied from", Text(f"{source.folder}:{source.path} v{source.number}"))
    if document.review_id is not None:
        line = f"#{document.review_id} open"
        if review is not None and review.id == document.review_id:
            line += f", {review.mode}, of {_pinned(review)}"
        grid.add_row("review", Text(line))
    grid.add_row("awaiting", awaiting_text(document.awaiting))
    title = Text(f"{document_name(document)}  #{document.id}")
    return Panel(grid, title=title, title_align="left", expand=False)


def decisions_table(decisions: Iterable[DecisionView], *, title: str | None = None) -> Table:
    """Who decided, for which party, what, when, and why."""
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for column in ("who", "for", "verdict", "when", "comment"):
        table.add_column(column)
    for decision in decisions:
        table.add_row(
            Text(f"{decision.name} ({decision.username})"),
            Text(decision.party),
            Text(decision.verdict, style="green" if decision.verdict == "approve" else "red"),
            moment(decision.decided_at),
            Text(decision.comment or ""),
        )
    return table


def review_panel(review: ReviewView, *, name: str) -> Panel:
    """A review: the pinned version, the policy, the decisions, whose move it is."""
    grid = _grid()
    grid.add_row("state", Text(review.state))
    grid.add_row("version", Text(_pinned(review)))
    grid.add_row("policy", Text(f"{review.mode}: {', '.join(review.parties)}"))
    if not review.separation_of_duties:
        grid.add_row("", Text("separation of duties relaxed", style="yellow"))
    grid.add_row("due", Text(moment(review.due)) if review.due else _NONE)
    grid.add_row("submitted", Text(f"by {review.submitted_by} at {moment(review.submitted_at)}"))
    if review.comment:
        grid.add_row("comment", Text(review.comment))
    if review.decisions:
        grid.add_row("decisions", decisions_table(review.decisions))
    grid.add_row("awaiting", awaiting_text(review.awaiting))
    title = Text(f"{name}  review #{review.id}")
    return Panel(grid, title=title, title_align="left", expand=False)


def final_panel(final: FinalVersion, *, name: str) -> Panel:
    """Which version is final, its exact SHA-256, who approved it and when."""
    grid = _grid()
    grid.add_row("final", Text(f"v{final.number}"))
    grid.add_row("sha256", Text(final.sha256))
    grid.add_row("approved", Text(f"{moment(final.approved_at)} (review #{final.review_id})"))
    grid.add_row("approvers", decisions_table(final.approvers))
    title = Text(f"{name}  #{final.document_id}")
    return Panel(grid, title=title, title_align="left", expand=False)


def inbox_table(items: Sequence[InboxItem]) -> RenderableType:
    """What awaits the caller, oldest first."""
    if not items:
        return Text("Nothing awaits you.")
    table = Table(show_edge=False, pad_edge=False)
    for column in ("id", "document", "action", "since", "due"):
        table.add_column(column, justify="right" if column == "id" else "left")
    for item in sorted(items, key=lambda item: item.since):
        table.add_row(
            str(item.document_id),
            Text(f"{item.folder}:{item.path}"),
            Text(item.action),
            moment(item.since),
            moment(item.due) if item.due else _NONE,
        )
    return table


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


def access_table(entries: Iterable[AccessRecord]) -> Table:
    """Access-log entries in order: who read what, when, and the event sealing the batch."""
    table = Table(show_edge=False, pad_edge=False)
    for column in ("id", "time", "action", "who", "document", "version", "detail", "sealed by"):
        table.add_column(column, justify="right" if column in ("id", "sealed by") else "left")
    for entry in entries:
        table.add_row(
            str(entry.id),
            moment(entry.at),
            Text(entry.action),
            Text(entry.actor_name),
            "—" if entry.document_id is None else f"#{entry.document_id}",
            "—" if entry.version_number is None else f"v{entry.version_number}",
            Text(entry.detail or "—"),
            f"#{entry.sealed_by_seq}",
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
