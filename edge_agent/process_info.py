"""This process's own figures, read from ``/proc``: when it was launched and its peak memory.

``peak_rss_mb()`` is ``VmHWM`` of ``/proc/self/status``, the process's own high-water mark.
``resource.getrusage(...).ru_maxrss`` is not used where ``/proc`` exists: Linux starts a forked
child's ``ru_maxrss`` at its parent's peak, so a child of a 311-MB parent reported 311 MB while its
own peak was 11 MB. ``launched_at()`` is the wall-clock time the kernel started this process
(``starttime`` of ``/proc/self/stat``, on the boot clock; 10-ms resolution), so a figure measured from it includes
the interpreter, the imports and the config, which pass before any of our code runs. Elsewhere
(no ``/proc``) both fall back to ``ru_maxrss`` and to the time this module was imported.
"""

from __future__ import annotations

import os
import time

_IMPORTED_AT = time.time()


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MB), its own ``VmHWM``."""
    kb = _status_kb("VmHWM")
    if kb is None:  # no /proc: the best there is
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / 1024, 1)


def rss_mb() -> float | None:
    """Resident memory now (MB), ``VmRSS``."""
    kb = _status_kb("VmRSS")
    return None if kb is None else round(kb / 1024, 1)


def launched_at() -> float:
    """Wall-clock time (epoch s) this process was started by the kernel."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            # the command name (field 2) may hold spaces and parentheses: split after its last ')'
            fields = f.read().rsplit(")", 1)[1].split()
        start_s = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, ticks since boot
        # the age on the boot clock, not btime (/proc/stat's btime is whole seconds)
        return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - start_s)
    except (OSError, ValueError, IndexError, AttributeError):
        return _IMPORTED_AT
