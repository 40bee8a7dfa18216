"""Background training jobs for the app: a thread-safe job manager with a global concurrency limit.

Streamlit's API must not be called from worker threads, so workers only write to a lock-guarded ``Job`` and
honour its cancel ``threading.Event``; the page polls ``JobManager.snapshot(job_id)`` from a fragment.  The
manager is created once per server (``st.cache_resource`` in the page); this module never imports Streamlit.

Each job keeps its own record list: two sessions training at once never see each other's results, although
both end up in the shared store (which is what makes revisits instant).
"""
from __future__ import annotations

import copy
import os
import threading
import time
import traceback
import uuid

from ..training.store import RunStore
from ..training.sweep import expand_grid, plan, run_sweep
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
    """The state one worker thread writes and the page reads (always under ``lock``)."""

    def __init__(self, job_id: str, configs: list[RunConfig], label: str = "", then=None,
                 expected_member_steps: int | None = None):
        self.id = job_id
        self.then = then  # records of this phase -> configs of the next (the demo's two phases), or None
        self.expected_member_steps = expected_member_steps
        self.label = label
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
        # A study job (``JobManager.submit_study``): ``runner(store, opts, job)`` trains it phase by phase and
        # returns its summary, kept in ``result``.  ``width_cost`` (seconds per member-step at each width, from
        # wdscale.training.cost) makes progress and the live ETA count predicted seconds, not member-steps: a step at
        # d = 128 costs many at d = 32.
        self.runner = None
        self.result: dict | None = None
        self.width_cost: dict | None = None
        self.expected_seconds: float | None = None
        self.done_seconds = 0.0

    # -- called from the worker ----------------------------------------------------------------------
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
                            self.curves[rid].append([e["step"], loss])
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
        deep copy of the records, and only the running ensemble's curves, thinned to <= 60 points each.  Every
        copy runs under the GIL that the training thread needs, so a heavy poll every 2 s slowed the demo in
        the browser several-fold."""
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
                "id": self.id, "label": self.label, "status": self.status, "error": self.error,
                "n_runs": len(self.info), "cached": self.cached, "to_train": self.to_train,
                "fraction": min(1.0, frac), "eta_s": eta, "width": self.width, "step": self.step,
                "steps": self.steps, "chunk": self.chunk,
                "elapsed_s": ((self.finished or time.time()) - self.started) if self.started else 0.0,
                "records": copy.deepcopy(self.records) if records else [],
                "curves": self._curves(live_only),
                "diverged": set(self.diverged), "info": dict(self.info),
                "result": copy.deepcopy(self.result) if records else None,
            }


def default_threads() -> int:
    """Torch threads for app training: ``$WDSCALE_TORCH_THREADS``, else one fewer than the cores (at least 1).

    One core stays for the server: a page rerun is a Python burst that must not queue behind training.  And on a
    shared machine a thread count equal to the cores is the slow choice: when another process takes a core,
    OpenMP's spinning barrier makes every parallel op wait for the descheduled thread (measured on this 2-core
    machine at load 5: a demo ensemble's step 3-6x slower at 2 threads than at 1; docs/bench.md, issue 24)."""
    env = os.environ.get("WDSCALE_TORCH_THREADS")
    if env:
        return max(1, int(env))
    return max(1, (os.cpu_count() or 1) - 1)


