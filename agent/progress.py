"""Progress of long imports: a bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["ImportProgress"]

log = logging.getLogger("officium.agent")


class ImportProgress:
    """Counts files and bytes through one phase of a large import (staging, hashing)."""

    def __init__(self, phase: str, *, files: int, size: int, every: float = 5.0) -> None:
        self.phase = phase
        self.files = files
        self.size = size
        self.every = every
        self.done_files = 0
        self.done_bytes = 0
        self.started = time.monotonic()
        self._last_line = self.started
        self._bar = None
        if sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._bar = Progress(
                TextColumn(f"{phase}"),
                BarColumn(),
                MofNCompleteColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self._task = self._bar.add_task(phase, total=files)
            self._bar.start()
        else:
            log.info("%s %d files (%s)", phase, files, _human(size))

    def advance(self, files: int, size: int) -> None:
        """``files`` more files, of ``size`` bytes, are through this phase."""
        self.done_files += files
        self.done_bytes += size
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done_files)
            return
        now = time.monotonic()
        if now - self._last_line >= self.every:
            self._last_line = now
            rate = self.done_bytes / max(now - self.started, 1e-6)
            log.info(
                "%s: %d of %d files, %s of %s (%s/s)",
                self.phase,
                self.done_files,
                self.files,
                _human(self.done_bytes),
                _human(self.size),
                _human(rate),
            )

    def close(self) -> None:
        """End the phase with a summary line."""
        if self._bar is not None:
            self._bar.stop()
        elapsed = time.monotonic() - self.started
        log.info(
            "%s done: %d files, %s in %.1f s",
            self.phase,
            self.done_files,
            _human(self.done_bytes),
            elapsed,
        )


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
