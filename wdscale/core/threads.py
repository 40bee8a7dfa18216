"""OpenMP's wait policy, chosen at start from what the machine is doing (issue 31).

OpenMP threads that wait at a barrier either spin (libgomp's default: spin a while, then sleep) or sleep at once
(``OMP_WAIT_POLICY=PASSIVE``).  Neither is right everywhere:

* on an idle machine spinning is the fast choice: with PASSIVE both threads sleep and wake at every small
  parallel op, and the demo on 2 idle cores took 267 s instead of 94.5 s (2.8x; docs/bench.md, issue 31);
* beside a busy process a spinning thread waits for one that was swapped out, and 2 threads ran 3-6x slower
  than 1 (issue 24); there PASSIVE helps.

So the policy is chosen when wdscale starts, from the load it sees then: PASSIVE when other work keeps at least
``BUSY`` of a core busy, else OpenMP's default.  A user's own ``OMP_WAIT_POLICY`` always wins.  libgomp reads the
variable once, when torch loads it: ``apply`` must run before ``import torch`` (the CLI's ``main`` does; so must a
child process that trains, e.g. the app's).  Nothing here imports torch.
"""
from __future__ import annotations

import os
import sys
import time

BUSY = 0.5  # cores kept busy by other work at which threads sleep while they wait (PASSIVE)
SAMPLE_S = 0.2  # how long /proc/stat is watched for the load now
AUTO = "WDSCALE_OMP_WAIT_POLICY_AUTO"  # set beside OMP_WAIT_POLICY when wdscale chose it: a child chooses again

_applied: dict | None = None  # apply()'s choice in this process
_announce = False  # the CLI asked for its line (printed once, when training starts)


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of every CPU from /proc/stat, or None where there is none (not Linux)."""
    try:
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    total = sum(vals[:8])  # guest time is already counted in user
    return total - idle, total


def load_now(sample_s: float = SAMPLE_S) -> float | None:
    """Cores kept busy by other processes right now: /proc/stat watched for ``sample_s`` while this process
    sleeps.  None where /proc/stat is missing."""
    a = _cpu_times()
    if a is None:
        return None
    time.sleep(sample_s)
    b = _cpu_times()
    if b is None or b[1] <= a[1]:
        return None
    return (b[0] - a[0]) / (b[1] - a[1]) * (os.cpu_count() or 1)


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def measure() -> dict:
    """What the machine is doing: ``load`` (cores other work keeps busy now, else the 1-minute load average: the
    load now is what counts, since a run that just ended still holds the average up for a minute, and a process
    that just started has not raised it yet), ``load_avg`` and ``cores``."""
    now, avg = load_now(), load_average()
    return {"load": now if now is not None else avg, "load_avg": avg, "cores": cores()}


def choose_policy(load: float | None = None, cores: int | None = None, env=None) -> tuple[str | None, str]:
    """(OMP_WAIT_POLICY to set, or None for OpenMP's default; the reason in words).

    ``load`` is the cores other work keeps busy (None: measured now), ``cores`` this process's cores, ``env``
    the environment (default ``os.environ``).  A user's own OMP_WAIT_POLICY wins; one a wdscale parent chose
    (marked by ``AUTO``) is chosen again here."""
    env = os.environ if env is None else env
    own = env.get("OMP_WAIT_POLICY")
    if own and not env.get(AUTO):
        return own.upper(), f"OMP_WAIT_POLICY={own} is set in the environment"
    if load is None or cores is None:
        m = measure()
        load = m["load"] if load is None else load
        cores = m["cores"] if cores is None else cores
    if load is None:
        return None, f"load unknown on {cores} cores: OpenMP's default (spin, then sleep)"
    where = f"load {load:.1f} on {cores} cores"
    if load >= BUSY:
        return "PASSIVE", f"{where}: another process is busy, so waiting threads sleep"
    return None, f"{where}: idle, so waiting threads spin (OpenMP's default)"


def apply(announce: bool = False, load: float | None = None) -> dict:
    """Choose and set OMP_WAIT_POLICY for this process and its children, before torch loads; returns the choice
    {"policy", "reason", "load", "load_avg", "cores", "effective"}.  ``effective`` is False when torch was
    already imported (libgomp has read the variable: this process keeps its policy, and nothing is changed).
    Once per process; ``announce`` arms ``announce()`` (the CLI's line)."""
    global _applied, _announce
    if _applied is not None:
        return _applied
    if "torch" in sys.modules:  # e.g. main() called in a process that trains already: nothing to say or change
        pol = os.environ.get("OMP_WAIT_POLICY")
        _applied = {"policy": pol.upper() if pol else None, "reason": "torch was loaded before wdscale could choose",
                    "load": None, "load_avg": load_average(), "cores": cores(), "effective": False}
        return _applied
    _announce = announce
    m = measure() if load is None else {"load": load, "load_avg": load_average(), "cores": cores()}
    policy, reason = choose_policy(m["load"], m["cores"])
    user = os.environ.get("OMP_WAIT_POLICY") and not os.environ.get(AUTO)
    if not user:
        if policy is None:
            os.environ.pop("OMP_WAIT_POLICY", None)
            os.environ.pop(AUTO, None)
        else:
            os.environ["OMP_WAIT_POLICY"] = policy
            os.environ[AUTO] = "1"
    _applied = {"policy": policy, "reason": reason, **m, "effective": True}
    return _applied


def current() -> dict | None:
    """apply()'s choice in this process (None before it ran)."""
    return _applied


def line(threads: int | None = None) -> str:
    """The CLI's first line: threads, the wait policy and why."""
    c = _applied or {"policy": os.environ.get("OMP_WAIT_POLICY"), "reason": "not chosen by wdscale"}
    pol = c["policy"] or "default"
    head = f"{threads} threads, " if threads else ""
    return f"wdscale: {head}OMP wait policy {pol} ({c['reason']})"


def announce(threads: int | None = None) -> None:
    """Print ``line`` on stderr once, if the CLI asked for it (training is about to start)."""
    global _announce
    if not _announce:
        return
    _announce = False
    if threads is None and "torch" in sys.modules:
        threads = sys.modules["torch"].get_num_threads()
    print(line(threads), file=sys.stderr, flush=True)
