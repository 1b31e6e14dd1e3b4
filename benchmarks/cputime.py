"""CPU seconds of this process and every process under it, for the benchmarks.

The machines the benchmarks run on are shared: wall times swing with other
people's load, CPU seconds much less. This counts the benchmark process, its
finished children (gdaladdo, gdal_polygonize) and its live ones (Prefect's
embedded server, rasterflow's worker processes), so a contender's delta is
all the CPU its run cost, orchestration included.
"""

from __future__ import annotations

import psutil


def cpu_seconds() -> float:
    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in me.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.NoSuchProcess:  # ended between the listing and the reading
            pass
    return total
