"""Officium's clients: the typed Python SDK and the ``officium`` command line.

Clients speak to the server only over HTTP, with the wire models of :mod:`core.schemas`;
they never import the server.
"""
