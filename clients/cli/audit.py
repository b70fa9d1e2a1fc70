"""Audit commands: read the trail, check its hash chain, keep its keys and checkpoints."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from itertools import islice
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.text import Text

from clients.cli import render
from clients.cli.names import resolve_document
from clients.cli.session import Session, client_command, fail
from core.chain import verify_chain
from core.files import write_atomically
from core.schemas import AuditEvent, ChainCheck
from core.verify import KeyFile, KeyFileError, verify_file
from core.verify import Report as VerifyReport

__all__ = ["access", "check", "checkpoint", "events", "export", "key", "rotate_key", "verify"]

T = TypeVar("T")


def _first(stream: Iterator[T], limit: int | None) -> tuple[list[T], bool]:
    """At most ``limit`` items of a paged stream, and whether more follow."""
    page = list(stream if limit is None else islice(stream, limit))
    return page, limit is not None and len(page) == limit and next(stream, None) is not None


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
    page, more = _first(session.client.iter_audit_events(after=after), limit)
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


KEYS_FORMAT = "officium-audit-keys"


def _write_atomically(path: Path, text: str) -> None:
    write_atomically(path, text.encode("utf-8"))


OutputOption = Annotated[
    Path | None,
    typer.Option("-o", "--output", metavar="FILE", help="Write it to FILE.", show_default=False),
]


@client_command
def key(session: Session, output: OutputOption = None) -> None:
    """The keys the server signs the trail's checkpoints with, and when each was in use.

    With -o, writes them as JSON for an auditor to keep and check checkpoints against.
    """
    published = session.client.audit_keys()
    payload = {"format": KEYS_FORMAT, "version": 1, **published.model_dump(mode="json")}
    if output is not None:
        _write_atomically(output, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    rows = [(k.kid, k.valid_from, k.valid_until or "now", k.vkey) for k in published.keys]
    if output is not None and not session.as_json:
        session.out.print(
            Text(f"{len(rows)} key(s) of {published.origin} written to {output}"), soft_wrap=True
        )
        return
    session.show(
        payload, lambda: render.records_table(("kid", "from", "until", "verifier key"), rows)
    )


@client_command
def checkpoint(
    session: Session,
    output: OutputOption = None,
    now: Annotated[
        bool,
        typer.Option("--now", help="Have the server sign one of the trail as it is now first."),
    ] = False,
) -> None:
    """The latest signed checkpoint of the audit trail, exactly as signed.

    Keep the file -o writes: it is what a later check of an export is given as
    --last-seen, to prove the trail has only grown since.
    """
    signed = session.client.make_checkpoint() if now else session.client.latest_checkpoint()
    if output is not None:
        _write_atomically(output, signed.note)
    if session.as_json:
        session.emit_json(signed)
    elif output is None:
        typer.echo(signed.note, nl=False)
    else:
        session.out.print(
            Text(f"checkpoint of {signed.tree_size} events written to {output}"), soft_wrap=True
        )


@client_command
def rotate_key(session: Session) -> None:
    """Replace the server's signing key; the old and the new key both sign the change."""
    rotation = session.client.rotate_key()
    session.show(
        rotation,
        lambda: Text(
            f"server key {rotation.retired.kid} retired; {rotation.current.kid} signs from now "
            f"on (the checkpoint of {rotation.checkpoint.tree_size} events carries both "
            "signatures): publish the new keys with 'officium audit key -o FILE'"
        ),
    )


@client_command
def access(
    session: Session,
    document: Annotated[
        str | None,
        typer.Option(
            "--document",
            metavar="DOC",
            help="Only reads of this document (its id, FOLDER:path or a local path).",
            show_default=False,
        ),
    ] = None,
    after: Annotated[
        int, typer.Option(metavar="N", min=0, help="Only entries after entry id N.")
    ] = 0,
    limit: Annotated[
        int | None,
        typer.Option(
            metavar="N", min=1, help="At most N entries (default: all).", show_default=False
        ),
    ] = None,
) -> None:
    """Who downloaded, looked up, exported or certified what, and when (the access log).

    Reads are written in batches, each sealed by one 'access.logged' audit event; the
    newest appear within a few seconds.
    """
    document_id = resolve_document(session.client, document).id if document else None
    page, more = _first(session.client.iter_access_log(document=document_id, after=after), limit)
    payload = {
        "entries": [entry.model_dump(mode="json") for entry in page],
        "next": page[-1].id if more else None,
    }
    session.show(payload, lambda: render.access_table(page))
    if more and not session.as_json:
        session.note(f"more entries follow: --after {page[-1].id}")


class ExportFormat(StrEnum):
    bundle = "bundle"
    csv = "csv"
    pdf = "pdf"


