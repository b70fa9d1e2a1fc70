"""Reviews, decisions, the final version, acknowledgements and whose move it is.

The rules themselves (policy arithmetic, the transition table, separation of duties,
escalation) are core.review's; this module loads rows into them, signs decisions and
records every change with its audit event in the caller's transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from sqlmodel import Session, select

from core import review as rules
from core import schemas
from core.canonical import canonical_bytes, sha256_hex
from core.chain import format_time
from core.errors import Conflict, Forbidden, Invalid, NotFound
from core.schemas import Role
from core.signatures import key_id, verify_detached
from server import audit
from server.auth import Principal
from server.models import (
    Acknowledgement,
    Decision,
    Document,
    Folder,
    Membership,
    Office,
    Person,
    Review,
    SigningKey,
    Subscription,
    Version,
)
from server.signing import ServerSigner

__all__ = [
    "Clock",
    "acknowledge",
    "acknowledgements",
    "approvals_in_folder",
    "decide",
    "decision_payload",
    "document_awaiting",
    "draft_decision",
    "escalate_overdue",
    "final_version",
    "inbox",
    "open_review",
    "public_keys",
    "register_person_key",
    "review_view",
    "reviews_of",
    "submit",
    "subscribe",
    "withdraw",
    "withdraw_for_deletion",
]

Clock = Callable[[], datetime]


def decision_payload(
    *,
    review: Review,
    folder: str,
    path: str,
    person: Person,
    office: str | None,
    party: str,
    verdict: str,
    comment: str | None,
    at: datetime,
) -> bytes:
    """The canonical bytes a decision's signatures cover: who, what, which exact bytes."""
    meaning = (
        f"{person.name} {'approves' if verdict == 'approve' else 'rejects'} version "
        f"{review.version_number} of {folder}:{path} (SHA-256 {review.sha256})"
    )
    return canonical_bytes(
        {
            "type": "officium.decision",
            "review": review.id,
            "document": review.document_id,
            "version": review.version_number,
            "sha256": review.sha256,
            "signer": {
                "id": f"person:{person.id}",
                "username": person.username,
                "name": person.name,
                "office": office,
            },
            "party": party,
            "verdict": verdict,
            "meaning": meaning,
            "comment": comment,
            "time": format_time(at),
        }
    )


# ----------------------------------------------------------------- loading


def _policy(review: Review) -> rules.Policy:
    return rules.make_policy(
        json.loads(review.parties),
        review.mode,
        due=review.due,
        separation_of_duties=review.separation_of_duties,
    )


def _decisions(session: Session, review: Review) -> list[tuple[Decision, Person]]:
    return list(
        session.exec(
            select(Decision, Person)
            .join(Person, Person.id == Decision.person_id)
            .where(Decision.review_id == review.id)
            .order_by(Decision.id)
        ).all()
    )


def _rule_decisions(rows: Iterable[tuple[Decision, Person]]) -> tuple[rules.Decision, ...]:
    return tuple(
        rules.Decision(
            rules.Party.parse(row.party),
            person.username,
            row.verdict,
            row.decided_at,
            row.comment or "",
        )
        for row, person in rows
    )


def _parents(session: Session) -> dict[str, str | None]:
    offices = session.exec(select(Office)).all()
    names = {office.id: office.name for office in offices}
    return {office.name: names.get(office.parent_id) for office in offices}


def withdraw_for_deletion(
    session: Session, document: Document, *, actor, commit: str, now: datetime
) -> None:
    """A deleted document's open review closes: there is nothing left to decide on."""
    review = open_review(session, document.id)
    if review is None:
        return
    review.state = rules.ReviewState.withdrawn.value
    review.concluded_at = now
    session.add(review)
    document.state = rules.document_state(
        rules.ReviewState.withdrawn, document.final_number is not None
    )
    audit.append(
        session,
        actor=actor,
        action="review.withdrawn",
        subject={"document": document.id, "folder": document.folder_id, "review": review.id},
        details={
            "version": review.version_number,
            "sha256": review.sha256,
            "reason": f"the file was deleted from the folder (commit {commit})",
        },
        time=now,
    )


def _pinned_author(session: Session, review: Review) -> str | None:
    """The username the pinned version is attributed to (separation of duties needs it)."""
    return session.exec(
        select(Person.username)
        .join(Version, Version.author_person_id == Person.id)
        .where(Version.document_id == review.document_id, Version.number == review.version_number)
    ).first()


