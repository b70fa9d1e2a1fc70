"""Commands about approval: submit, approve, reject, withdraw, inbox, ack, final."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, time
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.text import Text
from typer.core import TyperCommand

from clients.cli import render
from clients.cli.documents import DocArgument
from clients.cli.keys import KeyFileOption, load_key_file, readable_by_others, unregistered_hint
from clients.cli.names import resolve_document
from clients.cli.session import Session, client_command, fail
from core.errors import Invalid, NotFound
from core.schemas import ReviewView
from core.signatures import key_id, public_jwk

__all__ = [
    "PartiesInOrderGiven",
    "acknowledge",
    "acknowledgements",
    "approve",
    "final",
    "inbox",
    "parse_due",
    "reject",
    "submit",
    "subscribe",
    "withdraw",
]

_PARTY_ORDER = "officium.party_order"

CommentOption = Annotated[
    str | None,
    typer.Option("-m", "--comment", metavar="TEXT", help="A comment, kept on the record."),
]


class PartiesInOrderGiven(TyperCommand):
    """A command that remembers in which order ``--to`` and ``--person`` were given.

    Click hands each repeated option over as its own list, which loses how offices and
    persons were interleaved; a sequential review needs that order, so the parser's own
    record of it is kept in the context.
    """

    def make_parser(self, ctx: typer.Context) -> Any:
        """The usual parser, which also notes the order of the options it met."""
        parser = super().make_parser(ctx)
        parse = parser.parse_args

        def parse_noting_order(args: list[str]) -> Any:
            opts, rest, order = parse(args=args)
            ctx.meta[_PARTY_ORDER] = [getattr(param, "name", None) for param in order]
            return opts, rest, order

        parser.parse_args = parse_noting_order
        return parser


def _parties(session: Session, offices: list[str], persons: list[str]) -> list[str]:
    """``office:NAME`` and ``person:USERNAME`` in the order the options were given."""
    queues = {
        "to": iter([f"office:{office}" for office in offices]),
        "person": iter([f"person:{username}" for username in persons]),
    }
    order = session.context.meta.get(_PARTY_ORDER, []) if session.context else []
    parties = []
    for option in order:
        if option in queues and (party := next(queues[option], None)) is not None:
            parties.append(party)
    # Whatever the recorded order did not place (were there none) follows, offices first.
    return [*parties, *queues["to"], *queues["person"]]


def parse_due(text: str) -> datetime:
    """An ISO date (the end of that day, UTC) or date and time (UTC unless it says otherwise)."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        return datetime.combine(day, time.max, UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a date: write 2025-03-31 or 2025-03-31T17:00+02:00"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@client_command
