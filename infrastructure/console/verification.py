"""The console's chain verification, run in the background: one at a time per process, its
progress read by the page while it runs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from infrastructure.audit.log import StoredLog, Verdict, verify


@dataclass(frozen=True)
class Progress:
    """What a page shows: positions checked out of the last, then the verdict (or the error)."""

    checked: int
    total: int
    verdict: Verdict | None = None
    failure: str | None = None

    @property
    def running(self) -> bool:
        return self.verdict is None and self.failure is None


class Verifications:
    """Starts `verify` in a thread unless one runs already; the latest one's progress."""

    def __init__(self, log: StoredLog,
                 check: Callable[..., Verdict] = verify) -> None:
        self.log = log
        self.check = check
        self._lock = threading.Lock()
        self._latest: Progress | None = None

    def start(self) -> Progress:
        """A new verification, or the running one (a second click joins it)."""
        with self._lock:
            if self._latest is not None and self._latest.running:
                return self._latest
            self._latest = Progress(0, 0)
        threading.Thread(target=self._run, name="gnlc-console-verify", daemon=True).start()
        return self._latest

    def latest(self) -> Progress | None:
        return self._latest

    def _report(self, checked: int, total: int) -> None:
        # One writer (the thread) replaces an immutable value: readers see a whole one.
        self._latest = Progress(checked, total)

    def _run(self) -> None:
        try:
            verdict = self.check(self.log, progress=self._report)
        except Exception as error:  # shown on the page; the console keeps serving
            current = self._latest or Progress(0, 0)
            self._latest = Progress(current.checked, current.total,
                                    failure=f"{type(error).__name__}: {error}")
            return
        current = self._latest or Progress(0, 0)
        self._latest = Progress(current.checked, current.total, verdict=verdict)
