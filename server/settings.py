"""The server's settings: one object per process, read from ``OFFICIUM_*`` variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]

GIB = 1024**3


class Settings(BaseSettings):
    """Everything a server process needs to know; nothing else reads the environment."""

    model_config = SettingsConfigDict(env_prefix="OFFICIUM_", extra="ignore")

    data_dir: Path = Field(
        default=Path("officium-data"),
        description="Where the embedded SQLite database and the content store live.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; unset means SQLite at DATA_DIR/officium.db.",
    )
    content_dir: Path | None = Field(
        default=None,
        description="The content store (shared storage when several replicas run); "
        "unset means DATA_DIR/content.",
    )
    signing_key_file: Path | None = Field(
        default=None,
        description="The server's Ed25519 private key (JWK); unset means "
        "DATA_DIR/keys/server-ed25519.jwk, made on first start. Replicas share one file.",
    )
    auth_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        description="How long a resolved token is reused; other replicas see a revocation "
        "or a new membership after at most this long (0 turns the cache off).",
    )
    max_upload_bytes: int = Field(default=2 * GIB, ge=1)
    max_json_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    bootstrap_token: SecretStr | None = Field(
        default=None,
        description="On an empty database, the first admin's token (for scripted set-ups).",
    )
    sqlite_synchronous: str = Field(
        default="FULL",
        pattern="^(FULL|NORMAL|EXTRA)$",
        description="SQLite's synchronous pragma; FULL makes every commit durable.",
    )
    db_pool_size: int = Field(default=10, ge=1)
    webhook_retry_base_seconds: float = Field(
        default=1.0,
        gt=0,
        description="The first retry delay of a failed webhook delivery; it doubles per "
        "failure, up to five minutes.",
    )
    audit_origin: str | None = Field(
        default=None,
        max_length=200,
        pattern=r"^[^\s+]+$",
        description="The name of the audit log in its signed checkpoints (no spaces or '+'); "
        "unset means 'officium/' and the first 16 hex digits of the first event's hash.",
    )
    checkpoint_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How often a signed checkpoint of the audit trail is made, when there "
        "are new events (one is also made at shutdown).",
    )
    access_flush_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often buffered access-log entries (downloads, verify look-ups, "
        "exports, certificates) are written, as one batch sealed by one audit event; a crash "
        "loses at most this long's entries.",
    )
    pdf_font: Path | None = Field(
        default=None,
        description="A TrueType font for PDF certificates (e.g. DejaVuSans.ttf), so that any "
        "name prints as written; unset means the PDF core fonts, which print Western "
        "European letters only.",
    )
    pdf_font_bold: Path | None = Field(
        default=None, description="The bold face of OFFICIUM_PDF_FONT (default: the same file)."
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8470, ge=0, le=65535)

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'officium.db').resolve()}"

    @property
    def resolved_signing_key_file(self) -> Path:
        """Where the server's signing key lives."""
        return (self.signing_key_file or self.data_dir / "keys" / "server-ed25519.jwk").resolve()

    @property
    def resolved_content_dir(self) -> Path:
        """The content store's directory."""
        return (self.content_dir or self.data_dir / "content").resolve()
