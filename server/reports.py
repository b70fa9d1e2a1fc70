"""Version reports from agents: every save becomes a version, exactly once.

A report is keyed by (folder, git commit, path). A replay of a key already seen returns
what was recorded the first time and records nothing, so an agent may resend its outbox
after any crash. Reports of one batch are applied in order, in one transaction.
"""

from __future__ import annotations

from sqlmodel import Session, select

from core import schemas
from core.errors import Conflict, Forbidden, Invalid
from core.schemas import ReportKind, ReportOutcome, VersionReport
from server import audit, reviews
from server.audit import Actor
from server.auth import Principal
from server.content import ContentStore
from server.folders import folder_by_name
from server.models import Document, Folder, Person, Report, Version, utcnow

__all__ = ["record_reports"]

_MAX_HINT = 2000  # the author_hint column's width


def record_reports(
    session: Session,
    *,
    principal: Principal,
    folder: str,
    reports: list[VersionReport],
    store: ContentStore,
) -> schemas.ReportBatchResult:
    """Apply an agent's reports for its own folder, in order."""
    folder_row = folder_by_name(session, folder)
    if principal.folder_id != folder_row.id:
        raise Forbidden(
            f"only the agent of folder '{folder}' may report into it; "
            f"this token speaks for {principal.describe()}"
        )
    actor = principal.actor()
    seen = _reports_seen(session, folder_row, reports)
    results = []
    for index, report in enumerate(reports):
        try:
            results.append(_apply(session, folder_row, actor, report, store, seen))
        except (Conflict, Invalid) as exc:
            prefix = f"report {index} ({report.kind} {report.path!r}): " if len(reports) > 1 else ""
            raise type(exc)(prefix + exc.detail) from None
    return schemas.ReportBatchResult(results=results)


def _reports_seen(
    session: Session, folder: Folder, reports: list[VersionReport]
) -> dict[tuple[str, str], Report]:
    """The reports of this batch's commits already received, by (commit, path): one query."""
    rows = session.exec(
        select(Report).where(
            Report.folder_id == folder.id,
            Report.commit.in_({report.commit for report in reports}),
        )
    ).all()
    return {(row.commit, row.path): row for row in rows}


def _apply(
    session: Session,
    folder: Folder,
    actor: Actor,
    report: VersionReport,
    store: ContentStore,
    seen: dict[tuple[str, str], Report],
) -> schemas.ReportResult:
    previous = seen.get((report.commit, report.path))
    if previous is not None:
        return _replay(session, previous, report)
    if report.kind is not ReportKind.deleted:
        _check_content(report, store)
    if report.kind is ReportKind.deleted:
        outcome, document, message = _delete(session, folder, actor, report)
    elif report.kind is ReportKind.renamed:
        outcome, document, message = _rename(session, folder, actor, report)
    else:
        outcome, document, message = _save(session, folder, actor, report)
    row = Report(
        folder_id=folder.id,
        commit=report.commit,
        path=report.path,
        kind=report.kind.value,
        from_path=report.from_path,
        sha256=report.sha256,
        size=report.size,
        author_hint=report.author_hint,
        observed_at=report.observed_at,
        outcome=outcome.value,
        message=message,
        document_id=document.id if document else None,
        version_number=document.latest_number if document else None,
    )
    session.add(row)
    seen[(row.commit, row.path)] = row
    return _result(row, replayed=False, sha256=document.latest_sha256 if document else None)


def _result(row: Report, *, replayed: bool, sha256: str | None) -> schemas.ReportResult:
    version = None
    if row.version_number is not None and sha256 is not None:
        version = schemas.VersionRef(number=row.version_number, sha256=sha256)
    return schemas.ReportResult(
        path=row.path,
        kind=ReportKind(row.kind),
        outcome=ReportOutcome(row.outcome),
        document_id=row.document_id,
        version=version,
        replayed=replayed,
        message=row.message,
    )


