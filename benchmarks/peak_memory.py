"""A benchmark child process' own memory, from /proc/self/status.

``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is the wrong figure for a child started by
a benchmark: Linux keeps it across ``execve`` (getrusage(2)), and Python's subprocess
starts the child with vfork, so the child reports at least the *parent's* peak (a parent
that peaked at 327 MB started a 14 MB child that reported 327 MB). ``VmHWM`` in
/proc/self/status is the high-water mark of the process' own address space, which
``execve`` replaces.
"""


def status_mib(*fields: str) -> dict[str, float]:
    """``{field: MiB}`` of /proc/self/status lines such as ``VmHWM``, ``RssAnon``."""
    out = {}
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in fields:
                out[name] = int(value.split()[0]) / 1024
    missing = set(fields) - set(out)
    if missing:
        raise RuntimeError(f"/proc/self/status has no {sorted(missing)} (not Linux?)")
    return out


def own_peak_rss_mib() -> float:
    """This process' peak resident memory since its ``execve``, in MiB (VmHWM)."""
    return status_mib("VmHWM")["VmHWM"]
