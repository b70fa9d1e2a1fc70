"""A document's certificate of completion: one PDF an auditor can file, with what it rests on.

The certificate names the document, its owner offices over time, every version (number,
SHA-256, size, author, when recorded), its reviews and signed decisions (who, for which
office, when, and the meaning they signed), the acknowledgements, and the signed
checkpoint it was checked against. Before anything is drawn, every event of the document
up to that checkpoint is proved to be in the checkpoint's Merkle tree (RFC 9162
inclusion proofs); a document whose trail does not verify gets no certificate.

Fonts: fpdf2 bundles no TrueType font and the project ships none. With
``OFFICIUM_PDF_FONT`` naming one (deploy/Dockerfile installs DejaVu Sans), text prints
as written, any character the font lacks as "?". Without it the PDF uses the PDF core
fonts (Helvetica, Courier) in the Windows-1252 encoding. That covers German, French,
Scandinavian and most Western European letters (ä ö ü ß é ø ...) and typographic quotes
and dashes; any other character is printed as its base letter without accents where
Unicode decomposes it (ő → o, č → c), else as "?". The figures an auditor checks
(hashes, ids, sizes, times) are ASCII and always print exactly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from sqlmodel import Session

from core import merkle as rfc9162
from core.errors import Conflict, NotFound
from server import audit, merkle
from server.models import (
    Checkpoint,
    Decision,
    Document,
    Folder,
    Office,
    Person,
    Review,
    Version,
)

__all__ = ["certificate_id", "certificate_pdf", "printable"]


def certificate_id(document_id: int, root_hex: str) -> str:
    """The certificate's short id: SHA-256 of "<document id>:<checkpoint root hex>", 12 hex."""
    return hashlib.sha256(f"{document_id}:{root_hex}".encode("ascii")).hexdigest()[:12]


def printable(text: str) -> str:
    """``text`` in the core fonts' Windows-1252, accents dropped where needed, else "?"."""
    out = []
    for char in unicodedata.normalize("NFC", text):
        if char == "\n" or (unicodedata.category(char) != "Cc" and _encodable(char)):
            out.append(char)
            continue
        base = "".join(
            c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)
        )
        out.append(base if base and _encodable(base) and base.isprintable() else "?")
    return "".join(out)


def _encodable(text: str) -> bool:
    try:
        text.encode("cp1252")
    except UnicodeEncodeError:
        return False
    return True


def _when(moment: datetime | str | None) -> str:
    if moment is None:
        return "-"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ------------------------------------------------------------------ the facts


@dataclass
class _Facts:
    """Everything the certificate prints, read in one transaction."""

    document: Document
    folder: str
    events: list[tuple[int, bytes, dict[str, Any]]]  # (seq, canonical, body)
    owners: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    version_hashes: list[str] = field(default_factory=list)
    reviews: list[list[str]] = field(default_factory=list)
    acknowledgements: list[str] = field(default_factory=list)
    whereabouts: list[str] = field(default_factory=list)


def _gather(session: Session, document_id: int, tree_size: int) -> _Facts:
    document = session.get(Document, document_id)
    if document is None:
        raise NotFound(f"there is no document with id {document_id}")
    folder = session.get(Folder, document.folder_id)
    rows = audit.document_events(session, document_id=document_id)
    events = [
        (row.seq, bytes(row.canonical), orjson.loads(row.canonical))
        for row in rows
        if row.seq <= tree_size
    ]
    facts = _Facts(document=document, folder=folder.name, events=events)
    by_action: dict[str, list[dict[str, Any]]] = {}
    for _, _, body in events:
        by_action.setdefault(body["action"], []).append(body)
    _owners(session, facts, by_action)
    _versions(session, facts, by_action)
    _reviews(session, facts, by_action)
    for body in by_action.get("document.acknowledged", []):
        facts.acknowledgements.append(
            f"{_who(body['actor'])} acknowledged version {body['details']['version']} "
            f"on {_when(body['time'])}"
        )
    for _, _, body in events:
        details = body["details"]
        if body["action"] == "document.moved":
            facts.whereabouts.append(
                f"{_when(body['time'])}: moved from {details['from']} to {details['to']}"
            )
        elif body["action"] == "document.deleted":
            why = f" ({details['reason']})" if details.get("reason") else ""
            facts.whereabouts.append(
                f"{_when(body['time'])}: deleted from {details.get('path')}{why}"
            )
        elif body["action"] == "document.reappeared":
            facts.whereabouts.append(f"{_when(body['time'])}: reappeared at {details['path']}")
    return facts


def _who(actor: dict[str, Any]) -> str:
    office = f" for {actor['office']}" if actor.get("office") else ""
    return f"{actor['name']}{office}"


