"""The app's training process: ``python -m wdscale.show.child JOB_DIR PHASE`` trains one job of the app's
``JobManager`` with the CLI's engine and code path (``science.study.run_study`` for a study,
``training.sweep.run_sweep`` for a sweep), on every core, at a lower priority than the Streamlit server.

Everything it says goes through files in the job's folder (``<data>/jobs/<id>/``), so a page reload, a second tab
or a new ``JobManager`` reads the same state:

* ``task-<phase>.pkl``  what to train (written by the manager);
* ``events.jsonl``      one JSON object a line: the trainer's events (``plan``, ``chunk``, ``start``, ``step``,
                        ``done``, ``cancelled``), ``{"type": "record", "run_id", "cached"}`` once a run is in the
                        store (the page reads the record from the store), ``{"type": "configs", "configs"}`` for
                        each phase of a study, and ``{"type": "process", ...}`` (pid, threads, nice, wait policy);
* ``child-<phase>.json`` how it ended: ``{"status": "done" | "cancelled" | "error", "error": one line}``;
* ``result.pkl``        a study's summary (``run_study``'s dict);
* ``child.log``         its stdout and stderr (a traceback, for whoever wants more than the one line).

SIGTERM and SIGINT set the trainer's cancel event: the running ensemble checkpoints and is stored as partial, the
process exits, and the same study submitted again resumes from the checkpoint.  The process also cancels itself
when the server that started it is gone (its parent changed).  This module never imports Streamlit.
"""
from __future__ import annotations

import json
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

EVENTS = "events.jsonl"
RESULT = "result.pkl"
LOG = "child.log"
NICE_ENV = "WDSCALE_TRAIN_NICE"  # how much lower the training process's priority is (default: ``choose_nice``)
MEMORY_ENV = "WDSCALE_TRAIN_MEMORY"  # optional cap on its address space, e.g. "8G" (RLIMIT_AS)
LOAD_ENV = "WDSCALE_JOB_LOAD"  # set by the manager: cores other processes than the server kept busy at the start
OOM_HINT = "use smaller widths, batch or sequence length, or fewer members (WDSCALE_TRAIN_MEMORY caps it)"


def task_path(job_dir, phase: int) -> Path:
    return Path(job_dir) / f"task-{phase}.pkl"


def end_path(job_dir, phase: int) -> Path:
    return Path(job_dir) / f"child-{phase}.json"