def open_review(session: Session, document_id: int) -> Review | None:
    """The document's open review, if it has one."""
    return session.exec(
        select(Review).where(Review.document_id == document_id, Review.state == "open")
    ).first()


def _lock_document(session: Session, document_id: int) -> Document:
    document = session.exec(
        select(Document).where(Document.id == document_id).with_for_update()
    ).one_or_none()
    if document is None:
        raise NotFound(f"there is no document with id {document_id}")
    return document


def _person(session: Session, principal: Principal) -> Person:
    if principal.person_id is None:
        raise Forbidden(f"{principal.describe()} is not a person; reviews are for people")
    return session.get(Person, principal.person_id)


def _owner_grant(session: Session, principal: Principal, document: Document, *, doing: str):
    if document.owner_office_id is None:
        raise Conflict(
            f"document {document.id} has no owner office yet; an admin must assign one "
            f"before anyone can {doing}"
        )
    for membership in principal.memberships:
        if membership.office_id == document.owner_office_id:
            return membership
    grant = principal.has_role(Role.admin)
    if grant is not None:
        return grant
    owner = session.get(Office, document.owner_office_id)
    raise Forbidden(
        f"only a member of the owner office '{owner.name}' (or an admin) may {doing}; "
        f"{principal.describe()} is neither"
    )


# ----------------------------------------------------------------- views


def _awaiting_wire(items: Iterable[rules.Awaited]) -> list[schemas.Awaiting]:
    return [
        schemas.Awaiting(party=a.party, action=a.action, since=a.since, due=a.due) for a in items
    ]


def _review_awaiting(
    session: Session, review: Review, rows, *, now: datetime, parents=None
) -> list[schemas.Awaiting]:
    if review.state != "open":
        return []
    return _awaiting_wire(
        rules.awaiting(
            _policy(review),
            _rule_decisions(rows),
            submitted_at=review.submitted_at,
            now=now,
            parents=parents if parents is not None else _parents(session),
        )
    )


def _decision_view(row: Decision, person: Person) -> schemas.DecisionView:
    payload = json.loads(row.payload)
    return schemas.DecisionView(
        id=row.id,
        party=row.party,
        username=person.username,
        name=payload["signer"]["name"],
        office=payload["signer"]["office"],
        verdict=row.verdict,
        comment=row.comment,
        decided_at=row.decided_at,
        payload=bytes(row.payload).decode("utf-8"),
        signature=row.signature,
        client_signature=row.client_signature,
    )


def review_view(session: Session, review: Review, *, now: datetime) -> schemas.ReviewView:
    """The wire form of a review, with its decisions and whose move it is."""
    rows = _decisions(session, review)
    document = session.get(Document, review.document_id)
    submitter = session.get(Person, review.submitter_person_id)
    return schemas.ReviewView(
        id=review.id,
        document_id=review.document_id,
        version=schemas.VersionRef(number=review.version_number, sha256=review.sha256),
        pinned_is_latest=document.latest_number == review.version_number,
        state=review.state,
        mode=review.mode,
        parties=json.loads(review.parties),
        due=review.due,
        separation_of_duties=review.separation_of_duties,
        comment=review.comment,
        submitted_by=submitter.username,
        submitted_at=review.submitted_at,
        concluded_at=review.concluded_at,
        decisions=[_decision_view(row, person) for row, person in rows],
        awaiting=_review_awaiting(session, review, rows, now=now),
    )


def reviews_of(session: Session, document_id: int, *, now: datetime) -> schemas.ReviewList:
    """Every review of a document, newest first."""
    if session.get(Document, document_id) is None:
        raise NotFound(f"there is no document with id {document_id}")
    reviews = session.exec(
        select(Review).where(Review.document_id == document_id).order_by(Review.id.desc())
    ).all()
    return schemas.ReviewList(reviews=[review_view(session, r, now=now) for r in reviews])


def document_awaiting(
    session: Session, document: Document, *, now: datetime
) -> tuple[list[schemas.Awaiting], Review | None]:
    """Whose move it is on a document (owner assignment, open review) and its open review."""
    if document.deleted:
        return [], None
    if document.owner_office_id is None:
        return [
            schemas.Awaiting(
                party="role:admin", action="assign an owner", since=document.created_at, due=None
            )
        ], None
    review = open_review(session, document.id)
    if review is None:
        return [], None
    return _review_awaiting(session, review, _decisions(session, review), now=now), review


