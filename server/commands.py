"""Server commands plugged into the ``officium`` CLI (entry-point group ``officium.commands``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["prepare", "serve"]


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
    workers: Annotated[int, typer.Option("--workers", min=1, help="Server processes.")] = 1,
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
    if workers == 1:
        from server.app import create_app

        uvicorn.run(
            create_app(settings), host=settings.host, port=settings.port, log_level="warning"
        )
    else:
        # Several processes need an import string; they read the same OFFICIUM_* settings.
        import os

        os.environ.update({f"OFFICIUM_{k.upper()}": str(v) for k, v in overrides.items()})
        uvicorn.run(
            "server.asgi:app",
            host=settings.host,
            port=settings.port,
            workers=workers,
            log_level="warning",
        )
