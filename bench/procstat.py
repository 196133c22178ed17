"""Process and machine resource readings from /proc (Linux only).

* CPU seconds of a process: utime + stime of /proc/<pid>/stat, which for a
  thread-group leader sums every thread of the process (gRPC's threads too).
* Peak RSS: VmHWM of /proc/<pid>/status. Writing "5" to /proc/<pid>/clear_refs
  resets it to the current RSS, so each phase can report its own peak.
* Machine CPU: busy jiffies of the first line of /proc/stat, so the share of
  the machine used by processes that are not ours can be estimated.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def cpu_seconds(pid: int, *, thread: int | None = None) -> float | None:
    """utime + stime of the whole process (or of one thread), in seconds; None if gone."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: split after its closing paren.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def status_kib(pid: int, key: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM, ...), in KiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb(pid: int) -> float | None:
    """Resident set size in MB (10^6 bytes, as the targets are written)."""
    kib = status_kib(pid, "VmRSS")
    return None if kib is None else kib * 1024 / 1e6


def hwm_mb(pid: int) -> float | None:
    """Peak resident set size (VmHWM) in MB."""
    kib = status_kib(pid, "VmHWM")
    return None if kib is None else kib * 1024 / 1e6


def reset_hwm(pid: int) -> bool:
    """Reset the peak RSS (VmHWM) to the current RSS; False if not permitted."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
        return True
    return False


@dataclass(frozen=True, slots=True)
class MachineCpu:
    busy_s: float
    total_s: float


def machine_cpu() -> MachineCpu:
    """Busy and total CPU seconds of the whole machine since boot (all cores)."""
    with open("/proc/stat") as f:
        first = f.readline().split()
    values = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    total = sum(values)
    return MachineCpu(busy_s=(total - idle) / CLOCK_TICKS, total_s=total / CLOCK_TICKS)


def total_cpu_seconds(pids: list[int]) -> float:
    """Sum of cpu_seconds over the processes still alive."""
    return sum(v for v in (cpu_seconds(p) for p in pids) if v is not None)


def own_cpu_seconds() -> float:
    """This process's CPU seconds (all threads)."""
    times = os.times()
    return times.user + times.system
