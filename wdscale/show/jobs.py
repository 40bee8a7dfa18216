"""Background training jobs for the app: each job trains in a process of its own (``wdscale.show.child``) with
the CLI's engine and code path, on every core at a lower priority than the server; a thread-safe manager with a
global concurrency limit starts and watches them.

The training process talks through files in the job's folder under the data dir (its event file, how it ended)
and through the store, so a browser reload, a second tab or a new manager sees a running job.  Streamlit's API
must not be called from worker threads, so watcher threads only write to a lock-guarded ``Job``; the page polls
``JobManager.snapshot(job_id)`` from a fragment.  The manager is created once per server (``st.cache_resource``
in the page); this module never imports Streamlit.

Each job keeps its own record list: two sessions training at once never see each other's results, although
both end up in the shared store (which is what makes revisits instant).
"""
from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path

from . import child
from ..training.store import RunStore
from ..training.sweep import expand_grid, plan
from ..training.train import RunConfig, TrainOptions, preflight

MAX_RUNS = 400  # members in one study
MAX_COST = 2e15  # ~ matmul FLOPs of one study; far beyond what a CPU session should take on
MAX_WIDTH = 8192
LR_RANGE = (1e-6, 10.0)
WD_RANGE = (0.0, 100.0)


# ---------------------------------------------------------------------------------------------
# The demo study (wdscale/science/study.py): phase 1 here, phase 2 chosen from its records by ``demo_then``
# ---------------------------------------------------------------------------------------------
def demo_configs(steps: int | None = None) -> list[RunConfig]:
    """The Home page's one-click study, phase 1 (the proxy's eta x lam grid).  ``WDSCALE_DEMO_STEPS`` shrinks
    it (tests)."""
    from ..science.study import proxy_configs

    return proxy_configs(steps)


def demo_then(steps: int | None = None):
    """Phase 2 of the demo: the transfer grid around the proxy's optimum, from phase 1's records."""
    from ..science.study import proxy_optimum, transfer_configs

    def then(records: list[dict]) -> list[RunConfig]:
        best = proxy_optimum(records)
        return transfer_configs(best["eta0"], best["lam0"], steps)
    return then


def demo_member_steps(steps: int | None = None) -> int:
    """Member-steps the demo trains from an empty store (both phases; twins at m = 1 counted once)."""
    from ..science.study import DEMO, _steps

    d = DEMO
    n1 = len(d["proxy_lrs"]) * len(d["proxy_wds"]) * len(d["seeds"])
    n2 = len(d["lr_octaves"]) * len(d["seeds"]) * (1 + len(d["rules"]) * (len(d["widths"]) - 1))
    return (n1 + n2) * _steps(steps)


# ---------------------------------------------------------------------------------------------
# Input checks: one clear sentence per problem, before anything trains
# ---------------------------------------------------------------------------------------------
def study_cost(configs: list[RunConfig]) -> float:
    """Rough matmul FLOPs: 6 * batch * tokens * (hidden matrix entries) * steps, summed over runs."""
    cost = 0.0
    for c in configs:
        if c.model == "synthetic":
            depth = c.depth or 2
            cost += 6 * (c.batch_size or 128) * depth * c.width ** 2 * c.steps
        else:
            depth = c.depth or 4
            cost += 6 * (c.batch_size or 16) * c.seq_len * depth * 12 * c.width ** 2 * c.steps
    return cost