def demo_eta(store=None, steps: int | None = None, device: str = "cpu", threads: int | None = None,
             cals: dict | None = None) -> dict:
    """ETA of the Home page's demo as ``run_demo`` trains it (proxy grid, transfer at the two smallest widths,
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


def _lower_priority() -> None:
    """Raise this job thread's nice value by ``$WDSCALE_TRAIN_NICE`` (default 10; 0 keeps it): on Linux nice
    applies to the calling thread, and the OpenMP workers it starts inherit it, so the server's reruns win the
    cores.  Measured in chromium while the demo trained (load ~4, 2 cores; median rerun of 6 clicks): 2 threads
    0.93 / 0.92 s, 1 thread 0.67 / 0.87 s, 2 threads + nice 10 0.60 / 0.64 s, 1 thread + nice 10 0.41 s."""
    n = int(os.environ.get("WDSCALE_TRAIN_NICE", "10") or 0)
    if n > 0 and hasattr(os, "nice"):
        try:
            os.nice(n)
        except OSError:
            pass


def _study_runner(spec: dict, steps: int | None):
    def run(store, opts, job: Job) -> dict:
        from ..science.study import run_demo

        try:
            return run_demo(store, opts, on_event=job.on_event, cancel=job.cancel, on_record=job.on_record,
                            steps=steps, spec=spec, on_configs=job.add_configs)
        except Exception:
            if job.cancel.is_set():  # a cancel mid-phase can leave too little to summarize: that is no error
                return {"partial": True}
            raise
    return run


class JobManager:
    """Runs jobs in daemon threads; a global semaphore lets ``max_concurrent`` of them train at a time.

    With env ``WDSCALE_RAY_ADDRESS`` set, chunks go to that Ray cluster (``run_sweep(executor="ray")``)."""

    def __init__(self, store_root: str, max_concurrent: int = 1, device: str = "cpu",
                 ray_address: str | None = None, threads: int | None = None):
        self.store_root = str(store_root)
        self.threads = threads if threads is not None else default_threads()
        self.device = device
        self.ray_address = ray_address if ray_address is not None else os.environ.get("WDSCALE_RAY_ADDRESS")
        self._sem = threading.Semaphore(max_concurrent)
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._threads: dict[str, threading.Thread] = {}

    def submit(self, configs: list[RunConfig], label: str = "", opts: TrainOptions | None = None, then=None,
               expected_member_steps: int | None = None) -> str:
        """Start (or queue) a job; returns its id.  Raises ValueError on configs that cannot run.

        ``then(records) -> configs``, when given, is a second phase trained after the first (the demo)."""
        if not configs:
            raise ValueError("nothing to train")
        preflight(configs, opts.device if opts else self.device)
        return self._start(Job(uuid.uuid4().hex[:12], configs, label, then, expected_member_steps), opts)

    def submit_study(self, spec: dict, steps: int | None = None, label: str = "", opts: TrainOptions | None = None,
                     expected_seconds: float | None = None, width_cost: dict | None = None) -> str:
        """Start (or queue) a preset study (``wdscale.science.study.run_demo``: the proxy grid, its optimum, then transfer
        phase by phase) as one job; returns its id, and the snapshot's ``result`` is its summary once done.

        Resumable like every sweep: a rerun after a cancel reads the stored runs and continues the interrupted
        ensemble from its checkpoint.  ``expected_seconds`` and ``width_cost`` (``cost.phases_eta``) drive the
        progress bar and the live ETA.  Always in-process (no Ray): run_demo plans its phases here."""
        from ..science.study import proxy_configs

        configs = proxy_configs(steps, spec)
        preflight(configs, opts.device if opts else self.device)
        job = Job(uuid.uuid4().hex[:12], configs, label or spec.get("name", "study"))
        job.runner = _study_runner(spec, steps)
        job.expected_seconds, job.width_cost = expected_seconds, width_cost
        return self._start(job, opts)

    def _start(self, job: Job, opts: TrainOptions | None) -> str:
        opts = opts or TrainOptions(device=self.device)
        th = threading.Thread(target=self._work, args=(job, opts), daemon=True, name=f"wdscale-job-{job.id}")
        with self._lock:
            self._jobs[job.id] = job
            self._threads[job.id] = th
        th.start()
        return job.id

    def _work(self, job: Job, opts: TrainOptions) -> None:
        store = RunStore(self.store_root)
        # Cached runs show at once, before waiting for the training slot.
        cached, _ = plan(job.configs, store)
        for rec in cached:
            rec["cached"] = True
            job.on_record(rec)
        with self._sem:
            if job.cancel.is_set():
                with job.lock:
                    job.status, job.finished = "cancelled", time.time()
                return
            with job.lock:
                job.status, job.started = "running", time.time()
                job.records = []  # run_sweep reports cached records again, in order
            try:
                if self.threads:
                    import torch

                    torch.set_num_threads(self.threads)
                _lower_priority()
                kw = dict(executor="ray", address=self.ray_address) if self.ray_address else {}
                if job.runner is not None:
                    result = job.runner(store, opts, job)
                    with job.lock:
                        job.result = result
                    recs = []
                else:
                    recs = run_sweep(job.configs, store, opts, on_event=job.on_event, cancel=job.cancel,
                                     on_record=job.on_record, **kw)
                if job.then is not None and not job.cancel.is_set():
                    more = job.then(recs)
                    with job.lock:
                        job.configs = job.configs + more
                        job.info.update(run_info(more))
                    run_sweep(more, store, opts, on_event=job.on_event, cancel=job.cancel, on_record=job.on_record,
                              **kw)
                status, err = ("cancelled" if job.cancel.is_set() else "done"), None
            except Exception as e:  # the page shows it; the thread must not die silently
                status, err = "error", f"{type(e).__name__}: {e}"
                traceback.print_exc()
            with job.lock:
                job.status, job.error, job.finished = status, err, time.time()

    def get(self, job_id: str | None) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id) if job_id else None

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
        job = self.get(job_id)
        if job is not None:
            job.cancel.set()

    def wait(self, job_id: str, timeout: float | None = None) -> bool:
        """Block until the job's thread ends (tests, scripts); True if it ended."""
        with self._lock:
            th = self._threads.get(job_id)
        if th is None:
            return True
        th.join(timeout)
        return not th.is_alive()
