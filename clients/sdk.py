"""A typed, synchronous Python client for the Officium HTTP API.

One method per endpoint, returning the wire models of :mod:`core.schemas`. Problems the
server reports come back as the matching :mod:`core.errors` class (``NotFound``,
``Forbidden`` ...), so callers handle one error tree whether the fault was found on the
server or on this side. Tests hand in an ``httpx.Client`` of their own (a Starlette
``TestClient`` is one) to drive the real application in-process, without sockets.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote

import httpx
from joserfc.jwk import OKPKey
from pydantic import BaseModel, ValidationError

from core.errors import Invalid, OfficiumError, Unavailable, error_for_kind
from core.schemas import (
    AccessLogPage,
    AccessRecord,
    Acknowledgement,
    AcknowledgementList,
    ApprovalList,
    AuditEvent,
    AuditEventPage,
    AuditKeyList,
    ChainCheck,
    CheckpointPage,
    ConsistencyProof,
    ContentStored,
    DecisionCreate,
    DecisionDraft,
    DocumentPage,
    DocumentState,
    DocumentStatus,
    FinalVersion,
    Folder,
    FolderCreate,
    FolderList,
    History,
    Inbox,
    InclusionProof,
    KeyRotation,
    Me,
    Membership,
    MembershipCreate,
    MembershipList,
    Office,
    OfficeCreate,
    OfficeList,
    OwnerChange,
    Person,
    PersonCreate,
    PersonList,
    PublicKey,
    PublicKeyCreate,
    PublicKeyList,
    ReportBatch,
    ReportBatchResult,
    ReviewCreate,
    ReviewList,
    ReviewView,
    Role,
    SignedCheckpoint,
    TokenCreate,
    TokenCreated,
    TokenInfo,
    TokenList,
    VerifyResult,
    Version,
    VersionList,
    VersionReport,
)
from core.signatures import sign_detached

__all__ = [
    "API_PREFIX",
    "CHUNK_SIZE",
    "DEFAULT_URL",
    "PROBLEM_TYPE_PREFIX",
    "SHA256_HEADER",
    "ContentMismatch",
    "OfficiumClient",
    "Saved",
    "UnexpectedResponse",
    "sha256_file",
]

DEFAULT_URL = "http://127.0.0.1:8470"
API_PREFIX = "/api/v1"
PROBLEM_TYPE_PREFIX = "urn:officium:problem:"
SHA256_HEADER = "X-Officium-SHA256"
CHUNK_SIZE = 1024 * 1024

_Model = TypeVar("_Model", bound=BaseModel)
_EXCERPT = 200

# Used only when an error response carries no body to explain itself (a HEAD request,
# a bare proxy answer): the status is then all there is to go on.
_KIND_BY_STATUS = {
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    409: "conflict",
    413: "too-large",
    422: "invalid",
    502: "unavailable",
    503: "unavailable",
    504: "unavailable",
}


class _Escalated(BaseModel):
    """The answer of ``POST /reviews/escalate``."""

    escalated: int


class UnexpectedResponse(OfficiumError):
    """The server answered with something that is not an Officium answer."""

    kind = "unexpected-response"
    title = "Unexpected response"

    def __init__(self, detail: str, *, status: int | None = None) -> None:
        super().__init__(detail)
        self.status = status


@dataclass(frozen=True, slots=True)
class Saved:
    """What a streamed download wrote: how many bytes, and their SHA-256."""

    size: int
    sha256: str


class ContentMismatch(OfficiumError):
    """Downloaded bytes do not hash to the SHA-256 the server announced."""

    kind = "content-mismatch"
    title = "Content mismatch"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Lower-case hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def _segment(value: str | int) -> str:
    """One URL path segment, with '/' and every other reserved character escaped."""
    return quote(str(value), safe="")


def _query(**params: Any) -> dict[str, Any]:
    return {key: value for key, value in params.items() if value is not None}


def _wire(model: type[_Model], **fields: Any) -> _Model:
    """Build a request model, turning a validation failure into ``Invalid``."""
    try:
        return model(**fields)
    except ValidationError as exc:
        raise Invalid(_explain(exc)) from None


def _explain(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


class OfficiumClient:
    """A session with one Officium server, acting with one token."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        http_client: httpx.Client | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Talk to ``base_url`` (or through ``http_client``, which is then used as it is)."""
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(base_url=self.base_url, timeout=timeout)

    def with_token(self, token: str) -> OfficiumClient:
        """A client for the same server and connection pool, acting with another token."""
        return OfficiumClient(self.base_url, token, http_client=self._http)

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Release the connection pool (a client handed in by the caller stays open)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> OfficiumClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------ who, ready

    def ready(self) -> bool:
        """True when the server can reach its database and content store (``/readyz``)."""
        try:
            self._send("GET", "/readyz", prefix="")
        except Unavailable:
            return False
        return True

    def me(self) -> Me:
        """Who the token speaks for, with the person's memberships."""
        return self._get(Me, "/me")

    # ------------------------------------------------------------- directory

    def create_office(self, *, name: str, parent: str | None = None) -> Office:
        """Add an office to the hierarchy, optionally under a parent office."""
        body = _wire(OfficeCreate, name=name, parent=parent)
        return self._post(Office, "/offices", body)

    def list_offices(self) -> list[Office]:
        """Every office."""
        return self._get(OfficeList, "/offices").offices

    def create_person(self, *, username: str, name: str | None = None) -> Person:
        """Add a person; ``name`` is how they are printed."""
        body = _wire(PersonCreate, username=username, name=name)
        return self._post(Person, "/persons", body)

    def list_persons(self) -> list[Person]:
        """Every person."""
        return self._get(PersonList, "/persons").persons

    def create_membership(self, *, username: str, office: str, role: Role | str) -> Membership:
        """Let a person act for an office with a role."""
        body = _wire(MembershipCreate, username=username, office=office, role=role)
        return self._post(Membership, "/memberships", body)

    def list_memberships(
        self, *, username: str | None = None, office: str | None = None
    ) -> list[Membership]:
        """Memberships, optionally of one person or of one office."""
        params = _query(username=username, office=office)
        return self._get(MembershipList, "/memberships", params=params).memberships

    def create_token(
        self,
        *,
        username: str | None = None,
        folder: str | None = None,
        label: str | None = None,
    ) -> TokenCreated:
        """A new token for a person or for a folder's agent; its secret is shown only here."""
        body = _wire(TokenCreate, username=username, folder=folder, label=label)
        return self._post(TokenCreated, "/tokens", body)

    def list_tokens(self) -> list[TokenInfo]:
        """Every token (without secrets)."""
        return self._get(TokenList, "/tokens").tokens

    def revoke_token(self, id: int) -> TokenInfo:
        """Revoke a token; it stops working at once."""
        return self._parse(TokenInfo, self._send("DELETE", f"/tokens/{_segment(id)}"))

    # --------------------------------------------------------------- folders

    def create_folder(self, *, name: str, root: str, default_owner: str | None = None) -> Folder:
        """Register a watched folder with the root path its agent sees."""
        body = _wire(FolderCreate, name=name, root=root, default_owner=default_owner)
        return self._post(Folder, "/folders", body)

    def list_folders(self) -> list[Folder]:
        """Every registered folder."""
        return self._get(FolderList, "/folders").folders

    # ------------------------------------------------------ content, reports

    def upload_content(self, sha256: str, source: bytes | str | os.PathLike[str]) -> ContentStored:
        """Store bytes (or a file, streamed) under their SHA-256."""
        path = f"/content/{_segment(sha256.lower())}"
        headers = {"Content-Type": "application/octet-stream"}
        if isinstance(source, bytes | bytearray | memoryview):
            response = self._send("PUT", path, content=bytes(source), headers=headers)
            return self._parse(ContentStored, response)
        with open(source, "rb") as stream:
            # A declared length lets the server refuse an oversized upload before reading it.
            headers["Content-Length"] = str(os.fstat(stream.fileno()).st_size)
            chunks = iter(lambda: stream.read(CHUNK_SIZE), b"")
            response = self._send("PUT", path, content=chunks, headers=headers)
        return self._parse(ContentStored, response)

    def upload_chunks(self, sha256: str, chunks: Iterable[bytes], *, size: int) -> ContentStored:
        """Store streamed bytes of a known size under their SHA-256 (e.g. from git)."""
        path = f"/content/{_segment(sha256.lower())}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        response = self._send("PUT", path, content=iter(chunks), headers=headers)
        return self._parse(ContentStored, response)

    def has_content(self, sha256: str) -> bool:
        """True when the server already holds the bytes with this SHA-256."""
        path = f"/content/{_segment(sha256.lower())}"
        response = self._send("HEAD", path, allow={404})
        return response.status_code != 404

    def report(self, folder: str, reports: Sequence[VersionReport]) -> ReportBatchResult:
        """Report what an agent saw in its folder; the batch is applied all or none."""
        body = _wire(ReportBatch, reports=list(reports))
        return self._post(ReportBatchResult, f"/folders/{_segment(folder)}/reports", body)

    # ------------------------------------------------------------- documents

    def list_documents(
        self,
        *,
        folder: str | None = None,
        prefix: str | None = None,
        owner: str | None = None,
        state: DocumentState | str | None = None,
        deleted: bool | None = None,
        after: int | None = None,
        limit: int | None = None,
    ) -> DocumentPage:
        """One page of documents; pass ``page.next`` as ``after`` for the following one."""
        params = _query(
            folder=folder,
            prefix=prefix,
            owner=owner,
            state=None if state is None else str(state),
            deleted=deleted,
            after=after,
            limit=limit,
        )
        return self._get(DocumentPage, "/documents", params=params)

    def iter_documents(
        self,
        *,
        folder: str | None = None,
        prefix: str | None = None,
        owner: str | None = None,
        state: DocumentState | str | None = None,
        deleted: bool | None = None,
        page_size: int | None = None,
    ) -> Iterator[DocumentStatus]:
        """Every matching document, fetching page after page."""
        after: int | None = None
        while True:
            page = self.list_documents(
                folder=folder,
                prefix=prefix,
                owner=owner,
                state=state,
                deleted=deleted,
                after=after,
                limit=page_size,
            )
            yield from page.documents
            if page.next is None:
                return
            after = page.next

    def document(self, id: int) -> DocumentStatus:
        """One document by id."""
        return self._get(DocumentStatus, f"/documents/{_segment(id)}")

    def lookup(self, folder: str, path: str) -> DocumentStatus:
        """The document recorded at ``path`` in ``folder``."""
        params = {"folder": folder, "path": path}
        return self._get(DocumentStatus, "/documents/lookup", params=params)

    def versions(self, id: int) -> list[Version]:
        """Every recorded version of a document, oldest first."""
        return self._get(VersionList, f"/documents/{_segment(id)}/versions").versions

    def download(
        self,
        id: int,
        number: int,
        dest_path: str | os.PathLike[str],
        *,
        expect_sha256: str | None = None,
    ) -> str:
        """Write a version's exact bytes to ``dest_path`` and return their checked SHA-256.

        The bytes go to a temporary file beside ``dest_path`` and replace it only once
        their hash matches the one the server announced (and ``expect_sha256``, when
        the caller knows which bytes it wants), so a reader never sees a partial or
        wrong file.
        """
        dest = Path(dest_path)
        url = f"/documents/{_segment(id)}/versions/{_segment(number)}/content"
        with self._stream("GET", url) as response:
            announced = response.headers.get(SHA256_HEADER)
            if not announced:
                raise UnexpectedResponse(
                    f"the server sent version {number} of document {id} without "
                    f"its {SHA256_HEADER} header",
                    status=response.status_code,
                )
            partial, digest = _receive(response, dest)
        for expected, whose in ((announced, "the server announced"), (expect_sha256, "expected")):
            if expected is not None and digest != expected.lower():
                with suppress(FileNotFoundError):
                    os.unlink(partial)
                raise ContentMismatch(
                    f"version {number} of document {id} arrived with SHA-256 {digest}, "
                    f"but {whose} {expected.lower()}; nothing was written"
                )
        os.replace(partial, dest)
        return digest

    def history(self, id: int) -> History:
        """Every version and every audit event of one document."""
        return self._get(History, f"/documents/{_segment(id)}/history")

    def change_owner(self, id: int, office: str, *, reason: str | None = None) -> DocumentStatus:
        """Hand a document to another office."""
        body = _wire(OwnerChange, office=office, reason=reason)
        return self._post(DocumentStatus, f"/documents/{_segment(id)}/owner", body)

    def verify(self, sha256: str) -> VerifyResult:
        """Which recorded versions have exactly these bytes, and are they final."""
        return self._get(VerifyResult, f"/verify/{_segment(sha256.lower())}")

    # --------------------------------------------------------------- reviews

    def submit(
        self,
        id: int,
        *,
        parties: Sequence[str],
        mode: str = "all",
        due: datetime | None = None,
        comment: str | None = None,
        version: int | None = None,
        separation_of_duties: bool = True,
    ) -> ReviewView:
        """Ask for approval of a version (default: the latest) by ``parties``.

        Each party is ``office:NAME`` or ``person:USERNAME``; ``mode`` is ``all``,
        ``any``, ``quorum:K`` or ``sequential`` (in the order of ``parties``). The
        review pins the version's SHA-256.
        """
        body = _wire(
            ReviewCreate,
            parties=list(parties),
            mode=mode,
            due=due,
            comment=comment,
            version=version,
            separation_of_duties=separation_of_duties,
        )
        return self._post(ReviewView, f"/documents/{_segment(id)}/reviews", body)

    def reviews(self, id: int) -> list[ReviewView]:
        """Every review of a document, newest first, with decisions and signatures."""
        return self._get(ReviewList, f"/documents/{_segment(id)}/reviews").reviews

    def decision_payload(
        self, id: int, *, verdict: str, comment: str | None = None
    ) -> DecisionDraft:
        """The exact payload the caller's decision would carry now, to sign on this side."""
        params = _query(verdict=verdict, comment=comment)
        return self._get(
            DecisionDraft, f"/documents/{_segment(id)}/review/decision-payload", params=params
        )

    def decide(
        self,
        id: int,
        *,
        verdict: str,
        comment: str | None = None,
        sign_with: OKPKey | None = None,
    ) -> ReviewView:
        """Approve or reject the document's open review; a rejection needs a comment.

        With ``sign_with`` (a private Ed25519 key whose public half is registered with
        :meth:`register_key`) the decision also carries the caller's own signature: the
        payload the server would record is fetched, signed here, and sent back with the
        signature, which the server verifies before it records anything.
        """
        payload = signature = None
        if sign_with is not None:
            _wire(DecisionCreate, verdict=verdict, comment=comment)  # refuse before asking
            draft = self.decision_payload(id, verdict=verdict, comment=comment)
            payload = draft.payload
            signature = sign_detached(payload.encode("utf-8"), sign_with)
        body = _wire(
            DecisionCreate, verdict=verdict, comment=comment, payload=payload, signature=signature
        )
        return self._post(ReviewView, f"/documents/{_segment(id)}/review/decisions", body)

    def approve(
        self, id: int, *, comment: str | None = None, sign_with: OKPKey | None = None
    ) -> ReviewView:
        """Approve the document's open review (signed with ``sign_with``, if given)."""
        return self.decide(id, verdict="approve", comment=comment, sign_with=sign_with)

    def reject(self, id: int, *, comment: str, sign_with: OKPKey | None = None) -> ReviewView:
        """Reject the document's open review, saying why (signed with ``sign_with``, if given)."""
        return self.decide(id, verdict="reject", comment=comment, sign_with=sign_with)

    def withdraw(self, id: int) -> ReviewView:
        """Withdraw the document's open review (for its owner office)."""
        response = self._send("POST", f"/documents/{_segment(id)}/review/withdraw")
        return self._parse(ReviewView, response)

    def final(self, id: int) -> FinalVersion:
        """Which version is final, who approved it and when; ``NotFound`` when none is."""
        return self._get(FinalVersion, f"/documents/{_segment(id)}/final")

    def acknowledge(self, id: int) -> Acknowledgement:
        """Record that the caller has seen the document's current final version."""
        response = self._send("POST", f"/documents/{_segment(id)}/acknowledgements")
        return self._parse(Acknowledgement, response)

    def subscribe(self, id: int) -> AcknowledgementList:
        """Follow a document from outside its owner office (its final versions await you)."""
        return self._parse(
            AcknowledgementList, self._send("POST", f"/documents/{_segment(id)}/subscribers")
        )

    def acknowledgements(self, id: int) -> AcknowledgementList:
        """Who has and who has not yet acknowledged the current final version."""
        return self._get(AcknowledgementList, f"/documents/{_segment(id)}/acknowledgements")

    def inbox(self) -> Inbox:
        """What awaits the caller: decisions, acknowledgements, owners to assign."""
        return self._get(Inbox, "/inbox")

    def public_keys(self) -> list[PublicKey]:
        """The public keys that decisions' signatures can be checked with."""
        return self._get(PublicKeyList, "/keys").keys

    def register_key(self, jwk: Mapping[str, str]) -> PublicKey:
        """Register the caller's Ed25519 public key (a JWK: kty, crv, x) to sign decisions."""
        body = _wire(PublicKeyCreate, jwk=dict(jwk))
        return self._post(PublicKey, "/me/keys", body)

    def folder_approvals(self, folder: str, *, after: int = 0) -> ApprovalList:
        """Approved versions of a folder's documents with their git commits (for agents)."""
        return self._get(
            ApprovalList, f"/folders/{_segment(folder)}/approvals", params=_query(after=after)
        )

    def escalate(self) -> int:
        """Record escalations of overdue reviews now (admins); return how many parties joined."""
        return self._parse(_Escalated, self._send("POST", "/reviews/escalate")).escalated

    # ----------------------------------------------------------------- audit

    def audit_events(self, *, after: int = 0, limit: int | None = None) -> AuditEventPage:
        """One page of audit events with ``seq`` greater than ``after``."""
        params = _query(after=after, limit=limit)
        return self._get(AuditEventPage, "/audit/events", params=params)

    def iter_audit_events(
        self, *, after: int = 0, page_size: int | None = None
    ) -> Iterator[AuditEvent]:
        """Every audit event after ``after``, in order, fetching page after page."""
        while True:
            page = self.audit_events(after=after, limit=page_size)
            yield from page.events
            if page.next is None or not page.events:
                return
            after = page.next

    def audit_verify(self) -> ChainCheck:
        """Ask the server to recompute the whole audit chain."""
        return self._get(ChainCheck, "/audit/verify")

    def access_log(
        self, *, document: int | None = None, after: int = 0, limit: int | None = None
    ) -> AccessLogPage:
        """One page of the access log (who read which evidence), optionally of one document."""
        params = _query(document=document, after=after, limit=limit)
        return self._get(AccessLogPage, "/audit/access", params=params)

    def iter_access_log(
        self, *, document: int | None = None, after: int = 0, page_size: int | None = None
    ) -> Iterator[AccessRecord]:
        """Every access-log entry after ``after``, in order, fetching page after page."""
        while True:
            page = self.access_log(document=document, after=after, limit=page_size)
            yield from page.entries
            if page.next is None or not page.entries:
                return
            after = page.next

    def audit_keys(self) -> AuditKeyList:
        """The audit log's origin and the server keys its checkpoints were signed with."""
        return self._get(AuditKeyList, "/audit/keys")

    def latest_checkpoint(self) -> SignedCheckpoint:
        """The latest signed checkpoint of the audit trail."""
        return self._get(SignedCheckpoint, "/audit/checkpoint")

    def checkpoints(self, *, after_size: int = 0, limit: int | None = None) -> CheckpointPage:
        """One page of signed checkpoints of trees larger than ``after_size``, smallest first."""
        params = _query(after_size=after_size, limit=limit)
        return self._get(CheckpointPage, "/audit/checkpoints", params=params)

    def make_checkpoint(self) -> SignedCheckpoint:
        """Have the server sign a checkpoint of the trail now (auditors and admins)."""
        return self._parse(SignedCheckpoint, self._send("POST", "/audit/checkpoints"))

    def inclusion_proof(self, seq: int, tree_size: int) -> InclusionProof:
        """The Merkle audit path of event ``seq`` in the tree of the first ``tree_size`` events."""
        params = _query(seq=seq, tree_size=tree_size)
        return self._get(InclusionProof, "/audit/proofs/inclusion", params=params)

    def consistency_proof(self, old: int, new: int) -> ConsistencyProof:
        """The proof that the tree of ``old`` events is a prefix of the tree of ``new``."""
        params = _query(old_size=old, new_size=new)
        return self._get(ConsistencyProof, "/audit/proofs/consistency", params=params)

    def rotate_key(self) -> KeyRotation:
        """Replace the server's signing key (admins); both keys sign the checkpoint saying so."""
        return self._parse(KeyRotation, self._send("POST", "/audit/keys/rotate"))

    # --------------------------------------------------------------- exports

    def export_audit(
        self,
        dest: str | os.PathLike[str] | BinaryIO,
        *,
        format: str = "bundle",
        document: int | None = None,
        office: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        with_content: bool = False,
    ) -> Saved:
        """Stream the audit trail (``bundle`` or ``csv``) into a file or a binary stream.

        A path is written beside itself and renamed into place once the whole export has
        arrived, so a failed export never leaves a partial file under that name.
        """
        params = _query(
            format=format,
            document=document,
            office=office,
            since=since.isoformat() if since else None,
            until=until.isoformat() if until else None,
            content="true" if with_content else None,
        )
        with self._stream("GET", "/audit/export", params=params) as response:
            return _save(response, dest)

    def certificate(self, id: int) -> bytes:
        """A document's certificate of completion (PDF), checked against a signed checkpoint."""
        return self._send("GET", f"/documents/{_segment(id)}/certificate").content

    def save_certificate(self, id: int, dest: str | os.PathLike[str] | BinaryIO) -> Saved:
        """Write a document's certificate of completion (PDF) to a file or a binary stream."""
        with self._stream("GET", f"/documents/{_segment(id)}/certificate") as response:
            return _save(response, dest)

    # ------------------------------------------------------------- transport

    def _get(
        self, model: type[_Model], path: str, *, params: Mapping[str, Any] | None = None
    ) -> _Model:
        return self._parse(model, self._send("GET", path, params=params))

    def _post(self, model: type[_Model], path: str, body: BaseModel) -> _Model:
        response = self._send(
            "POST",
            path,
            content=body.model_dump_json(exclude_none=True).encode(),
            headers={"Content-Type": "application/json"},
        )
        return self._parse(model, response)

    def _request(
        self,
        method: str,
        path: str,
        *,
        prefix: str = API_PREFIX,
        params: Mapping[str, Any] | None = None,
        content: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        all_headers = {"Accept": "application/json, application/problem+json"}
        if self._token:
            all_headers["Authorization"] = f"Bearer {self._token}"
        all_headers.update(headers or {})
        return self._http.build_request(
            method, prefix + path, params=params, content=content, headers=all_headers
        )

    def _send(
        self,
        method: str,
        path: str,
        *,
        allow: frozenset[int] | set[int] = frozenset(),
        **request: Any,
    ) -> httpx.Response:
        """Send a request and return its answer, or raise the error it reports."""
        with self._transport_errors():
            response = self._http.send(self._request(method, path, **request))
        if response.is_error and response.status_code not in allow:
            raise self._error(response)
        return response

    @contextmanager
    def _stream(self, method: str, path: str, **request: Any) -> Iterator[httpx.Response]:
        with self._transport_errors():
            response = self._http.send(self._request(method, path, **request), stream=True)
            try:
                if response.is_error:
                    response.read()
                    raise self._error(response)
                yield response
            finally:
                response.close()

    @contextmanager
    def _transport_errors(self) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError as exc:
            raise Unavailable(
                f"cannot reach the Officium server at {self.base_url}: {exc}"
            ) from exc
        except httpx.TransportError as exc:
            raise Unavailable(
                f"the Officium server at {self.base_url} did not answer properly: "
                f"{exc or type(exc).__name__}"
            ) from exc

    def _parse(self, model: type[_Model], response: httpx.Response) -> _Model:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise UnexpectedResponse(
                f"{response.request.method} {response.request.url.path} answered with a body "
                f"that is not a {model.__name__}: {_explain(exc)}",
                status=response.status_code,
            ) from None

    def _error(self, response: httpx.Response) -> OfficiumError:
        """The error an error response stands for, rebuilt from its problem document."""
        status = response.status_code
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        if media_type == "application/problem+json":
            problem = _json_or_none(response)
            if isinstance(problem, dict):
                problem_type = str(problem.get("type") or "")
                kind = problem_type.removeprefix(PROBLEM_TYPE_PREFIX)
                if kind == problem_type:
                    kind = _KIND_BY_STATUS.get(status, "error")
                detail = problem.get("detail") or problem.get("title") or f"HTTP {status}"
                return error_for_kind(kind)(str(detail))
        where = f"{response.request.method} {response.request.url.path}"
        if not response.content:
            kind = _KIND_BY_STATUS.get(status)
            detail = f"{where} answered HTTP {status} {response.reason_phrase}".rstrip()
            if kind is not None:
                return error_for_kind(kind)(detail)
            return UnexpectedResponse(detail, status=status)
        excerpt = " ".join(response.text[:_EXCERPT].split())
        if len(response.text) > _EXCERPT:
            excerpt += " ..."
        return UnexpectedResponse(
            f"{where} answered HTTP {status} {response.reason_phrase}: {excerpt}", status=status
        )


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _save(response: httpx.Response, dest: str | os.PathLike[str] | BinaryIO) -> Saved:
    """Stream a response body to a binary stream, or to a path by way of a file beside it."""
    if hasattr(dest, "write"):
        digest, size = hashlib.sha256(), 0
        for chunk in response.iter_bytes(CHUNK_SIZE):
            digest.update(chunk)
            dest.write(chunk)
            size += len(chunk)
        return Saved(size=size, sha256=digest.hexdigest())
    target = Path(dest)
    partial, digest = _receive(response, target)
    size = partial.stat().st_size
    os.replace(partial, target)
    return Saved(size=size, sha256=digest)


def _receive(response: httpx.Response, dest: Path) -> tuple[Path, str]:
    """Stream a response body into a new file beside ``dest``; return it and its SHA-256."""
    partial = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
    digest = hashlib.sha256()
    # Mode 0o666 lets the umask decide, as for any file the user writes (mkstemp gives 0o600).
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        # Name the file the caller asked for, not the temporary one it never heard of.
        raise OSError(exc.errno, exc.strerror, os.fspath(dest)) from None
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in response.iter_bytes(CHUNK_SIZE):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(partial)
        raise
    return partial, digest.hexdigest()