def check_study(model: str, widths, base_width, rules, lrs, wds, steps, seeds=(0,), **common) -> list[RunConfig]:
    """Expand and validate a study from the Train form; ValueError with a user-facing message on bad input."""
    widths = list(widths or [])
    if not widths:
        raise ValueError("the width list is empty: give at least one width, e.g. 64,128,256")
    if any(not isinstance(w, int) or w <= 0 for w in widths):
        raise ValueError(f"widths must be positive integers, got {widths}")
    if max(widths) > MAX_WIDTH:
        raise ValueError(f"width {max(widths)} is above the app's limit of {MAX_WIDTH}")
    if not isinstance(base_width, int) or base_width <= 0:
        raise ValueError(f"base width d₀ must be a positive integer, got {base_width}")
    if base_width > max(widths) or base_width < min(widths) / 64:
        raise ValueError(f"base width d₀={base_width} is not sensible for widths {widths}: the proxy width should be "
                         "at or below the widths you transfer to (and not 64x smaller than all of them)")
    if not rules:
        raise ValueError("choose at least one rule")
    if not lrs:
        raise ValueError("the learning-rate grid is empty")
    if not wds:
        raise ValueError("the weight-decay grid is empty")
    for v in lrs:
        if not (LR_RANGE[0] <= v <= LR_RANGE[1]):
            raise ValueError(f"learning rate η₀={v:g} is out of range [{LR_RANGE[0]:g}, {LR_RANGE[1]:g}]")
    for v in wds:
        if not (WD_RANGE[0] <= v <= WD_RANGE[1]):
            raise ValueError(f"weight decay λ₀={v:g} is out of range [{WD_RANGE[0]:g}, {WD_RANGE[1]:g}] "
                             "(torch weight_decay; the per-step decay is η·λ)")
    if not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    configs = expand_grid(model, widths, base_width, rules, lrs, wds, steps, seeds, **common)
    n = len({c.run_id for c in configs})
    if n > MAX_RUNS:
        raise ValueError(f"study too big: {n} runs (limit {MAX_RUNS}); use fewer widths, rules, or grid points")
    cost = study_cost(configs)
    if cost > MAX_COST:
        raise ValueError(f"study too big: ~{cost:.1e} FLOPs (limit {MAX_COST:.0e}); use fewer steps or smaller "
                         "widths, or run it with `wdscale sweep` on a GPU")
    return configs


# ---------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------
def run_info(configs: list[RunConfig]) -> dict:
    """run_id -> what the live panel labels a curve with."""
    return {c.run_id: {"rule": c.rule, "width": c.width, "lr": c.lr, "wd": c.wd, "seed": c.seed} for c in configs}


