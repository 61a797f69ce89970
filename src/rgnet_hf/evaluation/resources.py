"""What a run costs: the peak memory a block of code adds to this process, for the benchmarks."""

from __future__ import annotations

import os
import threading
import time


class PeakResidentMemory:
    """Peak growth of this process's resident set (bytes) while the block runs, sampled every millisecond."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = 0

    def _rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self.page

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self.start)
            time.sleep(0.001)

    def __enter__(self) -> PeakResidentMemory:
        self.start, self.peak = self._rss(), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss() - self.start)


__all__ = ["PeakResidentMemory"]
