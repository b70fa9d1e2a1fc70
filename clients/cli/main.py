"""The ``officium`` command: every command name of the public surface, in one place.

Commands that need the server or the agent (``officium serve`` ...) live with them and
plug in through the ``officium.commands`` entry-point group, so this package never
imports the server.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, entry_points, version
from typing import Annotated, Any

import typer

from clients.cli import admin, audit, documents, keys, reviews

__all__ = ["COMMAND_GROUP", "add_plugin_commands", "build_app", "main"]

COMMAND_GROUP = "officium.commands"


def _typer(help: str | None = None, **options: Any) -> typer.Typer:
    if help is not None:
        options["help"] = help
    # Locals in a traceback could include a token: never print them.
    return typer.Typer(
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
        **options,
    )


def _show_version(value: bool) -> None:
    if value:
        try:
            typer.echo(f"officium {version('officium')}")
        except PackageNotFoundError:
            typer.echo("officium (not installed)")
        raise typer.Exit()


def build_app() -> typer.Typer:
    """The ``officium`` application with every client command (no plug-ins)."""
    app = _typer(name="officium")

    @app.callback()
    def _root(
        show_version: Annotated[
            bool,
            typer.Option(
                "--version", callback=_show_version, is_eager=True, help="Print the version."
            ),
        ] = False,
    ) -> None:
        """Which version is final, who owns it, who approved it, and what happened to it."""

    app.command("list")(documents.list_documents)
    app.command("status")(documents.status)
    app.command("history")(documents.history)
    app.command("verify")(documents.verify)
    app.command("owner")(documents.owner)
    app.command("restore")(documents.restore)
    app.command("final")(reviews.final)
    app.command("submit", cls=reviews.PartiesInOrderGiven)(reviews.submit)
    app.command("approve")(reviews.approve)
    app.command("reject")(reviews.reject)
    app.command("withdraw")(reviews.withdraw)
    app.command("inbox")(reviews.inbox)
    app.command("ack")(reviews.acknowledge)
    app.command("acks")(reviews.acknowledgements)
    app.command("subscribe")(reviews.subscribe)

    audit_app = _typer("The audit trail: read it, check its hash chain, its keys, checkpoints.")
    audit_app.command("events")(audit.events)
    audit_app.command("check")(audit.check)
    audit_app.command("export")(audit.export)
    audit_app.command("access")(audit.access)
    audit_app.command("key")(audit.key)
    audit_app.command("checkpoint")(audit.checkpoint)
    audit_app.command("verify")(audit.verify)
    app.add_typer(audit_app, name="audit")

    key_app = _typer("Your own key, to sign your decisions with (--sign-with KEYFILE).")
    key_app.command("new")(keys.new_key)
    key_app.command("register")(keys.register_key)
    app.add_typer(key_app, name="key")

    admin_app = _typer("Offices, persons, memberships, tokens and folders.")
    admin_groups = {
        "office": (
            "Offices of the hierarchy.",
            {"add": admin.add_office, "list": admin.list_offices},
        ),
        "person": ("Persons.", {"add": admin.add_person, "list": admin.list_persons}),
        "member": (
            "Who acts for which office, with which role.",
            {"add": admin.add_member, "list": admin.list_members},
        ),
        "token": (
            "Access tokens for persons and for folders' agents.",
            {"create": admin.create_token, "list": admin.list_tokens, "revoke": admin.revoke_token},
        ),
        "folder": (
            "Watched shared folders.",
            {"add": admin.add_folder, "list": admin.list_folders},
        ),
        "key": ("The server's signing key.", {"rotate": audit.rotate_key}),
    }
    for group_name, (group_help, commands) in admin_groups.items():
        group = _typer(group_help)
        for command_name, command in commands.items():
            group.command(command_name)(command)
        admin_app.add_typer(group, name=group_name)
    app.add_typer(admin_app, name="admin")
    return app


def add_plugin_commands(app: typer.Typer) -> None:
    """Register the commands other installed parts offer through ``officium.commands``."""
    for entry_point in entry_points(group=COMMAND_GROUP):
        try:
            command = entry_point.load()
        except (ImportError, AttributeError) as exc:
            # One broken part must not take the whole command line down with it.
            print(f"officium: cannot load the '{entry_point.name}' command: {exc}", file=sys.stderr)
            continue
        app.command(name=entry_point.name)(command)


def main() -> None:
    """Run the ``officium`` command line."""
    app = build_app()
    add_plugin_commands(app)
    app(prog_name="officium")
