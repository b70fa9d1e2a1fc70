"""Who made a change, as far as a shared folder can tell.

In order of strength: the file owner's account mapped to a person (an authors file, or
the same username on the server); else the name an editor wrote into its lock/owner
file; else ``unknown`` with whatever raw hint there was. Neither proves authorship: an
owner uid says which account wrote the file (on a share written through a service
account it says nothing), and a lock file says who had the document open, as typed into
their editor's settings.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import re
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Attribution", "Attributor"]

log = logging.getLogger("officium.agent")
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Attribution:
    """A username the server may know (or None), and the raw evidence."""

    author: str | None
    hint: str | None

    @property
    def git_name(self) -> str:
        return self.author or "unknown"


class Attributor:
    """Maps file owners and lock-file names to authors; remembers recent lock owners."""

    def __init__(self, authors_file: Path | None = None) -> None:
        self.mapping: dict[str, str] = {}
        if authors_file is not None:
            self.mapping = {str(k): str(v) for k, v in json.loads(authors_file.read_text()).items()}
        # Accounts that write on everyone's behalf say nothing about the person.
        self.service_uids = {0, os.getuid()}
        self._lock_owners: dict[str, str] = {}
        self._guard = threading.Lock()

    def saw_lock(self, document: str, owner: str | None) -> None:
        """An editor's lock file for ``document`` names ``owner``."""
        if owner:
            with self._guard:
                self._lock_owners[document] = owner

    def attribute(self, path: str, uid: int | None) -> Attribution:
        """The best attribution for a change to ``path`` written by ``uid``."""
        with self._guard:
            lock_owner = self._lock_owners.get(path)
        hints = []
        if lock_owner:
            hints.append(f"lock file names '{lock_owner}'")
        if uid is not None:
            account = _account(uid)
            mapped = self.mapping.get(f"uid:{uid}") or (account and self.mapping.get(account))
            if mapped:
                return Attribution(mapped, "; ".join([f"file owner {account or uid}", *hints]))
            if uid not in self.service_uids and account:
                candidate = account.lower()
                if _USERNAME.match(candidate):
                    return Attribution(candidate, "; ".join([f"file owner {account}", *hints]))
                hints.insert(0, f"file owner {account}")
        if lock_owner and lock_owner in self.mapping:
            return Attribution(self.mapping[lock_owner], "; ".join(hints))
        return Attribution(None, "; ".join(hints) or None)


def _account(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None
