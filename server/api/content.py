"""The content store over HTTP: upload bytes under their SHA-256."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from core import schemas
from core.errors import Invalid, NotFound
from core.schemas import Sha256
from server.api.deps import Caller, Store, Uploader

router = APIRouter(tags=["content"])


@router.put(
    "/content/{sha256}",
    status_code=201,
    openapi_extra={"requestBody": {"content": {"application/octet-stream": {}}, "required": True}},
)
async def upload_content(
    sha256: Annotated[Sha256, Path()],
    request: Request,
    response: Response,
    store: Store,
    _: Uploader,
) -> schemas.ContentStored:
    """Store bytes whose SHA-256 is ``sha256``; sending known bytes again changes nothing."""
    declared = request.headers.get("content-length")
    try:
        declared_size = int(declared) if declared is not None else None
    except ValueError:
        raise Invalid("Content-Length is not a number") from None
    stored = await store.receive(sha256, request.stream(), declared_size=declared_size)
    if not stored.created:
        response.status_code = 200
    return stored


@router.head("/content/{sha256}")
def has_content(sha256: Annotated[Sha256, Path()], store: Store, _: Caller) -> Response:
    """200 when the store holds these bytes, 404 otherwise."""
    size = store.size_of(sha256)
    if size is None:
        raise NotFound(f"no content with SHA-256 {sha256} is stored")
    return Response(status_code=200, headers={"X-Officium-Size": str(size)})