def write_json(path: Path, obj) -> None:
    """Atomically: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


class EventLog:
    """Appends one JSON line per event and flushes it (a reader only ever takes complete lines)."""

    def __init__(self, path):
        self._f = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def __call__(self, event: dict) -> None:
        line = json.dumps(event, default=_plain) + "\n"
        with self._lock:
            self._f.write(line)
            self._f.flush()

    def close(self) -> None:
        self._f.close()


def _plain(x):
    if hasattr(x, "item"):  # numpy / torch scalars
        return x.item()
    if isinstance(x, (set, tuple)):
        return list(x)
    return str(x)


def config_dicts(configs) -> list[dict]:
    import dataclasses

    return [dataclasses.asdict(c) for c in configs]


# -- what a task trains: the CLI's functions, fed by the event log --------------------------------------------------
def run_task(task: dict, cancel: threading.Event, emit) -> dict | None:
    """Train ``task`` into its store, sending events to ``emit``; a study returns its summary.

    ``task``: {"kind": "study", "spec", "steps"} or {"kind": "sweep", "configs"}, with "store_root", "opts"
    (TrainOptions) and "sweep_kw" (run_sweep's executor and address)."""
    from ..training.store import RunStore

    store = RunStore(task["store_root"])

    def on_record(rec: dict) -> None:
        emit({"type": "record", "run_id": rec["run_id"], "cached": bool(rec.get("cached")),
              "status": rec.get("status", "done")})

    if task["kind"] == "study":
        from ..science.study import run_study

        def on_configs(configs) -> None:
            emit({"type": "configs", "configs": config_dicts(configs)})

        try:
            return run_study(store, task["opts"], on_event=emit, cancel=cancel, on_record=on_record,
                             steps=task.get("steps"), spec=task["spec"], on_configs=on_configs)
        except Exception:
            if cancel.is_set():  # a cancel mid-phase can leave too little to summarize: that is no error
                return {"partial": True}
            raise
    from ..training.sweep import run_sweep

    run_sweep(task["configs"], store, task["opts"], on_event=emit, cancel=cancel, on_record=on_record,
              **task.get("sweep_kw", {}))
    return None


# -- the process -------------------------------------------------------------------------------------------------
IDLE_NICE = 10  # the training process's nice value on a machine that nothing else keeps busy


def choose_nice(load: float | None, busy: float = 0.5) -> tuple[int, str]:
    """(how much to raise the training process's nice value, why), from ``load``: the cores that processes other
    than the server keep busy (``jobs.others_load``, measured as the job starts).  ``$WDSCALE_TRAIN_NICE`` wins.

    Idle (or unknown): nice 10, so the server's reruns and the browser win the cores at once.  Busy: nice 0 (the
    process still runs as SCHED_BATCH, so it does not preempt the server when it wakes).  Beside other people's
    work a nice-10 process gets about a tenth of their share of a core: the demo's first ensemble then trained
    about 6x slower in the app than in ``wdscale demo`` (measured at load 8 on 2 cores, issue 31), while by CFS's
    weights the server gains little (6 busy processes, 2 training threads: 0.28 of a core instead of 0.22)."""
    env = os.environ.get(NICE_ENV)
    if env not in (None, ""):
        return int(env), f"${NICE_ENV}"
    if load is None or load < busy:
        return IDLE_NICE, "the machine is idle: the server and the browser come first"
    return 0, f"other work keeps {load:.1f} cores busy: a lower nice would only starve the training"


def lower_priority(n: int | None = None) -> int:
    """Raise this process's nice value by ``n`` (default: ``choose_nice`` with no load, i.e. 10) and make it
    SCHED_BATCH (Linux: a CPU-bound task that does not preempt others when it wakes), before any thread starts,
    so every thread torch starts later inherits both and the server's reruns win the cores; returns the nice
    value."""
    if n is None:
        n = choose_nice(None)[0]
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_BATCH"):
        try:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        except OSError:
            pass
    if n > 0 and hasattr(os, "nice"):
        try:
            return os.nice(n)
        except OSError:
            pass
    return os.nice(0) if hasattr(os, "nice") else 0


def parse_bytes(text: str | None) -> int | None:
    """'8G', '512M', '1.5g', '1000000' -> bytes; None for nothing."""
    if not text:
        return None
    t = text.strip().upper().rstrip("B")
    mult = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


def limit_memory(limit: int | None) -> None:
    """Cap this process's address space (RLIMIT_AS): past it an allocation fails in the process (MemoryError or
    torch's "can't allocate memory") instead of the machine swapping or the kernel killing something."""
    if not limit:
        return
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


def is_oom(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    name = type(e).__name__
    text = str(e).lower()
    return name == "OutOfMemoryError" or any(s in text for s in (
        "can't allocate memory", "cannot allocate memory", "not enough memory", "out of memory",
        "unable to allocate"))


def _where(e: BaseException, files) -> str:
    """' (file.py:LINE)' of the deepest frame in one of ``files`` (the job's model files), else ''."""
    want = {str(Path(f).resolve()) for f in files if f}
    found = None
    for fr in traceback.extract_tb(e.__traceback__):
        try:
            if str(Path(fr.filename).resolve()) in want:
                found = fr
        except OSError:
            continue
    return f" ({Path(found.filename).name}:{found.lineno})" if found else ""


def _first_line(e: BaseException) -> str:
    lines = [s for s in str(e).strip().splitlines() if s.strip()]
    return f"{type(e).__name__}: {lines[0].strip()}" if lines else type(e).__name__


def _oom_words(e: BaseException) -> str:
    """What failed to allocate, without torch's '[enforce fail at alloc_cpu.cpp:127] err == 0.' preamble."""
    import re

    m = re.search(r"tried to allocate (\d+) bytes", str(e))
    if m:
        n = int(m.group(1))
        size = f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MiB"
        return f"an allocation of {size} failed"
    return re.sub(r"\[enforce fail at [^\]]*\]\s*(err == 0\.\s*)?", "", _first_line(e))


def error_message(e: BaseException, task: dict) -> str:
    """One line for the page: what went wrong, and where in the user's model file."""
    files = [c.model_file for c in task.get("configs") or []]
    files += [(task.get("spec") or {}).get("common", {}).get("model_file")]
    where = _where(e, files)
    if is_oom(e):
        return f"out of memory in the training process: {_oom_words(e)}{where}; {OOM_HINT}"
    if isinstance(e, SystemExit):
        return f"the training code called sys.exit({e.code}){where}"
    return f"{_first_line(e)}{where}"


def _watch_parent(parent: int, cancel: threading.Event, why: dict) -> None:
    """Cancel (checkpoint, then exit) once the server that started this process is gone."""
    while not cancel.is_set():
        if os.getppid() != parent:
            why["parent_gone"] = True
            cancel.set()
            return
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job_dir, phase = Path(argv[0]), int(argv[1]) if len(argv) > 1 else 0
    cancel = threading.Event()
    why: dict = {}

    def on_signal(signum, frame):  # the trainer checks the event every step, checkpoints and stops
        why["signal"] = signal.Signals(signum).name
        cancel.set()

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, on_signal)
    parent = int(os.environ.get("WDSCALE_JOB_PARENT") or os.getppid())
    threading.Thread(target=_watch_parent, args=(parent, cancel, why), daemon=True, name="wdscale-parent").start()

    # Before anything imports torch (the task's pickle does): OpenMP's wait policy, as the CLI chooses it, and the
    # priority, both from the load the manager measured without the server's own CPU time.
    from ..core import threads as omp

    load = float(os.environ[LOAD_ENV]) if os.environ.get(LOAD_ENV) else None
    policy = omp.apply(load=load)
    nice_by, nice_why = choose_nice(load, omp.BUSY)
    nice = lower_priority(nice_by)
    emit = EventLog(job_dir / EVENTS)
    end = {"status": "error", "error": None, "phase": phase}
    task: dict = {}
    try:
        with open(task_path(job_dir, phase), "rb") as f:
            task = pickle.load(f)
        limit_memory(task.get("memory"))
        import torch

        if task.get("threads"):
            torch.set_num_threads(int(task["threads"]))
        batch = hasattr(os, "SCHED_BATCH") and os.sched_getscheduler(0) == os.SCHED_BATCH
        emit({"type": "process", "pid": os.getpid(), "threads": torch.get_num_threads(), "nice": nice, "batch": batch,
              "nice_reason": nice_why, "load": load, "policy": policy.get("policy") or "default",
              "policy_reason": policy.get("reason", "")})
        result = run_task(task, cancel, emit)
        if result is not None:
            tmp = job_dir / f".{RESULT}.tmp"
            with open(tmp, "wb") as f:
                pickle.dump(result, f)
            os.replace(tmp, job_dir / RESULT)
        end.update(status="cancelled" if cancel.is_set() else "done")
        if why.get("parent_gone"):
            end["error"] = "the app that started it stopped"
    except BaseException as e:  # noqa: BLE001 -- a model file's sys.exit too: one line for the page
        traceback.print_exc()
        if cancel.is_set() and not is_oom(e) and not isinstance(e, SystemExit):
            end.update(status="cancelled")
        else:
            end.update(error=error_message(e, task))
    end["signal"] = why.get("signal")
    write_json(end_path(job_dir, phase), end)
    emit.close()
    sys.stdout.flush()
    sys.stderr.flush()
    return 0 if end["status"] != "error" else 1


if __name__ == "__main__":
    sys.exit(main())
