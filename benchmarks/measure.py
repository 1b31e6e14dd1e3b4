"""Wall time, CPU time and peak memory of one benchmark contender, in-process or a child program.

Peak RSS of a warm in-process call: Linux lets a process reset its own
high-water mark (``/proc/self/clear_refs``, "5"), so each call's peak is read
from ``VmHWM`` after it, not the process's lifetime maximum; ``baseline_mb``
is the resident memory the process already held (interpreter, libraries,
Prefect), so the call's own share is ``rss_mb - baseline_mb``. A child
program's peak is measured by GNU time (``/usr/bin/time``): a child forked
straight from a large Python process inherits its resident size in its
rusage, however small the program.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cputime import cpu_seconds

GNU_TIME = shutil.which("time", path="/usr/bin:/bin") or "/usr/bin/time"


@dataclass(frozen=True)
class Measured:
    wall: float  # seconds
    cpu: float  # CPU seconds of this process and its children (servers, programs)
    rss_mb: float  # peak resident memory of the process doing the work, MB
    baseline_mb: float = 0.0  # what that process held before the call (in-process calls)
    result: Any = None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def in_process(call: Callable[[], Any]) -> Measured:
    """``call()`` measured; its peak RSS is this process's during the call (needs Linux >= 4.0)."""
    if not _reset_peak_rss():
        raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs): Linux only")
    baseline = _status_mb("VmRSS")
    cpu, start = cpu_seconds(), time.perf_counter()
    result = call()
    wall = time.perf_counter() - start
    return Measured(wall, cpu_seconds() - cpu, _status_mb("VmHWM"), baseline, result)


def child(command: list[str], env: dict[str, str] | None = None) -> Measured:
    """A program run to completion: its wall time, CPU time and peak RSS (GNU time's)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        start = time.perf_counter()
        subprocess.run([GNU_TIME, "-f", "%M %U %S", "-o", report.name, *command], env=env, check=True)
        wall = time.perf_counter() - start
        rss_kb, user, system = report.read().split()[-3:]
    return Measured(wall, float(user) + float(system), int(rss_kb) / 1024)
