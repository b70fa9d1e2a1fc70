"""Audit commands: read the trail and check its hash chain."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn

from clients.cli import render
from clients.cli.session import Session, client_command
from core.chain import verify_chain
from core.schemas import AuditEvent, ChainCheck

__all__ = ["check", "events"]


@client_command
def events(
    session: Session,
    after: Annotated[
        int, typer.Option(metavar="N", min=0, help="Only events after sequence number N.")
    ] = 0,
    limit: Annotated[
        int | None,
        typer.Option(
            metavar="N", min=1, help="At most N events (default: all).", show_default=False
        ),
    ] = None,
) -> None:
    """Audit events in order, following the server's pages."""
    stream = session.client.iter_audit_events(after=after)
    page = list(stream if limit is None else islice(stream, limit))
    more = limit is not None and len(page) == limit and next(stream, None) is not None
    payload = {
        "events": [event.model_dump(mode="json") for event in page],
        "next": page[-1].seq if more else None,
    }
    session.show(payload, lambda: render.events_table(page))
    if more and not session.as_json:
        session.note(f"more events follow: --after {page[-1].seq}")


@client_command
def check(
    session: Session,
    server_side: Annotated[
        bool,
        typer.Option(
            "--server-side",
            help="Ask the server to check its own chain instead of checking it here.",
        ),
    ] = False,
) -> None:
    """Recompute the audit chain here, event by event, and say where it breaks, if anywhere."""
    if server_side:
        result = session.client.audit_verify()
    else:
        with Progress(
            SpinnerColumn(),
            TextColumn("checking the audit chain: {task.completed:.0f} events"),
            console=session.err,
            transient=True,
            disable=not session.err.is_terminal,
        ) as progress:
            task = progress.add_task("check", total=None)

            def triples(events: Iterator[AuditEvent]) -> Iterator[tuple[int, bytes, str]]:
                for event in events:
                    yield event.seq, event.canonical.encode("utf-8"), event.hash
                    progress.advance(task)

            report = verify_chain(triples(session.client.iter_audit_events()))
        broken = report.first_broken
        result = ChainCheck(
            ok=report.ok,
            checked=report.checked,
            head_seq=report.head_seq,
            head_hash=report.head_hash,
            first_broken_seq=broken.seq if broken else None,
            reason=broken.reason if broken else None,
        )
    where = "checked by the server" if server_side else "recomputed here"
    payload = {
        **result.model_dump(mode="json"),
        "checked_by": "server" if server_side else "client",
    }
    session.show(payload, lambda: render.chain_check(result, where=where))
    if not result.ok:
        raise typer.Exit(1)
