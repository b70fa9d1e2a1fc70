"""The agent's settings: one object per process, from options and ``OFFICIUM_*`` variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["AgentSettings"]


class AgentSettings(BaseSettings):
    """How the agent watches, settles, commits and reports."""

    model_config = SettingsConfigDict(env_prefix="OFFICIUM_AGENT_", extra="ignore")

    state_dir: Path = Field(
        default=Path(".officium-agent"),
        description="Where the agent keeps its git repositories, outbox and lock.",
    )
    settle_seconds: float = Field(
        default=0.08,
        gt=0,
        le=30,
        description="How long a path must stay quiet, closed after writing, to be recorded.",
    )
    delete_grace_seconds: float = Field(
        default=1.0,
        ge=0,
        le=300,
        description="How long a vanished path is given to come back (editors' saves move "
        "the original away for a moment) before its deletion is recorded.",
    )
    open_writer_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A file written to but never closed is recorded after this much quiet.",
    )
    rescan_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Full rescans of the folder, in case a watcher silently missed events.",
    )
    poll_seconds: float = Field(default=1.0, gt=0, description="Polling observer's interval.")
    max_file_bytes: int = Field(
        default=2 * 1024**3,
        ge=1,
        description="Files over this size are not committed or uploaded (logged instead).",
    )
    ignore: list[str] = Field(default_factory=list, description="More fnmatch patterns.")
    authors_file: Path | None = Field(
        default=None,
        description="A JSON object mapping OS user names or 'uid:N' to Officium usernames.",
    )
    retry_max_seconds: float = Field(default=30.0, gt=0)
    tag_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How often the agent asks for new approvals to tag their git commits.",
    )