def _replay(session: Session, previous: Report, report: VersionReport) -> schemas.ReportResult:
    if (previous.kind, previous.sha256, previous.from_path) != (
        report.kind.value,
        report.sha256,
        report.from_path,
    ):
        raise Conflict(
            f"commit {report.commit[:12]} already reported '{report.path}' as "
            f"{previous.kind} {previous.sha256 or ''}".rstrip()
            + "; a report for the same commit and path cannot say something else"
        )
    sha = previous.sha256
    if sha is None and previous.version_number is not None:
        # A deletion carries no bytes: answer with the version it left as the latest.
        sha = session.exec(
            select(Version.sha256).where(
                Version.document_id == previous.document_id,
                Version.number == previous.version_number,
            )
        ).first()
    return _result(previous, replayed=True, sha256=sha)


def _check_content(report: VersionReport, store: ContentStore) -> None:
    stored = store.size_of(report.sha256)
    if stored is None:
        raise Conflict(
            f"the content of '{report.path}' ({report.sha256}) was never uploaded; "
            f"upload it with PUT /api/v1/content/{report.sha256} before reporting it"
        )
    if stored != report.size:
        raise Invalid(
            f"the report says '{report.path}' has {report.size} bytes, but the stored content "
            f"with that hash has {stored}"
        )


def _live(session: Session, folder: Folder, path: str) -> Document | None:
    return session.exec(
        select(Document).where(
            Document.folder_id == folder.id,
            Document.path == path,
            Document.deleted == False,  # noqa: E712
        )
    ).one_or_none()


def _at_path(session: Session, folder: Folder, path: str) -> Document | None:
    """The live document at ``path``, else the last one deleted there: one query."""
    return session.exec(
        select(Document)
        .where(Document.folder_id == folder.id, Document.path == path)
        .order_by(Document.deleted, Document.id.desc())
        .limit(1)
    ).first()


def _subject(document: Document, **more) -> dict:
    return {"document": document.id, "folder": document.folder_id, **more}


def _save(
    session: Session, folder: Folder, actor: Actor, report: VersionReport
) -> tuple[ReportOutcome, Document, str]:
    document = _at_path(session, folder, report.path)
    if document is None or document.deleted:
        if document is not None:
            document.deleted = False
            audit.append(
                session,
                actor=actor,
                action="document.reappeared",
                subject=_subject(document),
                details={"path": report.path, "commit": report.commit},
            )
        else:
            document = _create(session, folder, actor, report)
    elif document.latest_sha256 == report.sha256:
        return ReportOutcome.unchanged, document, "same bytes as the latest version"
    if document.latest_sha256 == report.sha256:
        session.add(document)
        return ReportOutcome.unchanged, document, "reappeared with the bytes of its latest version"
    _add_version(session, document, actor, report)
    return ReportOutcome.recorded, document, f"recorded as version {document.latest_number}"


def _create(session: Session, folder: Folder, actor: Actor, report: VersionReport) -> Document:
    now = utcnow()
    # A new file whose bytes are already recorded is a copy ("plan (1).docx"): link it,
    # preferring the source's final version, then its latest, then the oldest match.
    source = session.exec(
        select(Version.document_id, Version.number)
        .join(Document, Document.id == Version.document_id)
        .where(Version.sha256 == report.sha256)
        .order_by(
            (Document.final_number == Version.number).desc(),
            (Document.latest_number == Version.number).desc(),
            Version.id,
        )
        .limit(1)
    ).first()
    document = Document(
        folder_id=folder.id,
        path=report.path,
        owner_office_id=folder.default_owner_id,
        latest_number=0,
        latest_sha256="",
        copy_of_document_id=source[0] if source else None,
        copy_of_number=source[1] if source else None,
        created_at=now,
        updated_at=now,
    )
    session.add(document)
    session.flush()
    details = {"path": report.path, "owner_office_id": folder.default_owner_id}
    if source:
        details["copy_of"] = {"document": source[0], "version": source[1]}
    audit.append(
        session,
        actor=actor,
        action="document.created",
        subject=_subject(document),
        details=details,
    )
    return document