def final_version(session: Session, document_id: int) -> schemas.FinalVersion:
    """The pinned version of the document's latest approved review, or NotFound."""
    if session.get(Document, document_id) is None:
        raise NotFound(f"there is no document with id {document_id}")
    review = session.exec(
        select(Review)
        .where(Review.document_id == document_id, Review.state == "approved")
        .order_by(Review.concluded_at.desc(), Review.id.desc())
    ).first()
    if review is None:
        raise NotFound(f"document {document_id} has no final version: no review approved it")
    approvals = [
        _decision_view(row, person)
        for row, person in _decisions(session, review)
        if row.verdict == "approve"
    ]
    return schemas.FinalVersion(
        document_id=document_id,
        number=review.version_number,
        sha256=review.sha256,
        approved_at=review.concluded_at,
        review_id=review.id,
        approvers=approvals,
    )


# ----------------------------------------------------------------- actions


def submit(
    session: Session,
    *,
    principal: Principal,
    document_id: int,
    request: schemas.ReviewCreate,
    now: datetime,
) -> schemas.ReviewView:
    """Ask for approval of one version under a policy; the review pins its SHA-256."""
    document = _lock_document(session, document_id)
    if document.deleted:
        raise Conflict(f"document {document_id} is deleted; restore it before submitting it")
    grant = _owner_grant(session, principal, document, doing="submit it for review")
    current = open_review(session, document_id)
    if current is not None:
        raise Conflict(
            f"document {document_id} already has an open review (#{current.id}, of version "
            f"{current.version_number}); withdraw it first"
        )
    number = request.version or document.latest_number
    version = session.exec(
        select(Version).where(Version.document_id == document_id, Version.number == number)
    ).one_or_none()
    if version is None:
        raise NotFound(f"document {document_id} has no version {number}")
    policy = rules.make_policy(
        request.parties,
        request.mode,
        due=request.due,
        separation_of_duties=request.separation_of_duties,
    )
    if policy.due is not None and policy.due <= now:
        raise Invalid(f"the due date {format_time(policy.due)} is already past")
    if not policy.separation_of_duties and principal.has_role(Role.admin) is None:
        raise Forbidden("only an admin may relax separation of duties for a review")
    _check_parties_exist(session, policy)
    person = _person(session, principal)
    review = Review(
        document_id=document_id,
        version_number=number,
        sha256=version.sha256,
        submitter_person_id=person.id,
        submitter_office=grant.office,
        mode=policy.mode_spec,
        parties=json.dumps([str(p) for p in policy.parties]),
        due=policy.due,
        separation_of_duties=policy.separation_of_duties,
        comment=request.comment,
        submitted_at=now,
    )
    session.add(review)
    document.state = schemas.DocumentState.in_review.value
    document.updated_at = now
    session.add(document)
    session.flush()
    audit.append(
        session,
        actor=principal.actor(grant),
        action="review.submitted",
        subject={"document": document.id, "folder": document.folder_id, "review": review.id},
        details={
            "version": number,
            "sha256": version.sha256,
            "mode": policy.mode_spec,
            "parties": [str(p) for p in policy.parties],
            "due": format_time(policy.due) if policy.due else None,
            "separation_of_duties": policy.separation_of_duties,
            "comment": request.comment,
        },
        time=now,
    )
    if not policy.separation_of_duties:
        audit.append(
            session,
            actor=principal.acting(Role.admin),
            action="review.separation_of_duties_relaxed",
            subject={"document": document.id, "folder": document.folder_id, "review": review.id},
            details={"reason": request.comment},
            time=now,
        )
    return review_view(session, review, now=now)


def _check_parties_exist(session: Session, policy: rules.Policy) -> None:
    for party in policy.parties:
        model, column = (
            (Office, Office.name)
            if party.kind is rules.PartyKind.office
            else (Person, Person.username)
        )
        if session.exec(select(model).where(column == party.name)).first() is None:
            raise NotFound(f"{party} is not in the register")


