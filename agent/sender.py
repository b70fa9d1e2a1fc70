"""The outbox's sender: uploads content, then reports, in commit order, until acknowledged.

While the server is unreachable the recorder keeps committing and the sender retries
with exponential backoff. Replays are harmless: the server keys reports by (folder,
commit, path). A commit the server refuses for good (a 4xx other than authentication)
is set aside in the outbox's ``refused`` table with the reason, so it cannot block the
commits behind it.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from pydantic import ValidationError

from agent.gitrepo import GitRepo
from agent.outbox import Outbox, PendingCommit
from clients.sdk import OfficiumClient
from core.errors import Conflict, Forbidden, Invalid, NotFound, OfficiumError, TooLarge
from core.schemas import MAX_REPORTS_PER_BATCH, VersionReport

__all__ = ["Sender"]

log = logging.getLogger("officium.agent")
# Reports per request: within the server's limit, and few enough contents in memory.
_CHUNK = min(250, MAX_REPORTS_PER_BATCH)
_REFUSED = (Conflict, Invalid, NotFound, Forbidden, TooLarge)
_SMALL_CONTENT = 256 * 1024
_UPLOADERS = 4


class Sender(threading.Thread):
    """Drains one folder's outbox to the server."""

    def __init__(
        self,
        *,
        client: OfficiumClient,
        folder: str,
        outbox: Outbox,
        repo: GitRepo,
        stop: threading.Event,
        retry_max_seconds: float,
        tag_seconds: float = 10.0,
    ) -> None:
        super().__init__(name=f"officium-sender-{folder}", daemon=True)
        self.client = client
        self.folder = folder
        self.outbox = outbox
        self.repo = repo  # its own GitRepo: GitPython's object readers are not thread-safe
        self.stop_event = stop
        self.retry_max = retry_max_seconds
        self.tag_seconds = tag_seconds  # how often an idle sender looks for new approvals
        self.idle = threading.Event()
        self.sent = 0

    def run(self) -> None:
        delay = 0.25
        next_tagging = 0.0
        while not self.stop_event.is_set():
            batch = self.outbox.peek(MAX_REPORTS_PER_BATCH // 2)
            if not batch:
                if time.monotonic() >= next_tagging:
                    next_tagging = time.monotonic() + self.tag_seconds
                    self._tag_approvals()
                self.idle.set()
                with self.outbox.changed:
                    self.outbox.changed.wait(timeout=0.5)
                continue
            self.idle.clear()
            try:
                self._send(batch)
                delay = 0.25
            except _REFUSED as exc:
                self._isolate(batch, exc)
            except OfficiumError as exc:
                log.warning(
                    "cannot report to the server (%s); %d commit(s) wait in the outbox, "
                    "retrying in %.1f s",
                    exc.detail,
                    self.outbox.pending_count(),
                    delay,
                )
                self.stop_event.wait(delay)
                delay = min(delay * 2, self.retry_max)
            except Exception:
                # Reading git's objects can fail too; the sender must outlive it.
                log.exception("sending failed; retrying in %.1f s", delay)
                self.stop_event.wait(delay)
                delay = min(delay * 2, self.retry_max)
            finally:
                self.repo.release()

    def _send(self, batch: list[PendingCommit]) -> None:
        """Upload and report a batch of commits, a bounded chunk at a time.

        A commit can hold more reports than one request may carry (a first import holds
        the whole folder): its reports go in chunks, each preceded by its contents, and
        the commit counts as sent after its last chunk. A crash in between resends some
        chunks, which the server answers as replays.
        """
        entries = [(pending.commit, report) for pending in batch for report in pending.reports]
        for start in range(0, len(entries), _CHUNK):
            chunk = entries[start : start + _CHUNK]
            contents = {r["sha256"]: r for _, r in chunk if r["sha256"]}
            self._upload(list(contents.values()))
            self.client.report(self.folder, [_wire(commit, r) for commit, r in chunk])
            self.sent += len(chunk)
        self.outbox.done([pending.commit for pending in batch])

    def _upload(self, contents: list[dict]) -> None:
        """Put every report's bytes on the server (before the reports that name them).

        Large contents are asked about first and streamed from git only if the server
        lacks them. Small ones are simply sent, several at a time: asking would cost as
        much as sending, and sending known bytes again changes nothing on the server.
        """
        small = []
        for report in contents:
            if report["size"] <= _SMALL_CONTENT:
                # Read here: the git object reader is not shared between threads.
                small.append((report["sha256"], b"".join(self.repo.blob_chunks(report["blob"]))))
            elif not self.client.has_content(report["sha256"]):
                self.client.upload_chunks(
                    report["sha256"], self.repo.blob_chunks(report["blob"]), size=report["size"]
                )
        if len(small) > 1:
            with ThreadPoolExecutor(_UPLOADERS, thread_name_prefix="officium-upload") as pool:
                for _stored in pool.map(lambda item: self.client.upload_content(*item), small):
                    pass
        elif small:
            self.client.upload_content(*small[0])

    def _tag_approvals(self) -> None:
        """Tag the commit of every newly approved version, so the share's history shows it."""
        after = int(self.outbox.get("tagged_review") or 0)
        try:
            while True:
                page = self.client.folder_approvals(self.folder, after=after)
                for approval in page.approvals:
                    self.repo.tag(
                        f"officium/approved/{approval.document_id}/v{approval.number}",
                        approval.commit,
                        message=(
                            f"approved: {approval.path} v{approval.number} "
                            f"(SHA-256 {approval.sha256}), review {approval.review_id}"
                        ),
                    )
                    after = approval.review_id
                    self.outbox.put("tagged_review", str(after))
                if page.next is None:
                    return
        except OfficiumError as exc:
            log.warning("cannot fetch approvals to tag (%s); will try again", exc.detail)
        except Exception:
            log.exception("tagging approved commits failed; will try again")

    def _isolate(self, batch: list[PendingCommit], exc: OfficiumError) -> None:
        if len(batch) > 1:
            # Find the one commit at fault; send the ones before it.
            for pending in batch:
                try:
                    self._send([pending])
                except _REFUSED as single:
                    self._refuse(pending, single)
                    return
            return
        self._refuse(batch[0], exc)

    def _refuse(self, pending: PendingCommit, exc: OfficiumError) -> None:
        log.error(
            "the server refused the reports of commit %s for good (%s); set aside in the "
            "outbox's 'refused' table",
            pending.commit[:12],
            exc.detail,
        )
        self.outbox.refuse(pending, exc.detail)


def _wire(commit: str, report: dict) -> VersionReport:
    try:
        return _build(commit, report)
    except ValidationError as exc:
        raise Invalid(
            f"report for {report['path']!r} is not valid: {exc.errors()[0]['msg']}"
        ) from exc


def _build(commit: str, report: dict) -> VersionReport:
    return VersionReport(
        path=report["path"],
        kind=report["kind"],
        from_path=report["from_path"],
        sha256=report["sha256"],
        size=report["size"],
        commit=commit,
        author=report["author"],
        author_hint=(report["author_hint"] or "")[:2000] or None,
        observed_at=report["observed_at"],
    )
