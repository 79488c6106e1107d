"""Progress of a long embed in the worker's log: texts done / total, texts/s and ETA, every `interval_s`.

One `EmbedProgress` per loaded model (per process): `begin()` before each encode call, `add(n)` after it; a
daemon thread logs a line every interval while a call is in flight or the count moved, so a line comes at
least that often even while one long call runs, and none once the stage is over. On remote runners the
same counts are Beam counters (negforge_embed/<kind>_texts_done).
"""

from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 30.0
IDLE_INTERVALS = 4  # the reporter stops after this many quiet intervals (no call in flight, no new text)


def progress_line(label: str, done: int, total: int | None, seconds: float) -> str:
    """'embedding docs: 3,072 / 5,183 texts (59%), 41.2 texts/s, ETA 51 s' (total None: no % nor ETA)."""
    rate = done / seconds if seconds > 0 else 0.0
    if not total:
        return f"embedding {label}: {done:,} texts, {rate:.1f} texts/s"
    left = max(total - done, 0)
    eta = f"ETA {left / rate:,.0f} s" if rate > 0 else "ETA unknown"
    return f"embedding {label}: {done:,} / {total:,} texts ({100 * done / total:.0f}%), {rate:.1f} texts/s, {eta}"


class EmbedProgress:
    """Thread-safe texts-done counter with a reporter thread (started on the first `add`)."""

    def __init__(self, label: str, total: int | None, interval_s: float = PROGRESS_INTERVAL_S, log=None):
        self._label = label
        self._total = total
        self._interval_s = interval_s
        self._log = log or logger.info
        self._lock = threading.Lock()
        self._done = 0
        self._in_flight = 0
        self._started: float | None = None
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def done(self) -> int:
        return self._done

    def begin(self) -> None:
        """An encode call starts: start the clock (first call) and the reporter (if it is not running)."""
        with self._lock:
            self._in_flight += 1
        self.start()

    def start(self) -> None:
        """Start the clock and the reporter (idempotent)."""
        with self._lock:
            if self._started is None:
                self._started = time.perf_counter()
            if self._thread is None and not self._finished.is_set():
                self._thread = threading.Thread(target=self._report, name=f"embed-progress-{self._label}",
                                                daemon=True)
                self._thread.start()

    def add(self, count: int) -> None:
        self.start()
        with self._lock:
            self._done += count
            self._in_flight = max(0, self._in_flight - 1)
            finished = self._total is not None and self._done >= self._total
        if finished and not self._finished.is_set():
            self._finished.set()
            self._log(self.line())

    def line(self) -> str:
        return progress_line(self._label, self._done, self._total, time.perf_counter() - (self._started or 0.0))

    def _report(self) -> None:
        last, quiet = -1, 0
        while not self._finished.wait(self._interval_s):
            with self._lock:
                done, busy = self._done, self._in_flight > 0
                quiet = 0 if busy or done != last else quiet + 1
                if quiet >= IDLE_INTERVALS:  # the stage is over for this process: stop until the next call
                    self._thread = None
                    return
            if quiet == 0:
                self._log(self.line())
            last = done

    def stop(self) -> None:
        self._finished.set()