def submit(
    session: Session,
    doc: DocArgument,
    to: Annotated[
        list[str] | None,
        typer.Option(
            "--to",
            metavar="OFFICE",
            help="An office whose approvers decide; repeat for more.",
            show_default=False,
        ),
    ] = None,
    person: Annotated[
        list[str] | None,
        typer.Option(
            "--person",
            metavar="USERNAME",
            help="A person who decides; repeat for more.",
            show_default=False,
        ),
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            metavar="all|any|quorum:K|sequential",
            help="How many must approve: all, any one, K of them, or all in the order given.",
        ),
    ] = "all",
    due: Annotated[
        datetime | None,
        typer.Option(
            metavar="DATE",
            parser=parse_due,
            help="When the decisions are due: a date (end of that day, UTC) or an ISO "
            "date and time (UTC unless it names a zone).",
            show_default=False,
        ),
    ] = None,
    comment: CommentOption = None,
    version: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            min=1,
            help="The version to submit (default: the latest).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Ask for approval of the latest version (or --version N) under a policy.

    Parties decide in the order --to and --person are given, which matters for
    --mode sequential.
    """
    parties = _parties(session, to or [], person or [])
    if not parties:
        raise fail("say who decides: give --to OFFICE and/or --person USERNAME")
    document = resolve_document(session.client, doc)
    review = session.client.submit(
        document.id, parties=parties, mode=mode, due=due, comment=comment, version=version
    )
    if review.due is not None and review.due < datetime.now(UTC):
        session.note(f"note: the due date {render.moment(review.due)} has passed already")
    session.show(review, lambda: render.review_panel(review, name=render.document_name(document)))


@client_command
def approve(
    session: Session,
    doc: DocArgument,
    comment: CommentOption = None,
    sign_with: KeyFileOption = None,
) -> None:
    """Approve the open review of a document (--sign-with KEYFILE: sign it with your key too)."""
    _decide(session, doc, verdict="approve", comment=comment, keyfile=sign_with)


@client_command
def reject(
    session: Session,
    doc: DocArgument,
    comment: CommentOption = None,
    sign_with: KeyFileOption = None,
) -> None:
    """Reject the open review of a document; -m says why (a rejection needs it)."""
    if comment is None or not comment.strip():
        raise fail("a rejection needs a comment that says why: give it with -m TEXT")
    _decide(session, doc, verdict="reject", comment=comment, keyfile=sign_with)


def _decide(
    session: Session, doc: str, *, verdict: str, comment: str | None, keyfile: Path | None
) -> None:
    # A key file that cannot sign is refused before the server is asked anything.
    key = None if keyfile is None else load_key_file(keyfile)
    if keyfile is not None and readable_by_others(keyfile):
        session.note(f"warning: others can read {keyfile}; make it yours only: chmod 600 {keyfile}")
    document = resolve_document(session.client, doc)
    try:
        review = session.client.decide(document.id, verdict=verdict, comment=comment, sign_with=key)
    except Invalid as exc:
        hint = None
        if key is not None and keyfile is not None:
            hint = unregistered_hint(session.client, key, keyfile)
        if hint is None:
            raise
        raise fail(f"{exc.detail} ({hint})") from None
    name = render.document_name(document)
    lines = [_outcome(review, name)]
    if key is not None:
        lines.append(Text(f"signed with your key {key_id(public_jwk(key))}"))
    session.show(review, lambda: Group(*lines, render.review_panel(review, name=name)))


def _outcome(review: ReviewView, name: str) -> Text:
    pinned = f"v{review.version.number} of {name}"
    if review.state == "approved":
        return Text(f"{pinned} is approved: it is the final version", style="bold green")
    if review.state == "rejected":
        return Text(f"{pinned} is rejected", style="bold red")
    return Text(f"decision recorded; review #{review.id} of {pinned} is still open")


@client_command
def withdraw(session: Session, doc: DocArgument) -> None:
    """Withdraw the open review of a document (for its owner office)."""
    document = resolve_document(session.client, doc)
    review = session.client.withdraw(document.id)
    session.show(review, lambda: render.review_panel(review, name=render.document_name(document)))


@client_command
def inbox(session: Session) -> None:
    """What awaits you: decisions to take, final versions to acknowledge, owners to assign."""
    items = session.client.inbox()
    session.show(items, lambda: render.inbox_table(items.items))


@client_command
def acknowledgements(session: Session, doc: DocArgument) -> None:
    """Who in the owner office and among subscribers has seen the final version, and who not."""
    document = resolve_document(session.client, doc)
    _show_acknowledgements(session, document, session.client.acknowledgements(document.id))


@client_command
def subscribe(session: Session, doc: DocArgument) -> None:
    """Follow a document from outside its owner office: its final versions await you too."""
    document = resolve_document(session.client, doc)
    _show_acknowledgements(session, document, session.client.subscribe(document.id))


def _show_acknowledgements(session: Session, document, listing) -> None:
    def text() -> Text:
        if listing.final is None:
            return Text(f"{render.document_name(document)} has no final version yet")
        seen = ", ".join(a.username for a in listing.acknowledged) or "nobody"
        pending = ", ".join(listing.pending) or "nobody"
        return Text(
            f"final v{listing.final.number} of {render.document_name(document)}\n"
            f"  acknowledged: {seen}\n  not yet:      {pending}"
        )

    session.show(listing, text)


@client_command
def acknowledge(session: Session, doc: DocArgument) -> None:
    """Record that you have seen the final version of a document."""
    document = resolve_document(session.client, doc)
    seen = session.client.acknowledge(document.id)
    session.show(
        seen,
        lambda: Text(
            f"{seen.username} acknowledged final v{seen.number} "
            f"({render.short_hash(seen.sha256)}) of {render.document_name(document)} "
            f"at {render.moment(seen.acknowledged_at)}"
        ),
    )


@client_command
def final(
    session: Session,
    doc: DocArgument,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            metavar="FILE",
            help="Write the final version's exact bytes to FILE (into it, if a directory).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Which version is final: number, SHA-256, who approved it and when."""
    document = resolve_document(session.client, doc)
    name = render.document_name(document)
    try:
        approved = session.client.final(document.id)
    except NotFound:
        raise fail(f"{name} has no final version: no review has approved it") from None
    payload: dict[str, Any] = approved.model_dump(mode="json")
    if output is not None:
        target = output / PurePosixPath(document.path).name if output.is_dir() else output
        # The download lands only if its bytes hash to the final version's SHA-256.
        session.client.download(document.id, approved.number, target, expect_sha256=approved.sha256)
        payload["file"] = os.fspath(target)
        session.note(f"wrote final v{approved.number} of {name} to {target}")
    session.show(payload, lambda: render.final_panel(approved, name=name))