class Job:
    """A job's state as the page reads it (always under ``lock``), fed by the events of its training process."""

    def __init__(self, job_id: str, configs: list[RunConfig], label: str = "", then=None,
                 expected_member_steps: int | None = None):
        self.id = job_id
        self.then = then  # records of this phase -> configs of the next (the demo's two phases), or None
        self.expected_member_steps = expected_member_steps
        self.label = label
        self.key: str | None = None  # the page's job key (``_ui.job_panel``): a reload finds the job by it
        self.configs = configs
        self.lock = threading.Lock()
        self.cancel = threading.Event()
        self.status = "queued"  # queued, running, done, cancelled, error
        self.error: str | None = None
        self.created = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.records: list[dict] = []  # this job's records only
        self.cached = 0
        self.to_train = 0
        self.done_member_steps = 0
        self.total_member_steps = 0
        self.width: int | None = None
        self.step = 0
        self.steps = 0
        self.chunk = (0, 0)
        self.curves: dict[str, list] = {}  # run_id -> [[step, loss], ...] of the live chunk and earlier ones
        self.diverged: set[str] = set()
        # Per-chunk progress: under Ray several chunks train at once and their events interleave (tagged
        # with "chunk"); in-process, events belong to the chunk started last.
        self._chunks: dict = {}  # key -> {"run_ids", "n", "step"}
        self._current = None
        self._t_train: float | None = None
        self.info = run_info(configs)
        # A study job (``JobManager.submit_study``) trains ``study.run_study`` and keeps its summary in ``result``.
        # ``width_cost`` (seconds per member-step at each width, from wdscale.training.cost) makes progress and the
        # live ETA count predicted seconds, not member-steps: a step at d = 128 costs many at d = 32.
        self.result: dict | None = None
        self.width_cost: dict | None = None
        self.expected_seconds: float | None = None
        self.done_seconds = 0.0
        # its training process: the folder it talks through, its pid, and what it said of itself
        self.dir: Path | None = None
        self.pid: int | None = None
        self.process: dict = {}

    # -- fed from the job's event file -------------------------------------------------------------------
    def feed(self, e: dict, store: RunStore) -> None:
        """One line of the training process's event file (wdscale.show.child)."""
        t = e.get("type")
        if t == "record":  # the run is in the store: the page reads it from there
            rec = store.get(e["run_id"], status=None)
            if rec is not None:
                rec["cached"] = bool(e.get("cached"))
                self.on_record(rec)
        elif t == "configs":
            self.add_configs([RunConfig(**d) for d in e["configs"]])
        elif t == "process":
            with self.lock:
                self.process, self.pid = e, e.get("pid", self.pid)
        elif t:
            self.on_event(e)

    def on_event(self, e: dict) -> None:
        with self.lock:
            t = e["type"]
            if t == "plan":  # once per phase: counts add up over phases
                self.cached += e["cached"]
                self.to_train += e["to_train"]
                self.total_member_steps += e["to_train"] * (self.configs[0].steps if self.configs else 0)
                self._t_train = self._t_train or time.time()
            elif t == "chunk":
                self.chunk = (e["index"] + 1, e["of"])
            elif t == "start":
                key = e.get("chunk", ("local", len(self._chunks)))
                self._current = key
                self._chunks[key] = {"run_ids": e["run_ids"], "n": e["n_members"], "step": 0, "width": e["width"],
                                     "from": e.get("resumed_from") or 0}
                self.width, self.steps, self.step = e["width"], e["steps"], 0
                for rid in e["run_ids"]:
                    self.curves.setdefault(rid, [])
            elif t in ("step", "done", "cancelled"):
                ch = self._chunks.get(e.get("chunk", self._current))
                if ch is None:
                    return
                ch["step"] = max(ch["step"], e["step"])
                self.step = e["step"]
                self.done_member_steps = sum(c["n"] * c["step"] for c in self._chunks.values())
                if self.width_cost:  # only the steps this job trained (a resumed chunk starts past 0)
                    self.done_seconds = sum(c["n"] * max(0, c["step"] - c["from"]) * self._cost(c["width"])
                                            for c in self._chunks.values())
                if t == "step":
                    for rid, loss, alive in zip(ch["run_ids"], e["loss"], e["alive"]):
                        if alive:
                            self.curves.setdefault(rid, []).append([e["step"], loss])
                        else:
                            self.diverged.add(rid)

    def on_record(self, rec: dict) -> None:
        with self.lock:
            self.records.append(rec)

    def add_configs(self, configs: list[RunConfig]) -> None:
        """A study job's next phase: its runs get labels for the live curves before they train."""
        with self.lock:
            self.configs = self.configs + [c for c in configs if c.run_id not in self.info]
            self.info.update(run_info(configs))

    def _cost(self, width) -> float:
        wc = self.width_cost or {}
        return wc.get(width) or (max(wc.values()) if wc else 1.0)  # a width the plan did not foresee: the dearest

    # -- called from the page ------------------------------------------------------------------------
    def _curves(self, live_only: bool) -> dict:
        if not live_only:
            return {rid: list(c) for rid, c in self.curves.items()}
        ch = self._chunks.get(self._current) or {}
        out = {}
        for rid in ch.get("run_ids", []):
            c = self.curves.get(rid, [])
            k = max(1, len(c) // 60)
            out[rid] = c[::k] + (c[-1:] if c and (len(c) - 1) % k else [])
        return out

    def snapshot(self, records: bool = True, live_only: bool = False) -> dict:
        """A copy of the job's state for a page.  The live panel asks for ``records=False, live_only=True``: no
        deep copy of the records, and only the running ensemble's curves, thinned to <= 60 points each."""
        with self.lock:
            total = self.total_member_steps
            if self.then is not None and self.expected_member_steps:  # phase 2 not planned yet: use the estimate
                total = max(total, self.expected_member_steps)
            frac = (self.done_member_steps / total) if total else (1.0 if self.status == "done" else 0.0)
            eta = None
            if self.status == "running" and self._t_train and self.done_member_steps > 0:
                el = time.time() - self._t_train
                eta = el / self.done_member_steps * max(0, total - self.done_member_steps)
            if self.width_cost and self.expected_seconds:
                # the measured pace against the plan's predicted seconds (a study job's plan is its ETA)
                total_s = max(self.expected_seconds, self.done_seconds)
                frac = 1.0 if self.status == "done" else self.done_seconds / total_s
                if self.status == "running" and self._t_train and self.done_seconds > 0:
                    eta = (time.time() - self._t_train) / self.done_seconds * (total_s - self.done_seconds)
            return {
                "id": self.id, "label": self.label, "key": self.key, "status": self.status, "error": self.error,
                "n_runs": len(self.info), "cached": self.cached, "to_train": self.to_train,
                "fraction": min(1.0, frac), "eta_s": eta, "width": self.width, "step": self.step,
                "steps": self.steps, "chunk": self.chunk,
                # running, but no ensemble started yet: the training process loads torch and plans
                "starting": self.status == "running" and not self._chunks,
                "cancelling": self.status in ("queued", "running") and self.cancel.is_set(),
                "pid": self.pid, "process": dict(self.process),
                "elapsed_s": ((self.finished or time.time()) - self.started) if self.started else 0.0,
                "records": copy.deepcopy(self.records) if records else [],
                "curves": self._curves(live_only),
                "diverged": set(self.diverged), "info": dict(self.info),
                "result": copy.deepcopy(self.result) if records else None,
            }


def default_threads() -> int:
    """Torch threads of the app's training process: ``$WDSCALE_TORCH_THREADS``, else every core, like the CLI.

    The training runs in a process of its own at a lower priority (SCHED_BATCH, and nice 10 on an idle machine:
    ``child.choose_nice``): the server's reruns win the cores when they need them, so no core is kept idle for it."""
    env = os.environ.get("WDSCALE_TORCH_THREADS")
    if env:
        return max(1, int(env))
    return max(1, os.cpu_count() or 1)


def demo_eta(store=None, steps: int | None = None, device: str = "cpu", threads: int | None = None,
             cals: dict | None = None) -> dict:
    """ETA of the Home page's demo as ``run_study`` trains it (proxy grid, transfer at the two smallest widths,
    then the fitted rule with the widest width), for what ``store`` lacks: ``cost.phases_eta`` over
    ``demo.preset_state``; threads default to the app's (``default_threads``).  Its dict is what
    ``JobManager.submit_study(DEMO, steps, expected_seconds=eta["seconds"], width_cost=...)`` and the Train page's
    progress bar read."""
    from ..training import cost
    from ..science.study import DEMO, preset_state

    state = preset_state(DEMO, store, steps) if store is not None else None
    if state is None:
        from ..science.study import assumed_optimum, preset_phases

        phases = preset_phases(DEMO, *assumed_optimum(DEMO), steps=steps)
    else:
        phases = state["phases"]
    return cost.phases_eta(phases, store, device, threads or default_threads(), cals=cals)


# -- a job's folder: what its training process and the managers that watch it share ------------------------------
META, STATUS, PIDFILE, CANCEL = "job.json", "status.json", "child.pid", "cancel"
ACTIVE = ("queued", "running")
POLL_S = 0.2  # how often a job's event file is read while it trains


def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat): with the pid it names one process, not a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int | None, start: str | None = None) -> bool:
    """Is that process (pid, and start time where known) still there and not a zombie?"""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return True  # no /proc: the pid exists
    if fields[0] in ("Z", "X"):
        return False
    return start is None or fields[19] == start


