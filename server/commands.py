"""Server commands plugged into the ``officium`` CLI (entry-point group ``officium.commands``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["prepare", "serve", "up"]


def prepare(settings) -> str | None:
    """Migrate the database and bootstrap the first admin; return a newly made admin token."""
    from server import directory
    from server.db import Database, make_engine
    from server.migrate import upgrade

    database = Database(make_engine(settings))
    try:
        upgrade(database.engine)
        secret = settings.bootstrap_token.get_secret_value() if settings.bootstrap_token else None
        with database.writing() as session:
            return directory.bootstrap(session, token=secret)
    finally:
        database.dispose()


def serve(
    data: Annotated[
        Path | None, typer.Option("--data", help="Data directory (SQLite and content store).")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="TCP port to listen on.")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Address to listen on.")] = None,
) -> None:
    """Run the Officium server (SQLite under --data unless OFFICIUM_DATABASE_URL is set)."""
    import uvicorn
    from rich.console import Console

    from server.settings import Settings

    overrides = {
        key: value
        for key, value in {"data_dir": data, "port": port, "host": host}.items()
        if value is not None
    }
    settings = Settings(**overrides)
    console = Console(stderr=True)
    token = prepare(settings)
    url = f"http://{settings.host}:{settings.port}"
    console.print(f"Officium is serving at [bold]{url}[/bold] (API docs at {url}/docs)")
    if token is not None and settings.bootstrap_token is None:
        console.print(
            "The first admin's token, shown only now:\n"
            f"  export OFFICIUM_URL={url}\n  export OFFICIUM_TOKEN={token}"
        )
    elif token is not None:
        console.print("The first admin was created with OFFICIUM_BOOTSTRAP_TOKEN.")
    from server.app import create_app

    # One process per `serve`: several replicas are several processes (or containers)
    # behind the reverse proxy, sharing the database and the content store.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")


_DEMO_FILES = {
    "plans/budget-2027.csv": "item,amount\nstaff,410000\nrent,52000\n",
    "plans/annual-plan.md": "# Annual plan 2027\n\nDraft prepared by the Planning office.\n",
    "minutes/2026-11-30.txt": "Minutes of the coordination meeting, 30 November 2026.\n",
}


def up(
    folder: Annotated[Path, typer.Argument(help="The shared folder to watch.")],
    data: Annotated[
        Path, typer.Option("--data", help="Data directory (SQLite, content store, agent state).")
    ] = Path("officium-data"),
    port: Annotated[int, typer.Option("--port", help="TCP port to listen on.")] = 8470,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    poll: Annotated[bool, typer.Option("--poll", help="Poll the folder (network mounts).")] = False,
    demo: Annotated[
        bool, typer.Option("--demo", help="Put a few sample documents in an empty FOLDER.")
    ] = False,
) -> None:
    """The single-machine default: the server on SQLite under --data plus an agent on FOLDER."""
    import threading

    import uvicorn
    from rich.console import Console

    from agent.commands import configure_logging, run_agents, stop_on_signals
    from agent.runner import FolderAgent
    from agent.settings import AgentSettings
    from clients.sdk import OfficiumClient
    from core.errors import OfficiumError
    from server.app import create_app
    from server.settings import Settings

    console = Console(stderr=True)
    settings = Settings(data_dir=data, port=port, host=host)
    folder.mkdir(parents=True, exist_ok=True)
    if demo and not any(folder.iterdir()):
        for relative, text in _DEMO_FILES.items():
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
    token = _admin_token(settings, prepare(settings))
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host=host, port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="officium-server", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise typer.Exit(1)
        thread.join(0.05)
    url = f"http://{host}:{server.servers[0].sockets[0].getsockname()[1]}"
    configure_logging()
    stop = threading.Event()
    stop_on_signals(stop)
    client = OfficiumClient(url, token)
    folder_agent = FolderAgent(
        folder, settings=AgentSettings(state_dir=data / "agent"), client=client, poll=poll
    )
    console.print(
        f"Officium is up at [bold]{url}[/bold], watching {folder.resolve()}.\n"
        f"  export OFFICIUM_URL={url}\n  export OFFICIUM_TOKEN={token}\n"
        f"  officium list {folder_agent.name}\n"
        f"  officium status {folder_agent.name}:<path inside the folder>\n"
        "Ctrl-C stops both."
    )
    try:
        run_agents([folder_agent], stop)
    except OfficiumError as exc:
        console.print(f"officium up: {exc.detail}")
        raise typer.Exit(1) from None
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=10)


def _admin_token(settings, created: str | None) -> str:
    """The embedded default keeps its admin token in the data directory (mode 0600)."""
    saved = settings.data_dir / "admin-token"
    if created is not None:
        fd = os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(created + "\n")
        return created
    if settings.bootstrap_token is not None:
        return settings.bootstrap_token.get_secret_value()
    if saved.exists():
        return saved.read_text().strip()
    raise typer.BadParameter(
        f"{settings.data_dir} holds a register whose admin token is not saved there; "
        "set OFFICIUM_BOOTSTRAP_TOKEN to it, or use a new --data directory"
    )