def _owners(session: Session, facts: _Facts, by_action: dict[str, list[dict[str, Any]]]) -> None:
    for body in by_action.get("document.created", []):
        office_id = body["details"].get("owner_office_id")
        office = session.get(Office, office_id) if office_id is not None else None
        name = office.name if office else "no office (to be assigned by an admin)"
        facts.owners.append(f"from {_when(body['time'])}: {name} (the folder's default owner)")
    for body in by_action.get("document.owner_changed", []):
        details = body["details"]
        reason = f"; reason: {details['reason']}" if details.get("reason") else ""
        facts.owners.append(
            f"from {_when(body['time'])}: {details['to']} (handed over from "
            f"{details.get('from') or 'no office'} by {_who(body['actor'])}{reason})"
        )


def _versions(session: Session, facts: _Facts, by_action: dict[str, list[dict[str, Any]]]) -> None:
    numbers = {body["details"]["number"] for body in by_action.get("version.recorded", [])}
    rows = session.execute(
        sa.select(Version, Person.name)
        .join(Person, Person.id == Version.author_person_id, isouter=True)
        .where(Version.document_id == facts.document.id)
        .order_by(Version.number)
    ).all()
    for version, author in rows:
        if version.number not in numbers:
            continue
        by = author or (f"unattributed ({version.author_hint})" if version.author_hint else None)
        facts.versions.append(
            f"Version {version.number}: {version.size} bytes, recorded {_when(version.recorded_at)}"
            f", author {by or 'unknown'}"
        )
        facts.version_hashes.append(version.sha256)


def _reviews(session: Session, facts: _Facts, by_action: dict[str, list[dict[str, Any]]]) -> None:
    submitted = {body["subject"]["review"] for body in by_action.get("review.submitted", [])}
    kid_of = {
        body["subject"]["decision"]: body["details"].get("kid")
        for body in by_action.get("review.decided", [])
    }
    reviews = session.execute(
        sa.select(Review, Person.name)
        .join(Person, Person.id == Review.submitter_person_id)
        .where(Review.document_id == facts.document.id)
        .order_by(Review.id)
    ).all()
    for review, submitter in reviews:
        if review.id not in submitted:
            continue
        lines = [
            f"Review {review.id} of version {review.version_number}: mode {review.mode}, "
            f"parties {', '.join(json.loads(review.parties))}; state {review.state}; "
            f"submitted {_when(review.submitted_at)} by {submitter} for {review.submitter_office}"
        ]
        decisions = session.execute(
            sa.select(Decision).where(Decision.review_id == review.id).order_by(Decision.id)
        ).scalars()
        for decision in decisions:
            if decision.id not in kid_of:
                continue
            payload = json.loads(bytes(decision.payload))
            signer = payload["signer"]
            office = f", {signer['office']}" if signer.get("office") else ""
            verb = "Approved" if payload["verdict"] == "approve" else "Rejected"
            client = "; also signed with the person's own key" if decision.client_signature else ""
            lines.append(
                f"{verb} by {signer['name']}{office}, on {_when(payload['time'])}; signed by "
                f"the server key {kid_of[decision.id]}{client}. Meaning: {payload['meaning']}"
            )
        facts.reviews.append(lines)


def _verify(session: Session, facts: _Facts, checkpoint: Checkpoint) -> None:
    """Prove every event of the document is in the checkpoint's tree, or refuse."""
    root = bytes.fromhex(checkpoint.root)
    # One subtree callback for all proofs: the upper nodes they share are read once.
    subtree = merkle.subtree(session)
    for seq, canonical, _ in facts.events:
        proof = rfc9162.inclusion_proof(seq - 1, checkpoint.tree_size, subtree)
        try:
            rfc9162.verify_inclusion(
                seq - 1, checkpoint.tree_size, rfc9162.leaf_hash(canonical), proof, root
            )
        except rfc9162.ProofError as exc:
            raise Conflict(
                f"event {seq} of document {facts.document.id} does not verify against the "
                f"checkpoint of {checkpoint.tree_size} events ({exc}); no certificate is issued"
            ) from None


# ------------------------------------------------------------------ the page


# The first bytes of TrueType, OpenType and TrueType-collection files.
_FONT_MAGIC = (b"\x00\x01\x00\x00", b"OTTO", b"true", b"ttcf")


