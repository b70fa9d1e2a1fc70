"""The access log over HTTP: who downloaded, looked up, exported or certified what, when."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from core import schemas
from core.schemas import Id
from server import access
from server.api.deps import Auditor, Db

router = APIRouter(tags=["audit"])


@router.get("/audit/access")
def list_access(
    db: Db,
    _: Auditor,
    document: Annotated[Id | None, Query(description="Only reads of this document.")] = None,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> schemas.AccessLogPage:
    """Recorded reads of evidence, oldest first; each names the event sealing its batch.

    Reads are buffered and written in batches, so the newest ones appear within
    ``OFFICIUM_ACCESS_FLUSH_SECONDS``.
    """
    with db.reading() as session:
        return access.list_entries(session, document_id=document, after=after, limit=limit)
