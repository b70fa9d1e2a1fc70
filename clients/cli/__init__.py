"""The ``officium`` command line (Typer and rich) over the SDK."""
