"""``officium agent``: watch folders until Ctrl-C (plugged into the CLI by entry point)."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["agent", "run_agents"]


def run_agents(agents, stop: threading.Event) -> None:
    """Start every agent, wait for ``stop``, then stop them all."""
    started = []
    try:
        for folder_agent in agents:
            folder_agent.start()
            started.append(folder_agent)
        stop.wait()
    finally:
        for folder_agent in reversed(started):
            folder_agent.stop()


def stop_on_signals(stop: threading.Event) -> None:
    """Ctrl-C and SIGTERM set ``stop`` (the main thread then shuts down cleanly)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


def agent(
    folders: Annotated[list[Path], typer.Argument(help="Shared folders to watch.")],
    server: Annotated[
        str, typer.Option("--server", envvar="OFFICIUM_URL", help="Officium server URL.")
    ] = "http://127.0.0.1:8470",
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="OFFICIUM_TOKEN",
            help="An agent token, or an admin token to register the folder.",
        ),
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="Where git history and outbox live.")
    ] = None,
    poll: Annotated[
        bool, typer.Option("--poll", help="Poll instead of inotify (SMB/NFS mounts).")
    ] = False,
    name: Annotated[
        str | None, typer.Option("--name", help="Folder name on the server (one folder only).")
    ] = None,
) -> None:
    """Watch shared folders: every save becomes a git commit and a recorded version."""
    from agent.runner import FolderAgent
    from agent.settings import AgentSettings
    from clients.sdk import OfficiumClient
    from core.errors import OfficiumError

    if name and len(folders) > 1:
        raise typer.BadParameter("--name goes with a single folder")
    configure_logging()
    overrides = {"state_dir": state_dir} if state_dir else {}
    settings = AgentSettings(**overrides)
    stop = threading.Event()
    stop_on_signals(stop)
    with OfficiumClient(server, token) as client:
        try:
            run_agents(
                [
                    FolderAgent(folder, settings=settings, client=client, name=name, poll=poll)
                    for folder in folders
                ],
                stop,
            )
        except OfficiumError as exc:
            typer.echo(f"officium agent: {exc.detail}", err=True)
            raise typer.Exit(1) from None
