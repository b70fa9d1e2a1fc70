"""Officium's pure rules, shared by the server, the agent and the clients.

Nothing here imports a web framework, an ORM, git or an HTTP client: the offline
verifier, the server and the agent run the very same code.
"""