def _prepare(
    session: Session,
    *,
    principal: Principal,
    document: Document,
    verdict: str,
    comment: str | None,
    at: datetime,
):
    """Check that the caller may decide now and build the decision's canonical payload."""
    review = open_review(session, document.id)
    if review is None:
        raise Conflict(f"document {document.id} has no open review to decide on")
    person = _person(session, principal)
    rows = _decisions(session, review)
    author = _pinned_author(session, review)
    submitter = session.get(Person, review.submitter_person_id).username
    approver_of = {m.office for m in principal.memberships if m.role is Role.approver}
    step = rules.decide(
        _policy(review),
        rules.ReviewState(review.state),
        _rule_decisions(rows),
        person=person.username,
        verdict=verdict,
        at=at,
        comment=comment or "",
        person_offices_as_approver=approver_of,
        author=author,
        submitter=submitter,
        version=review.version_number,
        parents=_parents(session),
    )
    party = step.decision.party
    office = None
    if party.kind is rules.PartyKind.office:
        # The office whose approver role lets this person decide: the party's own, or
        # (standing in for an overdue office) its parent.
        parent = _parents(session).get(party.name)
        office = party.name if party.name in approver_of or parent not in approver_of else parent
    folder = session.get(Folder, document.folder_id)
    payload = decision_payload(
        review=review,
        folder=folder.name,
        path=document.path,
        person=person,
        office=office,
        party=str(party),
        verdict=verdict,
        comment=comment,
        at=at,
    )
    return review, person, step, party, office, payload


def draft_decision(
    session: Session,
    *,
    principal: Principal,
    document_id: int,
    verdict: str,
    comment: str | None,
    now: datetime,
) -> schemas.DecisionDraft:
    """The payload the caller's decision would carry now, for client-side signing."""
    document = session.get(Document, document_id)
    if document is None:
        raise NotFound(f"there is no document with id {document_id}")
    _, _, _, party, _, payload = _prepare(
        session,
        principal=principal,
        document=document,
        verdict=verdict,
        comment=comment,
        at=now,
    )
    return schemas.DecisionDraft(payload=payload.decode("utf-8"), party=str(party))


def decide(
    session: Session,
    *,
    principal: Principal,
    document_id: int,
    request: schemas.DecisionCreate,
    signer: ServerSigner,
    now: datetime,
) -> schemas.ReviewView:
    """Approve or reject the open review; a settled review sets the final version."""
    document = _lock_document(session, document_id)
    at = now
    if request.payload is not None:
        at = _signed_time(request.payload, now=now)
    review, person, step, party, office, payload = _prepare(
        session,
        principal=principal,
        document=document,
        verdict=request.verdict,
        comment=request.comment,
        at=at,
    )
    client_signature = None
    if request.payload is not None:
        if request.payload.encode("utf-8") != payload:
            raise Invalid(
                "the signed payload is not the one this decision would carry; fetch it again "
                "from GET .../review/decision-payload and sign it unchanged"
            )
        _check_client_signature(session, person, payload, request.signature)
        client_signature = request.signature
    row = Decision(
        review_id=review.id,
        party=str(party),
        person_id=person.id,
        verdict=request.verdict,
        comment=request.comment,
        decided_at=at,
        payload=payload,
        signature=signer.sign(session, payload),
        client_signature=client_signature,
    )
    session.add(row)
    session.flush()
    actor = principal.actor().acting_as(office=office, role=Role.approver.value)
    subject = {"document": document.id, "folder": document.folder_id, "review": review.id}
    audit.append(
        session,
        actor=actor,
        action="review.decided",
        subject={**subject, "decision": row.id},
        details={
            "party": str(party),
            "verdict": request.verdict,
            "version": review.version_number,
            "sha256": review.sha256,
            "payload_sha256": sha256_hex(payload),
            "signature": row.signature,
            "kid": signer.kid,
            "client_signature": client_signature,
            "comment": request.comment,
        },
        time=now,
    )
    if step.state is not rules.ReviewState.open:
        _conclude(session, document, review, step.state, now=now)
    return review_view(session, review, now=now)


_SIGNED_TIME_TOLERANCE = timedelta(minutes=10)


