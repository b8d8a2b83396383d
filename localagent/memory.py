"""Peak memory of this process while something runs, sampled on a background thread.

Resident memory is split into anonymous (heap, KV cache, Python objects) and file-backed
(mmap'd model weights, shared libraries): the weights can be dropped and re-read by the OS,
the anonymous part cannot, so a user sizing a machine needs them apart.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class MemorySample:
    rss: int
    anon: int
    file: int  # file-backed and shared memory; 0 where the platform does not say


def _linux_sample(status: Path) -> MemorySample | None:
    """RssAnon / RssFile / RssShmem from /proc/PID/status: cheap (no page-table walk,
    unlike smaps), so sampling every 20 ms costs nothing measurable."""
    try:
        text = status.read_text()
    except OSError:
        return None
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "RssShmem"):
            fields[key] = int(value.split()[0]) * 1024
    if "RssAnon" not in fields:
        return None
    file = fields.get("RssFile", 0) + fields.get("RssShmem", 0)
    return MemorySample(rss=fields["RssAnon"] + file, anon=fields["RssAnon"], file=file)


def sample(pid: int | None = None) -> MemorySample:
    """One reading of a process's resident memory (this process by default)."""
    pid = pid or os.getpid()
    if sys.platform.startswith("linux"):
        got = _linux_sample(Path(f"/proc/{pid}/status"))
        if got is not None:
            return got
    info = psutil.Process(pid).memory_info()
    # macOS and Windows do not split resident memory by backing; count it all as anonymous
    return MemorySample(rss=info.rss, anon=info.rss, file=0)


class PeakMemory:
    """`with PeakMemory() as mem: ...` then mem.peak_rss, mem.peak_anon, mem.peak_file
    (bytes; each the highest value seen, not necessarily at the same instant)."""

    def __init__(self, interval_s: float = 0.02, pid: int | None = None):
        self.interval_s = interval_s
        self.pid = pid or os.getpid()
        self.peak_rss = 0
        self.peak_anon = 0
        self.peak_file = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _take(self) -> None:
        s = sample(self.pid)
        self.peak_rss = max(self.peak_rss, s.rss)
        self.peak_anon = max(self.peak_anon, s.anon)
        self.peak_file = max(self.peak_file, s.file)
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._take()

    def __enter__(self) -> PeakMemory:
        self._take()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="localagent-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._take()

    def as_dict(self) -> dict[str, int]:
        return {"peak_rss_bytes": self.peak_rss, "peak_anon_bytes": self.peak_anon, "peak_file_bytes": self.peak_file}
