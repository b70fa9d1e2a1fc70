"""Reviews and decisions, the final version, acknowledgements, the inbox, public keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from core import schemas
from core.schemas import Id, Name, Text
from server import reviews
from server.api.deps import Admin, Caller, Db, Now, Signer

router = APIRouter(tags=["reviews"])

DocumentId = Annotated[Id, Path(description="The document's id.")]


@router.post("/documents/{document_id}/reviews", status_code=201)
def submit_review(
    document_id: DocumentId, body: schemas.ReviewCreate, db: Db, caller: Caller, now: Now
) -> schemas.ReviewView:
    """Ask for approval of one version (default: the latest) under a policy."""
    with db.writing() as session:
        return reviews.submit(
            session, principal=caller, document_id=document_id, request=body, now=now
        )


@router.get("/documents/{document_id}/reviews")
def list_reviews(document_id: DocumentId, db: Db, _: Caller, now: Now) -> schemas.ReviewList:
    """Every review of a document, newest first, with decisions and signatures."""
    with db.reading() as session:
        return reviews.reviews_of(session, document_id, now=now)


@router.post("/documents/{document_id}/review/decisions")
def decide(
    document_id: DocumentId,
    body: schemas.DecisionCreate,
    db: Db,
    caller: Caller,
    signer: Signer,
    now: Now,
) -> schemas.ReviewView:
    """Approve or reject the open review (a rejection needs a comment)."""
    with db.writing() as session:
        return reviews.decide(
            session,
            principal=caller,
            document_id=document_id,
            request=body,
            signer=signer,
            now=now,
        )


@router.get("/documents/{document_id}/review/decision-payload")
def decision_payload(
    document_id: DocumentId,
    db: Db,
    caller: Caller,
    now: Now,
    verdict: Annotated[str, Query(pattern="^(approve|reject)$")],
    comment: Annotated[Text | None, Query()] = None,
) -> schemas.DecisionDraft:
    """The exact payload your decision would carry now, to sign with your own key."""
    with db.reading() as session:
        return reviews.draft_decision(
            session,
            principal=caller,
            document_id=document_id,
            verdict=verdict,
            comment=comment,
            now=now,
        )


@router.post("/me/keys", status_code=201)
def register_key(
    body: schemas.PublicKeyCreate, db: Db, caller: Caller, now: Now
) -> schemas.PublicKey:
    """Register your Ed25519 public key (a JWK) to sign decisions on your side."""
    with db.writing() as session:
        return reviews.register_person_key(session, principal=caller, jwk=body.jwk, now=now)


@router.post("/documents/{document_id}/review/withdraw")
def withdraw(document_id: DocumentId, db: Db, caller: Caller, now: Now) -> schemas.ReviewView:
    """The owner office withdraws its open review."""
    with db.writing() as session:
        return reviews.withdraw(session, principal=caller, document_id=document_id, now=now)


@router.get("/documents/{document_id}/final")
def final_version(document_id: DocumentId, db: Db, _: Caller) -> schemas.FinalVersion:
    """Which version is final: number, SHA-256, who approved it and when."""
    with db.reading() as session:
        return reviews.final_version(session, document_id)


@router.post("/documents/{document_id}/acknowledgements", status_code=201)
def acknowledge(
    document_id: DocumentId, db: Db, caller: Caller, now: Now
) -> schemas.Acknowledgement:
    """Record that the caller has seen the current final version."""
    with db.writing() as session:
        return reviews.acknowledge(session, principal=caller, document_id=document_id, now=now)


@router.get("/documents/{document_id}/acknowledgements")
def acknowledgements(document_id: DocumentId, db: Db, _: Caller) -> schemas.AcknowledgementList:
    """Who has and has not acknowledged the current final version."""
    with db.reading() as session:
        return reviews.acknowledgements(session, document_id)


@router.post("/documents/{document_id}/subscribers", status_code=201)
def subscribe(
    document_id: DocumentId, db: Db, caller: Caller, now: Now
) -> schemas.AcknowledgementList:
    """Follow a document from outside its owner office: its final versions await you too."""
    with db.writing() as session:
        return reviews.subscribe(session, principal=caller, document_id=document_id, now=now)


@router.get("/inbox")
def inbox(db: Db, caller: Caller, now: Now) -> schemas.Inbox:
    """What awaits the caller."""
    with db.reading() as session:
        return reviews.inbox(session, principal=caller, now=now)


@router.get("/folders/{folder}/approvals")
def folder_approvals(
    folder: Annotated[Name, Path()],
    db: Db,
    _: Caller,
    after: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> schemas.ApprovalList:
    """Approved versions of a folder's documents with their git commits (agents tag them)."""
    with db.reading() as session:
        return reviews.approvals_in_folder(session, folder=folder, after=after, limit=limit)


@router.get("/keys")
def public_keys(db: Db, _: Caller) -> schemas.PublicKeyList:
    """The public keys that decisions' signatures can be checked with."""
    with db.reading() as session:
        return reviews.public_keys(session)


@router.post("/reviews/escalate")
def escalate(db: Db, _: Admin, now: Now) -> dict[str, int]:
    """Record escalations of overdue reviews now (the server also does it every minute)."""
    with db.writing() as session:
        return {"escalated": reviews.escalate_overdue(session, now=now)}