def _signed_time(payload_text: str, *, now: datetime) -> datetime:
    try:
        stated = json.loads(payload_text)["time"]
        at = datetime.strptime(stated, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except (ValueError, KeyError, TypeError):
        raise Invalid("the signed payload is not a decision payload from this server") from None
    if abs(now - at) > _SIGNED_TIME_TOLERANCE:
        raise Invalid("the signed payload was prepared more than 10 minutes ago; fetch a fresh one")
    return at


def _check_client_signature(
    session: Session, person: Person, payload: bytes, signature: str | None
) -> None:
    keys = session.exec(
        select(SigningKey).where(
            SigningKey.person_id == person.id,
            SigningKey.retired_at == None,  # noqa: E711
        )
    ).all()
    if not keys:
        raise Invalid(
            f"'{person.username}' has no registered public key; register one with "
            "POST /api/v1/me/keys before signing decisions"
        )
    if not any(verify_detached(signature or "", payload, json.loads(k.public_jwk)) for k in keys):
        raise Invalid(
            "the signature does not verify with any of your registered keys; nothing recorded"
        )


def register_person_key(
    session: Session, *, principal: Principal, jwk: dict, now: datetime
) -> schemas.PublicKey:
    """Register the caller's Ed25519 public key for client-side signing."""
    person = _person(session, principal)
    try:
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or "d" in jwk:
            raise ValueError
        public = {"kty": "OKP", "crv": "Ed25519", "x": jwk["x"]}
        kid = key_id(public)
    except (ValueError, KeyError, TypeError):
        raise Invalid(
            'give an Ed25519 public key as a JWK: {"kty": "OKP", "crv": "Ed25519", '
            "\"x\": ...} (never the private part 'd')"
        ) from None
    if session.get(SigningKey, kid) is not None:
        raise Conflict(f"the key {kid} is already registered")
    session.add(
        SigningKey(kid=kid, person_id=person.id, public_jwk=json.dumps(public), created_at=now)
    )
    session.flush()
    audit.append(
        session,
        actor=principal.actor(),
        action="key.registered",
        subject={"key": kid, "person": person.id},
        details={"jwk": public, "owner": person.username},
        time=now,
    )
    return schemas.PublicKey(
        kid=kid, username=person.username, jwk=public, created_at=now, retired_at=None
    )


def _conclude(
    session: Session, document: Document, review: Review, state, *, now: datetime
) -> None:
    review.state = state.value
    review.concluded_at = now
    session.add(review)
    if state is rules.ReviewState.approved:
        document.final_number = review.version_number
        document.final_sha256 = review.sha256
    document.state = rules.document_state(state, document.final_number is not None)
    document.updated_at = now
    session.add(document)
    audit.append(
        session,
        actor=audit.SYSTEM,
        action=f"review.{state.value}",
        subject={"document": document.id, "folder": document.folder_id, "review": review.id},
        details={"version": review.version_number, "sha256": review.sha256},
        time=now,
    )


def withdraw(
    session: Session, *, principal: Principal, document_id: int, now: datetime
) -> schemas.ReviewView:
    """The owner office closes its open review without a verdict."""
    document = _lock_document(session, document_id)
    grant = _owner_grant(session, principal, document, doing="withdraw its review")
    review = open_review(session, document_id)
    if review is None:
        raise Conflict(f"document {document_id} has no open review to withdraw")
    rows = _decisions(session, review)
    step = rules.withdraw(_policy(review), rules.ReviewState(review.state), _rule_decisions(rows))
    review.state = step.state.value
    review.concluded_at = now
    session.add(review)
    document.state = rules.document_state(step.state, document.final_number is not None)
    document.updated_at = now
    session.add(document)
    audit.append(
        session,
        actor=principal.actor(grant),
        action="review.withdrawn",
        subject={"document": document.id, "folder": document.folder_id, "review": review.id},
        details={"version": review.version_number, "sha256": review.sha256},
        time=now,
    )
    return review_view(session, review, now=now)


def escalate_overdue(session: Session, *, now: datetime) -> int:
    """Record, once each, the parent offices that join overdue reviews; return how many."""
    parents = _parents(session)
    joined = 0
    overdue = session.exec(
        select(Review).where(Review.state == "open", Review.due != None, Review.due < now)  # noqa: E711
    ).all()
    for review in overdue:
        recorded = json.loads(review.escalated)
        fresh = rules.escalations(
            _policy(review),
            _rule_decisions(_decisions(session, review)),
            submitted_at=review.submitted_at,
            now=now,
            parents=parents,
            recorded=recorded,
        )
        for item in fresh:
            recorded.append(item.party)
            document = session.get(Document, review.document_id)
            audit.append(
                session,
                actor=audit.SYSTEM,
                action="review.escalated",
                subject={
                    "document": document.id,
                    "folder": document.folder_id,
                    "review": review.id,
                },
                details={
                    "joins": item.party,
                    "for": list(item.escalated_for),
                    "due": format_time(review.due),
                },
                time=now,
            )
            joined += 1
        if fresh:
            review.escalated = json.dumps(recorded)
            session.add(review)
    return joined


# ----------------------------------------------------------------- acknowledgements


def _audience(session: Session, document: Document) -> list[Person]:
    members = (
        session.exec(
            select(Person)
            .join(Membership, Membership.person_id == Person.id)
            .where(Membership.office_id == document.owner_office_id)
        ).all()
        if document.owner_office_id
        else []
    )
    subscribers = session.exec(
        select(Person)
        .join(Subscription, Subscription.person_id == Person.id)
        .where(Subscription.document_id == document.id)
    ).all()
    unique = {person.id: person for person in [*members, *subscribers]}
    return sorted(unique.values(), key=lambda p: p.username)


def acknowledge(
    session: Session, *, principal: Principal, document_id: int, now: datetime
) -> schemas.Acknowledgement:
    """Record that the caller has seen the document's current final version."""
    document = _lock_document(session, document_id)
    if document.final_number is None:
        raise Conflict(f"document {document_id} has no final version to acknowledge")
    person = _person(session, principal)
    existing = session.exec(
        select(Acknowledgement).where(
            Acknowledgement.document_id == document_id,
            Acknowledgement.person_id == person.id,
            Acknowledgement.version_number == document.final_number,
        )
    ).first()
    if existing is None:
        existing = Acknowledgement(
            document_id=document_id,
            person_id=person.id,
            version_number=document.final_number,
            sha256=document.final_sha256,
            acknowledged_at=now,
        )
        session.add(existing)
        session.flush()
        audit.append(
            session,
            actor=principal.actor(),
            action="document.acknowledged",
            subject={"document": document.id, "folder": document.folder_id},
            details={"version": document.final_number, "sha256": document.final_sha256},
            time=now,
        )
    return schemas.Acknowledgement(
        document_id=document_id,
        username=person.username,
        number=existing.version_number,
        sha256=existing.sha256,
        acknowledged_at=existing.acknowledged_at,
    )


def acknowledgements(session: Session, document_id: int) -> schemas.AcknowledgementList:
    """Who in the owner office and among subscribers has and has not seen the final version."""
    document = session.get(Document, document_id)
    if document is None:
        raise NotFound(f"there is no document with id {document_id}")
    if document.final_number is None:
        return schemas.AcknowledgementList(
            document_id=document_id, final=None, acknowledged=[], pending=[]
        )
    rows = session.exec(
        select(Acknowledgement, Person)
        .join(Person, Person.id == Acknowledgement.person_id)
        .where(
            Acknowledgement.document_id == document_id,
            Acknowledgement.version_number == document.final_number,
        )
    ).all()
    seen = {person.username for _, person in rows}
    return schemas.AcknowledgementList(
        document_id=document_id,
        final=schemas.VersionRef(number=document.final_number, sha256=document.final_sha256),
        acknowledged=[
            schemas.Acknowledgement(
                document_id=document_id,
                username=person.username,
                number=row.version_number,
                sha256=row.sha256,
                acknowledged_at=row.acknowledged_at,
            )
            for row, person in rows
        ],
        pending=[p.username for p in _audience(session, document) if p.username not in seen],
    )


def subscribe(
    session: Session, *, principal: Principal, document_id: int, now: datetime
) -> schemas.AcknowledgementList:
    """The caller follows a document: its final versions await their acknowledgement too."""
    document = _lock_document(session, document_id)
    person = _person(session, principal)
    if session.get(Subscription, (document.id, person.id)) is None:
        session.add(Subscription(document_id=document.id, person_id=person.id, created_at=now))
        session.flush()
        audit.append(
            session,
            actor=principal.actor(),
            action="document.subscribed",
            subject={"document": document.id, "folder": document.folder_id},
            details={"username": person.username},
            time=now,
        )
    return acknowledgements(session, document_id)


# ----------------------------------------------------------------- inbox


def inbox(session: Session, *, principal: Principal, now: datetime) -> schemas.Inbox:
    """What awaits the caller: decisions, acknowledgements, owners to assign (admins)."""
    items: list[schemas.InboxItem] = []
    names = {f.id: f.name for f in session.exec(select(Folder)).all()}
    parents = _parents(session)
    mine = {f"person:{principal.username}"} | {
        f"office:{m.office}" for m in principal.memberships if m.role is Role.approver
    }
    approver_of = {m.office for m in principal.memberships if m.role is Role.approver}
    for review in session.exec(select(Review).where(Review.state == "open")).all():
        document = session.get(Document, review.document_id)
        rows = _decisions(session, review)
        for awaited in _review_awaiting(session, review, rows, now=now, parents=parents):
            if awaited.party in mine and _may_decide(
                session, review, rows, principal, approver_of, now=now, parents=parents
            ):
                items.append(
                    _item(document, names, awaited.action, awaited.since, awaited.due, review.id)
                )
                break
    if principal.person_id is not None:
        office_ids = {m.office_id for m in principal.memberships}
        documents = session.exec(
            select(Document).where(Document.final_number != None, Document.deleted == False)  # noqa: E711, E712
        ).all()
        acked = {
            (a.document_id, a.version_number)
            for a in session.exec(
                select(Acknowledgement).where(Acknowledgement.person_id == principal.person_id)
            ).all()
        }
        subscribed = set(
            session.exec(
                select(Subscription.document_id).where(
                    Subscription.person_id == principal.person_id
                )
            ).all()
        )
        for document in documents:
            concerned = document.owner_office_id in office_ids or document.id in subscribed
            if concerned and (document.id, document.final_number) not in acked:
                items.append(
                    _item(
                        document,
                        names,
                        f"acknowledge final v{document.final_number}",
                        document.updated_at,
                        None,
                        None,
                    )
                )
    if principal.has_role(Role.admin) is not None:
        for document in session.exec(
            select(Document).where(Document.owner_office_id == None, Document.deleted == False)  # noqa: E711, E712
        ).all():
            items.append(_item(document, names, "assign an owner", document.created_at, None, None))
    return schemas.Inbox(items=items)


def _may_decide(session, review, rows, principal, approver_of, *, now, parents) -> bool:
    """Whether the caller could decide on this review now (separation of duties included)."""
    if principal.username is None:
        return False
    author = _pinned_author(session, review)
    try:
        rules.may_decide(
            _policy(review),
            _rule_decisions(rows),
            person=principal.username,
            person_offices_as_approver=approver_of,
            author=author,
            submitter=session.get(Person, review.submitter_person_id).username,
            version=review.version_number,
            now=now,
            parents=parents,
        )
    except (Forbidden, Conflict):
        return False
    return True


def _item(document, names, action, since, due, review_id) -> schemas.InboxItem:
    return schemas.InboxItem(
        document_id=document.id,
        folder=names[document.folder_id],
        path=document.path,
        action=action,
        since=since,
        due=due,
        review_id=review_id,
    )


def approvals_in_folder(
    session: Session, *, folder: str, after: int, limit: int
) -> schemas.ApprovalList:
    """Approved reviews of a folder's documents, by review id, with their versions' commits."""
    folder_row = session.exec(select(Folder).where(Folder.name == folder)).one_or_none()
    if folder_row is None:
        raise NotFound(f"there is no folder called '{folder}'")
    rows = session.exec(
        select(Review, Document.path, Version.commit)
        .join(Document, Document.id == Review.document_id)
        .join(
            Version,
            (Version.document_id == Review.document_id) & (Version.number == Review.version_number),
        )
        .where(Document.folder_id == folder_row.id, Review.state == "approved", Review.id > after)
        .order_by(Review.id)
        .limit(limit)
    ).all()
    approvals = [
        schemas.Approval(
            review_id=review.id,
            document_id=review.document_id,
            path=path,
            number=review.version_number,
            sha256=review.sha256,
            commit=commit,
            approved_at=review.concluded_at,
        )
        for review, path, commit in rows
    ]
    return schemas.ApprovalList(
        approvals=approvals, next=approvals[-1].review_id if len(approvals) == limit else None
    )


# ----------------------------------------------------------------- keys


def public_keys(session: Session) -> schemas.PublicKeyList:
    """Every public key signatures may be checked with, the server's and persons'."""
    rows = session.exec(
        select(SigningKey, Person.username)
        .outerjoin(Person, Person.id == SigningKey.person_id)
        .order_by(SigningKey.created_at)
    ).all()
    return schemas.PublicKeyList(
        keys=[
            schemas.PublicKey(
                kid=key.kid,
                username=username,
                jwk=json.loads(key.public_jwk),
                created_at=key.created_at,
                retired_at=key.retired_at,
            )
            for key, username in rows
        ]
    )
