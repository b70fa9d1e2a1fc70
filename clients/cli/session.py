"""What every client command shares: the connection options, the output mode, the errors.

A command is written as ``def status(session: Session, doc: str)``; :func:`client_command`
gives it the ``--server``, ``--token`` and ``--json`` options, opens the session, and is
the one place where an Officium error becomes ``officium: <detail>`` on standard error
and exit code 1.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import click
import httpx
import typer
from pydantic import BaseModel
from rich.console import Console, RenderableType

from clients.sdk import DEFAULT_URL, OfficiumClient
from core.errors import OfficiumError, Unauthenticated

__all__ = ["Session", "client_command", "fail"]

ServerOption = Annotated[
    str,
    typer.Option(
        "--server",
        envvar="OFFICIUM_URL",
        metavar="URL",
        help="The Officium server.",
        rich_help_panel="Connection",
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="OFFICIUM_TOKEN",
        metavar="T",
        help="Your access token.",
        show_default=False,
        rich_help_panel="Connection",
    ),
]
JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print machine-readable JSON on standard output."),
]


@dataclass
class Session:
    """One command's connection to the server and its two output streams."""

    client: OfficiumClient
    as_json: bool
    out: Console
    err: Console
    context: typer.Context | None = None  # what the parsed options alone do not tell

    def show(
        self, payload: BaseModel | dict[str, Any], render: Callable[[], RenderableType]
    ) -> None:
        """Print ``payload`` as JSON under ``--json``, otherwise what ``render`` builds."""
        if self.as_json:
            self.emit_json(payload)
        else:
            self.out.print(render())

    def emit_json(self, payload: BaseModel | dict[str, Any]) -> None:
        """Print ``payload`` as indented JSON on standard output."""
        data = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))

    def note(self, message: str) -> None:
        """A remark for the person at the terminal, on standard error."""
        self.err.print(message, markup=False, highlight=False)


def fail(message: str) -> typer.Exit:
    """Say why a command failed, on standard error, and give the exit to raise."""
    click.echo(f"officium: {message}", err=True)
    return typer.Exit(1)


@contextmanager
def _reporting_errors(*, token: str | None) -> Iterator[None]:
    """Turn any Officium or file-system error into a message and exit code 1."""
    try:
        yield
    except Unauthenticated as exc:
        hint = "" if token else " (no token given: pass --token or set OFFICIUM_TOKEN)"
        raise fail(exc.detail + hint) from None
    except OfficiumError as exc:
        raise fail(exc.detail) from None
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        raise fail(f"{exc.strerror or exc}{where}") from None


def _injected_http_client(ctx: click.Context) -> httpx.Client | None:
    """An ``httpx.Client`` handed in through the context ``obj`` (tests use the in-process app)."""
    obj = ctx.find_root().obj
    client = obj.get("http_client") if isinstance(obj, dict) else None
    return client if isinstance(client, httpx.Client) else None


def client_command(command: Callable[..., None]) -> Callable[..., None]:
    """Turn ``command(session, ...)`` into a Typer callback with the connection options."""

    @functools.wraps(command)
    def run(
        ctx: typer.Context, *args: Any, server: str, token: str | None, as_json: bool, **kwargs: Any
    ) -> None:
        with _reporting_errors(token=token):
            client = OfficiumClient(server, token, http_client=_injected_http_client(ctx))
            with client:
                session = Session(
                    client=client,
                    as_json=as_json,
                    out=Console(highlight=False),
                    err=Console(stderr=True, highlight=False),
                    context=ctx,
                )
                command(session, *args, **kwargs)

    # Typer reads a callback's options from its signature: present the command's own
    # parameters (minus the session) followed by the shared connection options.
    own = list(inspect.signature(command, eval_str=True).parameters.values())[1:]
    keyword = inspect.Parameter.KEYWORD_ONLY
    shared = [
        inspect.Parameter("server", keyword, annotation=ServerOption, default=DEFAULT_URL),
        inspect.Parameter("token", keyword, annotation=TokenOption, default=None),
        inspect.Parameter("as_json", keyword, annotation=JsonOption, default=False),
    ]
    context = inspect.Parameter(
        "ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context
    )
    own = [parameter.replace(kind=keyword) for parameter in own]
    run.__signature__ = inspect.Signature([context, *own, *shared])  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in (context, *own, *shared)}
    return run