def _add_version(
    session: Session, document: Document, actor: Actor, report: VersionReport
) -> Version:
    author_id, hint = _attribute(session, report)
    # Bytes equal to an earlier version mean that version was put back (a restore).
    restores = None
    if document.latest_number:
        restores = session.exec(
            select(Version.number)
            .where(Version.document_id == document.id, Version.sha256 == report.sha256)
            .order_by(Version.number.desc())
            .limit(1)
        ).first()
    version = Version(
        document_id=document.id,
        number=document.latest_number + 1,
        sha256=report.sha256,
        size=report.size,
        commit=report.commit,
        author_person_id=author_id,
        author_hint=hint,
        observed_at=report.observed_at,
    )
    document.latest_number = version.number
    document.latest_sha256 = version.sha256
    document.updated_at = utcnow()
    session.add(version)
    session.add(document)
    audit.append(
        session,
        actor=actor,
        action="version.recorded",
        subject=_subject(document, version=version.number),
        details={
            "path": document.path,
            "number": version.number,
            "sha256": version.sha256,
            "size": version.size,
            "commit": version.commit,
            "kind": report.kind.value,
            "author": report.author if author_id else None,
            "author_hint": hint,
            "observed_at": report.observed_at.isoformat(),
            "same_bytes_as_version": restores,
        },
    )
    return version


def _attribute(session: Session, report: VersionReport) -> tuple[int | None, str | None]:
    """The person a version is attributed to, and the raw hint kept beside it."""
    if report.author is not None:
        person_id = session.exec(select(Person.id).where(Person.username == report.author)).first()
        if person_id is not None:
            return person_id, report.author_hint
        unknown = f"username '{report.author}' (not a registered person)"
        hint = f"{unknown}; {report.author_hint}" if report.author_hint else unknown
        return None, hint[:_MAX_HINT]
    return None, report.author_hint


def _rename(
    session: Session, folder: Folder, actor: Actor, report: VersionReport
) -> tuple[ReportOutcome, Document, str]:
    document = _live(session, folder, report.from_path)
    if document is None:
        outcome, document, message = _save(session, folder, actor, report)
        return outcome, document, f"'{report.from_path}' was not recorded; {message}"
    replaced = _live(session, folder, report.path)
    if replaced is not None:
        replaced.deleted = True
        replaced.updated_at = utcnow()
        session.add(replaced)
        session.flush()
        audit.append(
            session,
            actor=actor,
            action="document.deleted",
            subject=_subject(replaced),
            details={
                "path": replaced.path,
                "commit": report.commit,
                "reason": f"'{report.from_path}' was renamed over it",
                "author_hint": report.author_hint,
            },
        )
        reviews.withdraw_for_deletion(
            session, replaced, actor=actor, commit=report.commit, now=replaced.updated_at
        )
    document.path = report.path
    document.updated_at = utcnow()
    session.add(document)
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="document.moved",
        subject=_subject(document),
        details={"from": report.from_path, "to": report.path, "commit": report.commit},
    )
    if document.latest_sha256 == report.sha256:
        return ReportOutcome.moved, document, f"moved from '{report.from_path}'"
    _add_version(session, document, actor, report)
    return (
        ReportOutcome.recorded,
        document,
        f"moved from '{report.from_path}' and recorded as version {document.latest_number}",
    )


def _delete(
    session: Session, folder: Folder, actor: Actor, report: VersionReport
) -> tuple[ReportOutcome, Document | None, str]:
    document = _live(session, folder, report.path)
    if document is None:
        return ReportOutcome.ignored, None, f"nothing is recorded at '{report.path}'"
    document.deleted = True
    document.updated_at = utcnow()
    session.add(document)
    audit.append(
        session,
        actor=actor,
        action="document.deleted",
        subject=_subject(document),
        details={
            "path": document.path,
            "commit": report.commit,
            "observed_at": report.observed_at.isoformat(),
            "author_hint": report.author_hint,
        },
    )
    reviews.withdraw_for_deletion(
        session, document, actor=actor, commit=report.commit, now=document.updated_at
    )
    return ReportOutcome.deleted, document, "marked deleted; its versions stay downloadable"
