"""Peak memory sampling on this very process: anonymous and file-backed memory apart."""

from __future__ import annotations

import mmap
import sys
import threading
import time
from pathlib import Path

import pytest

from localagent.memory import PeakMemory, sample
from localagent.units import format_bytes

MB = 1024 * 1024


def test_sample_sees_this_process() -> None:
    s = sample()
    assert s.rss > 0 and s.anon > 0


@pytest.mark.skipif(sys.platform != "linux", reason="rss is anon + file only where the kernel splits it (Linux)")
def test_sample_adds_up() -> None:
    s = sample()
    assert s.rss == s.anon + s.file


def test_anonymous_allocation_raises_the_anon_peak() -> None:
    before = sample()
    with PeakMemory(interval_s=0.005) as mem:
        # fresh pages from the kernel (an anonymous mmap), not the allocator's free pool: a
        # bytearray reused memory earlier tests in this process had freed, and anon did not grow
        block = mmap.mmap(-1, 64 * MB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        for offset in range(0, 64 * MB, 4096):  # touch every page
            block[offset] = 1
        time.sleep(0.05)
        block.close()
    assert mem.samples >= 3
    assert mem.peak_anon - before.anon >= 48 * MB
    assert mem.peak_rss >= mem.peak_anon


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the file-backed split is Linux-only")
def test_mapped_file_counts_as_file_backed(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\1" * (32 * MB))
    before = sample()
    with PeakMemory(interval_s=0.005) as mem, open(path, "rb") as f:
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            total = sum(mapped[i] for i in range(0, len(mapped), 4096))  # fault every page in
            time.sleep(0.05)
    assert total == 32 * MB // 4096
    assert mem.peak_file - before.file >= 24 * MB
    assert mem.peak_anon - before.anon < 16 * MB


def test_sampler_thread_stops() -> None:
    def samplers() -> int:
        return sum(t.name == "localagent-peak-memory" for t in threading.enumerate())

    with PeakMemory() as mem:
        assert samplers() == 1
    assert samplers() == 0
    assert set(mem.as_dict()) == {"peak_rss_bytes", "peak_anon_bytes", "peak_file_bytes"}


@pytest.mark.parametrize(
    "n, text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 * MB, "5.0 MiB"), (3 * 1024 * MB, "3.0 GiB")]
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text
