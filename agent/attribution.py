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
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Attribution", "Attributor"]

log = logging.getLogger("officium.agent")
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# How long the owner named by a removed lock file still counts as the editor.
LOCK_MEMORY_SECONDS = 60.0


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
        # document -> (owner named by its lock file, when the lock went; None: still there)
        self._lock_owners: dict[str, tuple[str, float | None]] = {}
        self._lock_documents: dict[str, str] = {}  # lock file -> document
        self._guard = threading.Lock()

    def saw_lock(self, document: str, owner: str | None, *, lock: str | None = None) -> None:
        """An editor's lock file (at ``lock``) for ``document`` names ``owner``."""
        if owner:
            with self._guard:
                self._lock_owners[document] = (owner, None)
                if lock is not None:
                    self._lock_documents[lock] = document

    def lock_released(self, lock: str) -> None:
        """The lock file at ``lock`` is gone: the editing session ended.

        Its owner stays the hint for a while, as the editor's last save is usually
        recorded just after it removed its lock; then it is forgotten, so a later edit
        by someone else is not put on them.
        """
        now = time.monotonic()
        with self._guard:
            document = self._lock_documents.pop(lock, None)
            if document in self._lock_owners:
                owner, _ = self._lock_owners[document]
                self._lock_owners[document] = (owner, now)
            for name, (_owner, released) in list(self._lock_owners.items()):
                if released is not None and now - released > LOCK_MEMORY_SECONDS:
                    del self._lock_owners[name]

    def attribute(self, path: str, uid: int | None) -> Attribution:
        """The best attribution for a change to ``path`` written by ``uid``."""
        with self._guard:
            lock_owner, released = self._lock_owners.get(path, (None, None))
        if released is not None and time.monotonic() - released > LOCK_MEMORY_SECONDS:
            lock_owner = None
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