class _Page(FPDF):
    def __init__(self, footer_text: str, *, font: Path | None, bold: Path | None) -> None:
        super().__init__(format="A4")
        self.core_fonts_encoding = "windows-1252"
        self.body = "Helvetica"
        self.glyphs: set[int] | None = None  # None: the core fonts, see printable()
        if font is not None:
            try:
                for path in {font, bold or font}:
                    with open(path, "rb") as handle:
                        if handle.read(4) not in _FONT_MAGIC:
                            raise ValueError("not a TrueType or OpenType font")
                self.add_font("Body", "", str(font))
                self.add_font("Body", "B", str(bold or font))
            except Exception as exc:  # a bad font file must not cost the certificate
                logging.getLogger("officium.certificate").warning(
                    "the PDF font %s cannot be used (%s): printing with the core fonts", font, exc
                )
            else:
                self.body = "Body"
                self.glyphs = set(self.fonts["body"].cmap) & set(self.fonts["bodyB"].cmap)
        self.footer_text = footer_text
        self.set_margins(18, 18, 18)
        self.set_auto_page_break(auto=True, margin=18)

    def shown(self, text: str) -> str:
        """``text`` as the page's fonts can print it."""
        if self.glyphs is None:
            return printable(text)
        glyphs = self.glyphs
        return "".join(c if ord(c) in glyphs or c == "\n" else "?" for c in text)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(self.body, size=7)
        self.cell(0, 5, f"{self.footer_text} - page {self.page_no()}", align="C")

    def heading(self, text: str) -> None:
        self.ln(3)
        self.set_font(self.body, style="B", size=11)
        self.paragraph(text, height=6)

    def paragraph(self, text: str, *, height: float = 4.6, size: float | None = None) -> None:
        if size is not None:
            self.set_font(size=size)
        self.multi_cell(0, height, self.shown(text), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def text_line(self, text: str) -> None:
        self.set_font(self.body, size=9)
        self.paragraph(text)

    def fixed(self, text: str) -> None:
        """Hashes and ids, in a monospace font, on one line of their own."""
        self.set_font("Courier", size=8)
        self.paragraph(text, height=4)


def certificate_pdf(
    session: Session,
    *,
    document_id: int,
    checkpoint: Checkpoint,
    origin: str,
    now: datetime,
    font: Path | None = None,
    bold_font: Path | None = None,
) -> bytes:
    """The certificate of one document, checked against ``checkpoint`` first."""
    facts = _gather(session, document_id, checkpoint.tree_size)
    _verify(session, facts, checkpoint)
    document = facts.document
    ident = certificate_id(document.id, checkpoint.root)
    pdf = _Page(
        f"Officium certificate {ident} for document {document.id}", font=font, bold=bold_font
    )
    pdf.set_title(f"Certificate of completion: {pdf.shown(f'{facts.folder}:{document.path}')}")
    pdf.set_creator("Officium")
    pdf.add_page()

    pdf.set_font(pdf.body, style="B", size=18)
    pdf.paragraph("Certificate of completion", height=9)
    pdf.set_font(pdf.body, size=9)
    pdf.paragraph(f"Issued {_when(now)} from the audit trail {origin}")
    pdf.ln(2)
    pdf.set_font(pdf.body, style="B", size=11)
    pdf.paragraph(f"Certificate ID: {ident}", height=6)

    pdf.heading("Document")
    pdf.text_line(f"{facts.folder}:{document.path}")
    state = f"State: {document.state}" + ("; deleted" if document.deleted else "")
    pdf.text_line(f"Document id: {document.id}. {state}.")
    if document.final_number is not None:
        pdf.text_line(f"Final version: {document.final_number}, SHA-256")
        pdf.fixed(document.final_sha256)

    pdf.heading("Owner offices")
    for line in facts.owners or ["none recorded"]:
        pdf.text_line(line)

    pdf.heading("Versions")
    for line, digest in zip(facts.versions, facts.version_hashes, strict=True):
        pdf.text_line(line)
        pdf.fixed(f"SHA-256 {digest}")

    pdf.heading("Reviews and decisions")
    if not facts.reviews:
        pdf.text_line("No review was submitted.")
    for review in facts.reviews:
        pdf.text_line(review[0])
        for decision in review[1:]:
            pdf.set_x(pdf.l_margin + 6)
            pdf.set_font(pdf.body, size=9)
            pdf.multi_cell(
                0, 4.6, pdf.shown(decision), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT
            )
        pdf.ln(1)

    pdf.heading("Acknowledgements")
    for line in facts.acknowledgements or ["none recorded"]:
        pdf.text_line(line)

    if facts.whereabouts:
        pdf.heading("Moves and deletion")
        for line in facts.whereabouts:
            pdf.text_line(line)

    pdf.heading("Verification")
    pdf.text_line(
        f"Verified against checkpoint {checkpoint.tree_size} of {origin}: all "
        f"{len(facts.events)} events of this document are included in the signed Merkle tree "
        f"of the first {checkpoint.tree_size} audit events (RFC 9162 inclusion proofs), "
        f"checkpoint made {_when(checkpoint.created_at)}."
    )
    pdf.text_line(f"Tree size: {checkpoint.tree_size}. Signing key id: {checkpoint.kid}")
    pdf.fixed(f"Root {checkpoint.root}")

    pdf.heading("How to check this certificate")
    pdf.text_line(
        "This page is a summary; the evidence is the audit trail. Export it and verify it "
        "offline, with the server's public keys kept beforehand:"
    )
    pdf.fixed(f"officium audit export --document {document.id} --format bundle -o doc.jsonl")
    pdf.fixed("officium audit key -o keys.json")
    pdf.fixed("officium audit verify doc.jsonl --key keys.json")
    pdf.text_line(
        f"The bundle's checkpoints include the one of tree size {checkpoint.tree_size}, or a "
        "later one consistent with it. The Certificate ID is the first 12 hexadecimal digits "
        f'of SHA-256 over "{document.id}:" followed by that checkpoint\'s root in hexadecimal, '
        "so anyone holding the checkpoint can recompute it and look this certificate up."
    )
    return bytes(pdf.output())
