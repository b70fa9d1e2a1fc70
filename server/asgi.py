"""ASGI entry point for process managers: ``uvicorn server.asgi:app`` (settings from OFFICIUM_*)."""

from server.app import create_app
from server.settings import Settings

app = create_app(Settings())
