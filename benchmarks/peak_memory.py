"""A benchmark child process' own peak memory.

``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is the wrong figure for a child started by
a benchmark: Linux keeps it across ``execve`` (getrusage(2)), and Python's subprocess
starts the child with vfork, so the child reports at least the *parent's* peak (a parent
that peaked at 327 MB started a 14 MB child that reported 327 MB). ``VmHWM`` in
/proc/self/status is the high-water mark of the process' own address space, which
``execve`` replaces.
"""


def own_peak_rss_mib() -> float:
    """This process' peak resident memory since its ``execve``, in MiB (VmHWM)."""
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmHWM line (not Linux?)")
