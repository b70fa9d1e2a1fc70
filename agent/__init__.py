"""The Officium agent: watches shared folders, keeps every save in git and reports it.

Built in the agent issue; it speaks to the server only through clients.sdk.
"""