def _moment(text: str | None, option: str, *, end: bool) -> datetime | None:
    """A --since/--until value: a date (a whole day, UTC) or an ISO time (UTC if no zone)."""
    if text is None:
        return None
    try:
        if len(text) == 10:
            day = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
            # --until names the last day wanted; the server's bound excludes its moment.
            return day + timedelta(days=1) if end else day
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise fail(
            f"{option} {text!r} is neither a date (2024-05-31) nor a time "
            "(2024-05-31T17:00:00+02:00)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@client_command
def export(
    session: Session,
    output: Annotated[
        Path,
        typer.Option(
            "-o", "--output", metavar="PATH", help="Write the export to PATH.", show_default=False
        ),
    ],
    format: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            help="bundle: JSON Lines to verify offline; csv: a sheet; "
            "pdf: one document's certificate.",
        ),
    ] = ExportFormat.bundle,
    document: Annotated[
        str | None,
        typer.Option(
            "--document",
            metavar="DOC",
            help="Only this document (its id, FOLDER:path or a local path).",
            show_default=False,
        ),
    ] = None,
    office: Annotated[
        str | None,
        typer.Option(
            "--office",
            metavar="NAME",
            help="Only documents this office owns or ever owned.",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since", metavar="DATE", help="Only events from DATE on.", show_default=False
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            metavar="DATE",
            help="Only events up to DATE (a date includes that whole day).",
            show_default=False,
        ),
    ] = None,
    with_content: Annotated[
        bool, typer.Option("--with-content", help="Bundle: include every version's bytes.")
    ] = False,
) -> None:
    """The audit trail for auditors, pinned to a signed checkpoint.

    A bundle is checked offline with 'officium audit verify'; a PDF is one document's
    certificate of completion. PATH appears only once the whole export has arrived.
    """
    if format is ExportFormat.pdf:
        if document is None:
            raise fail("--format pdf is one document's certificate: name it with --document DOC")
        if office or since or until or with_content:
            raise fail(
                "--format pdf takes --document only (not --office, --since, --until, "
                "--with-content)"
            )
    elif with_content and format is not ExportFormat.bundle:
        raise fail("--with-content goes with --format bundle only")
    start, stop = _moment(since, "--since", end=False), _moment(until, "--until", end=True)
    document_id = resolve_document(session.client, document).id if document else None
    if format is ExportFormat.pdf:
        saved = session.client.save_certificate(document_id, output)
        what = f"certificate of document {document_id}"
    else:
        saved = session.client.export_audit(
            output,
            format=format.value,
            document=document_id,
            office=office,
            since=start,
            until=stop,
            with_content=with_content,
        )
        what = f"audit {format.value}"
    payload = {
        "file": str(output),
        "format": format.value,
        "size": saved.size,
        "sha256": saved.sha256,
    }
    session.show(
        payload,
        lambda: Text(f"{what} written to {output}: {saved.size} bytes, SHA-256 {saved.sha256}"),
    )


def _verify_report(report: VerifyReport) -> Text:
    """The verification report as the auditor reads it."""
    facts = (
        f"{report.events:,} events, {report.checkpoints} checkpoints, "
        f"{report.decisions} decisions, {report.versions} versions"
    )
    if report.ok:
        root = report.as_dict()["root"]
        return Text.assemble(
            ("verified", "bold green"),
            f": {facts} ({report.scope} bundle of {report.origin}), pinned to tree size "
            f"{report.tree_size}, root {root}",
        )
    where = [
        f"{name} {value}"
        for name, value in (
            ("event", report.seq),
            ("checkpoint size", report.checkpoint_size),
            ("document", report.document),
            ("version", report.version),
        )
        if value is not None
    ]
    return Text.assemble(
        (f"NOT verified ({report.code.name}, exit code {int(report.code)})", "bold red"),
        f": {report.reason}\n",
        f"at: {', '.join(where)}\n" if where else "",
        f"checked before the fault: {facts}",
    )


def verify(
    bundle: Annotated[
        Path, typer.Argument(metavar="BUNDLE", help="The bundle 'officium audit export' wrote.")
    ],
    key: Annotated[
        Path,
        typer.Option(
            "--key",
            metavar="KEYFILE",
            help="The server's keys, as 'officium audit key -o KEYFILE' wrote them.",
            show_default=False,
        ),
    ],
    last_seen: Annotated[
        Path | None,
        typer.Option(
            "--last-seen",
            metavar="CHECKPOINT",
            help="A checkpoint you saved earlier: the bundle must extend it.",
            show_default=False,
        ),
    ] = None,
    save_checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--save-checkpoint",
            metavar="FILE",
            help="When the bundle verifies, save its pinned checkpoint to FILE: your "
            "--last-seen for the next bundle.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Verify an audit bundle offline, trusting nothing but your saved keys (no server).

    Exits 0 when every check holds, otherwise with the code of the first fault's class
    (10 to 24, see README.md).
    """
    err = Console(stderr=True, highlight=False)
    try:
        keys = KeyFile.parse(key.read_bytes())
        note = last_seen.read_text(encoding="utf-8") if last_seen is not None else None
        with (
            bundle.open("rb", buffering=1 << 20) as lines,
            Progress(
                SpinnerColumn(),
                TextColumn("verifying {task.fields[name]}: {task.completed:,.0f} MB"),
                console=err,
                transient=True,
                disable=not err.is_terminal,
            ) as progress,
        ):
            task = progress.add_task("verify", total=None, name=bundle.name)
            report = verify_file(
                bundle, keys, note, lines=_read_with_progress(lines, progress, task)
            )
    except (OSError, UnicodeDecodeError, KeyFileError) as exc:
        report = VerifyReport.unreadable(f"cannot read {exc}")
    if report.ok and save_checkpoint is not None and report.pinned_note is not None:
        # Verified above with the trusted keys; kept exactly as signed.
        _write_atomically(save_checkpoint, report.pinned_note)
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    else:
        Console(highlight=False).print(_verify_report(report), soft_wrap=True)
        if report.ok and save_checkpoint is not None:
            err.print(f"checkpoint of size {report.tree_size} saved to {save_checkpoint}")
    raise typer.Exit(int(report.code))


def _read_with_progress(lines: Iterator[bytes], progress: Progress, task) -> Iterator[bytes]:
    if progress.disable:
        yield from lines
        return
    read = 0
    for line in lines:
        read += len(line)
        if read >= 1 << 20:
            progress.advance(task, read / (1 << 20))
            read = 0
        yield line