def _oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed in this cgroup (cgroup v2 or v1), None if unknown."""
    for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        try:
            with open(path) as f:
                for line in f:
                    k, _, v = line.partition(" ")
                    if k == "oom_kill":
                        return int(v)
        except (OSError, ValueError):
            continue
    return None


def _busy_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs, from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    total = sum(vals[:8])
    return total - idle, total


def _own_jiffies() -> int | None:
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime, every thread of this process
    except (OSError, ValueError, IndexError):
        return None


def others_load(sample_s: float = 0.3) -> float | None:
    """Cores that processes other than this one (the server) keep busy now: /proc/stat over ``sample_s``, less
    this process's own CPU time (the server answering the click that started the job is no other work).  None
    where /proc is missing.  The training process chooses its wait policy and priority from it."""
    a, s0 = _busy_jiffies(), _own_jiffies()
    time.sleep(sample_s)
    b, s1 = _busy_jiffies(), _own_jiffies()
    if a is None or b is None or b[1] <= a[1]:
        return None
    ncpu = os.cpu_count() or 1
    elapsed = (b[1] - a[1]) / ncpu  # jiffies of wall time
    busy = (b[0] - a[0]) / elapsed
    mine = (s1 - s0) / elapsed if s0 is not None and s1 is not None else 0.0
    return max(0.0, busy - mine)


def exit_message(rc: int, oom: bool = False) -> str:
    """One line for a training process that ended without saying how (no child-N.json): killed or exited."""
    import signal

    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        if oom:
            return (f"out of memory: the system killed the training process ({name}); {child.OOM_HINT}")
        if -rc == signal.SIGKILL:
            return ("the training process was killed (SIGKILL) before it finished: the system's out-of-memory "
                    "killer does this when memory runs out, and so does kill -9")
        return f"the training process crashed ({name}) before it finished"
    return (f"the training process exited with code {rc} before it finished (something in it ended the process, "
            "e.g. os._exit in a model file)")


class _Tail:
    """Reads a growing JSON-lines file: each call returns the complete lines written since the last."""

    def __init__(self, path: Path):
        self.path, self.pos, self.rest = path, 0, b""

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return []
        self.pos += len(data)
        lines = (self.rest + data).split(b"\n")
        self.rest = lines.pop()
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


class JobManager:
    """Trains jobs in processes of their own (``python -m wdscale.show.child``), one job at a time per manager
    (``max_concurrent``); the page polls ``snapshot(job_id)``.

    Each job has a folder ``<data>/jobs/<id>/``: its task, its event file, the child's pid, how it ended.  The
    manager that started a job watches its process from a thread and feeds its events to the ``Job``; any other
    manager on the same data dir (a new one after Streamlit's cache was cleared, the page after a reload) finds
    the job from that folder (``get``, ``active``) and follows the same files.  Cancel signals the process
    (SIGTERM): it checkpoints, stores the interrupted ensemble as partial and exits; submitting the same study
    again resumes it.

    With env ``WDSCALE_RAY_ADDRESS`` set, a sweep's chunks go to that Ray cluster (``run_sweep(executor="ray")``,
    from the training process)."""

    def __init__(self, store_root: str, max_concurrent: int = 1, device: str = "cpu",
                 ray_address: str | None = None, threads: int | None = None, memory: int | None = None,
                 keep: int = 20):
        self.store_root = str(store_root)
        self.jobs_dir = Path(self.store_root) / "jobs"
        self.threads = threads if threads is not None else default_threads()
        self.device = device
        self.ray_address = ray_address if ray_address is not None else os.environ.get("WDSCALE_RAY_ADDRESS")
        self.memory = memory if memory is not None else child.parse_bytes(os.environ.get(child.MEMORY_ENV))
        self._sem = threading.Semaphore(max_concurrent)
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._prune(keep)

    def sweep_kwargs(self) -> dict:
        """run_sweep's executor arguments for a sweep job: Ray where an address is set, else its defaults."""
        return dict(executor="ray", address=self.ray_address) if self.ray_address else {}

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    # -- starting ---------------------------------------------------------------------------------------------
    def submit(self, configs: list[RunConfig], label: str = "", opts: TrainOptions | None = None, then=None,
               expected_member_steps: int | None = None, key: str | None = None) -> str:
        """Start (or queue) a job; returns its id.  Raises ValueError on configs that cannot run.

        ``then(records) -> configs``, when given, is a second phase trained after the first (the demo); ``key``
        is the page's name for the job (``active(key)`` finds it again after a reload)."""
        if not configs:
            raise ValueError("nothing to train")
        opts = opts or TrainOptions(device=self.device)
        preflight(configs, opts.device)
        job = Job(uuid.uuid4().hex[:12], configs, label, then, expected_member_steps)
        task = {"kind": "sweep", "configs": list(configs), "sweep_kw": self.sweep_kwargs()}
        return self._start(job, opts, task, key)

    def submit_study(self, spec: dict, steps: int | None = None, label: str = "", opts: TrainOptions | None = None,
                     expected_seconds: float | None = None, width_cost: dict | None = None,
                     key: str | None = None) -> str:
        """Start (or queue) a preset study (``wdscale.science.study.run_study``: the proxy grid, its optimum, then
        transfer phase by phase) as one job; returns its id, and the snapshot's ``result`` is its summary once done.

        Resumable like every sweep: a rerun after a cancel reads the stored runs and continues the interrupted
        ensemble from its checkpoint.  ``expected_seconds`` and ``width_cost`` (``cost.phases_eta``) drive the
        progress bar and the live ETA.  Never on Ray: run_study plans its phases in the training process."""
        from ..science.study import proxy_configs

        opts = opts or TrainOptions(device=self.device)
        configs = proxy_configs(steps, spec)
        preflight(configs, opts.device)
        job = Job(uuid.uuid4().hex[:12], configs, label or spec.get("name", "study"))
        job.expected_seconds, job.width_cost = expected_seconds, width_cost
        return self._start(job, opts, {"kind": "study", "spec": spec, "steps": steps}, key)

    def _start(self, job: Job, opts: TrainOptions, task: dict, key: str | None) -> str:
        task = {**task, "opts": opts, "store_root": self.store_root, "threads": self.threads,
                "memory": self.memory}
        try:
            blob = pickle.dumps(task)
        except Exception as e:  # noqa: BLE001 -- e.g. a callback that is a lambda
            raise ValueError(f"this job cannot be handed to a training process: {e}") from None
        job.key, job.dir = key, self.job_dir(job.id)
        job.dir.mkdir(parents=True)
        (job.dir / child.task_path("", 0).name).write_bytes(blob)
        child.write_json(job.dir / META, {
            "id": job.id, "key": key, "label": job.label, "kind": task["kind"], "created": job.created,
            "owner": os.getpid(), "owner_start": _start_time(os.getpid()), "expected_seconds": job.expected_seconds,
            "width_cost": {str(w): v for w, v in (job.width_cost or {}).items()} or None,
            "expected_member_steps": job.expected_member_steps, "threads": self.threads})
        log = child.EventLog(job.dir / child.EVENTS)  # the labels of the first phase's curves, for any reader
        log({"type": "configs", "configs": child.config_dicts(job.configs)})
        log.close()
        th = threading.Thread(target=self._work, args=(job,), daemon=True, name=f"wdscale-job-{job.id}")
        with self._lock:
            self._jobs[job.id] = job
            self._threads[job.id] = th
        th.start()
        return job.id

    # -- the watcher of a job this manager started ---------------------------------------------------------------
    def _work(self, job: Job) -> None:
        store = RunStore(self.store_root)
        tail = _Tail(job.dir / child.EVENTS)
        tail.read()  # the configs line written at submit: this Job has them already
        status, err = "error", None
        try:
            cached, _ = plan(job.configs, store)  # cached runs show at once, before waiting for the training slot
            for rec in cached:
                rec["cached"] = True
                job.on_record(rec)
            while not self._sem.acquire(timeout=POLL_S):
                if self._cancel_asked(job):
                    break
            else:
                try:
                    status, err = self._phases(job, store, tail)
                finally:
                    self._sem.release()
            if job.status == "queued":  # cancelled before it got the slot
                status, err = "cancelled", None
        except Exception as e:  # noqa: BLE001 -- the page shows it; the thread must not die silently
            status, err = "error", f"{type(e).__name__}: {e}"
            traceback.print_exc()
        self._finish(job, {"status": status, "error": err, "finished": time.time()}, write=True)

    def _phases(self, job: Job, store: RunStore, tail: _Tail) -> tuple[str, str | None]:
        if self._cancel_asked(job):
            return "cancelled", None
        with job.lock:
            job.status, job.started = "running", time.time()
            job.records = []  # run_sweep reports cached records again, in order
        status, err = self._run_child(job, 0, store, tail)
        if status == "done" and job.then is not None and not job.cancel.is_set():
            more = job.then(list(job.records))
            log = child.EventLog(job.dir / child.EVENTS)
            log({"type": "configs", "configs": child.config_dicts(more)})
            log.close()
            task = pickle.loads(child.task_path(job.dir, 0).read_bytes())
            child.task_path(job.dir, 1).write_bytes(pickle.dumps({**task, "kind": "sweep", "configs": more}))
            status, err = self._run_child(job, 1, store, tail)
        if status == "done" and job.cancel.is_set():
            status = "cancelled"
        return status, err

    def _run_child(self, job: Job, phase: int, store: RunStore, tail: _Tail) -> tuple[str, str | None]:
        """Run one phase's training process to its end, feeding its events to ``job``; (status, error)."""
        env = dict(os.environ)
        pkg_parent = str(Path(__file__).resolve().parents[2])  # where `wdscale` imports from, installed or not
        env["PYTHONPATH"] = os.pathsep.join([pkg_parent, *filter(None, [env.get("PYTHONPATH")])])
        env["WDSCALE_JOB_PARENT"] = str(os.getpid())
        load = others_load()
        if load is not None:
            env[child.LOAD_ENV] = f"{load:.3f}"
        oom_before = _oom_kills()
        with open(job.dir / child.LOG, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "wdscale.show.child", str(job.dir), str(phase)],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        child.write_json(job.dir / PIDFILE, {"pid": proc.pid, "start": _start_time(proc.pid), "phase": phase,
                                             "started": job.started})
        with job.lock:
            job.pid = proc.pid
        signalled = False
        while proc.poll() is None:
            for e in tail.read():
                job.feed(e, store)
            if self._cancel_asked(job) and not signalled:
                proc.send_signal(signal.SIGTERM)  # the child checkpoints and exits
                signalled = True
            time.sleep(POLL_S)
        for e in tail.read():
            job.feed(e, store)
        rc = proc.returncode
        end = child.read_json(child.end_path(job.dir, phase))
        if end is not None:
            if end["status"] != "error":
                self._load_result(job)
            return end["status"], end.get("error")
        if job.cancel.is_set() and rc in (-signal.SIGTERM, -signal.SIGINT):  # stopped before its handler was set
            return "cancelled", None
        oom_after = _oom_kills()
        oom = oom_before is not None and oom_after is not None and oom_after > oom_before
        return "error", exit_message(rc, oom=oom)

    def _cancel_asked(self, job: Job) -> bool:
        """Cancel set here, or asked through the job's folder by another manager."""
        if not job.cancel.is_set() and job.dir is not None and (job.dir / CANCEL).exists():
            job.cancel.set()
        return job.cancel.is_set()

    @staticmethod
    def _load_result(job: Job) -> None:
        try:
            result = pickle.loads((job.dir / child.RESULT).read_bytes())
        except (OSError, pickle.UnpicklingError, EOFError):
            return
        with job.lock:
            job.result = result

    def _finish(self, job: Job, end: dict, write: bool) -> None:
        if end["status"] in ("done", "cancelled"):
            self._load_result(job)
        with job.lock:
            job.status, job.error = end["status"], end.get("error")
            job.finished = end.get("finished") or time.time()
        if write and job.dir is not None:
            try:
                child.write_json(job.dir / STATUS, {**end, "started": job.started})
            except OSError:
                pass

    # -- finding a job from its folder ------------------------------------------------------------------------------
    def _adopt(self, job_id: str) -> Job | None:
        """A job this manager did not start, rebuilt from its folder; followed from a thread while it runs."""
        d = self.job_dir(job_id)
        meta = child.read_json(d / META)
        if not meta or meta.get("id") != job_id:
            return None
        job = Job(job_id, [], meta.get("label", ""), expected_member_steps=meta.get("expected_member_steps"))
        job.key, job.dir, job.created = meta.get("key"), d, meta.get("created", job.created)
        job.expected_seconds = meta.get("expected_seconds")
        job.width_cost = {int(w): v for w, v in (meta.get("width_cost") or {}).items()} or None
        if (d / CANCEL).exists():
            job.cancel.set()
        store = RunStore(self.store_root)
        tail = _Tail(d / child.EVENTS)
        ended = self._follow_once(job, meta, store, tail)
        th = None if ended else threading.Thread(target=self._follow, args=(job, meta, store, tail), daemon=True,
                                                 name=f"wdscale-follow-{job_id}")
        with self._lock:
            if job_id in self._jobs:  # another thread adopted it first
                return self._jobs[job_id]
            self._jobs[job_id] = job
            if th is not None:
                self._threads[job_id] = th
        if th is not None:
            th.start()
        return job

    def _follow_once(self, job: Job, meta: dict, store: RunStore, tail: _Tail) -> bool:
        """Read what the job's folder says now; True once the job has ended."""
        for e in tail.read():
            job.feed(e, store)
        end = child.read_json(job.dir / STATUS)
        pid = child.read_json(job.dir / PIDFILE)
        if end is None:
            child_alive = bool(pid) and _alive(pid["pid"], pid.get("start"))
            if not child_alive and not _alive(meta.get("owner"), meta.get("owner_start")):
                # nobody is left to write how it ended: the child's own word, else that the app stopped
                last = child.read_json(child.end_path(job.dir, pid["phase"])) if pid else None
                if last is not None:
                    end = {"status": last["status"], "error": last.get("error"), "finished": time.time()}
                elif pid is None:
                    end = {"status": "cancelled", "error": "the app stopped before this job started"}
                else:
                    end = {"status": "error", "error": "the app stopped while this job trained, and its training "
                           "process ended without saying how"}
                for e in tail.read():
                    job.feed(e, store)
                self._finish(job, end, write=True)
                return True
        with job.lock:
            if pid is not None:
                job.pid = job.pid or pid["pid"]
                job.started = job.started or pid.get("started")
                if job.status == "queued":
                    job.status = "running"
        if end is not None:
            for e in tail.read():
                job.feed(e, store)
            with job.lock:
                job.started = job.started or end.get("started")
            self._finish(job, end, write=False)
            return True
        return False

    def _follow(self, job: Job, meta: dict, store: RunStore, tail: _Tail) -> None:
        while not self._follow_once(job, meta, store, tail):
            time.sleep(POLL_S)

    def get(self, job_id: str | None) -> Job | None:
        """The job, from memory or, for one this manager did not start, from its folder."""
        if not job_id:
            return None
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None and all(c.isalnum() for c in job_id):
            job = self._adopt(job_id)
        return job

    def active(self, key: str) -> str | None:
        """The newest queued or running job submitted under ``key`` by any manager on this data dir, or None."""
        with self._lock:
            mine = [j for j in self._jobs.values() if j.key == key and j.status in ACTIVE]
        found = [(j.created, j.id) for j in mine]
        try:
            folders = list(self.jobs_dir.iterdir())
        except OSError:
            folders = []
        for d in folders:
            if (d / STATUS).exists() or d.name in self._jobs:
                continue
            meta = child.read_json(d / META)
            if not meta or meta.get("key") != key:
                continue
            job = self.get(d.name)
            if job is not None and job.status in ACTIVE:
                found.append((job.created, job.id))
        return max(found)[1] if found else None

    def _prune(self, keep: int) -> None:
        """Keep the newest ``keep`` ended jobs' folders."""
        try:
            ended = [d for d in self.jobs_dir.iterdir() if (d / STATUS).exists()]
        except OSError:
            return
        ended.sort(key=lambda d: (d / STATUS).stat().st_mtime)
        for d in ended[:max(0, len(ended) - keep)]:
            shutil.rmtree(d, ignore_errors=True)

    # -- the page's side ---------------------------------------------------------------------------------------
    def snapshot(self, job_id: str | None, records: bool = True, live_only: bool = False) -> dict | None:
        job = self.get(job_id)
        if job is None:
            return None
        snap = job.snapshot(records, live_only)
        if snap["status"] == "queued":
            snap["queue_position"] = self.queue_position(job_id)
        return snap

    def queue_position(self, job_id: str) -> int:
        with self._lock:
            queued = [j for j in self._jobs.values() if j.status == "queued"]
        queued.sort(key=lambda j: j.created)
        return next((i + 1 for i, j in enumerate(queued) if j.id == job_id), 0)

    def cancel(self, job_id: str | None) -> None:
        """Stop a job: a queued one never starts; a running one's process gets SIGTERM, checkpoints and exits."""
        job = self.get(job_id)
        if job is None:
            return
        job.cancel.set()
        if job.dir is not None:
            try:
                (job.dir / CANCEL).touch()  # the manager that started it may be another one
            except OSError:
                pass
        with self._lock:
            started_here = job.id in self._threads and self._threads[job.id].name.startswith("wdscale-job-")
        if not started_here and job.status == "running":
            pid = child.read_json(job.dir / PIDFILE) or {}
            if pid.get("pid") and _alive(pid["pid"], pid.get("start")):
                try:
                    os.kill(pid["pid"], signal.SIGTERM)
                except OSError:
                    pass

    def wait(self, job_id: str, timeout: float | None = None) -> bool:
        """Block until the job ends (tests, scripts); True if it ended."""
        with self._lock:
            th = self._threads.get(job_id)
        if th is None:
            return True
        th.join(timeout)
        return not th.is_alive()
