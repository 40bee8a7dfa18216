"""Run a sweep's ensembles as Ray tasks: one task per chunk (one width's ensemble, or a slice of it).

``sweep.run_sweep(..., executor="ray")`` calls ``run_chunks_ray``, a generator that yields each finished
chunk's results (``train.train_ensemble``'s result dicts) as they arrive; the driver alone writes the store,
so a killed driver loses only the chunks still in flight and rerunning the same command resumes.

Ray is optional: it is imported here only.  Without an address a local Ray instance is started
(every core, no dashboard); with one (``auto``, ``HOST:6379``) the driver joins that cluster and ships the
``wdscale`` package to the workers (``runtime_env`` ``py_modules``) so they run the driver's code.

Knobs (environment variables, all optional):

* ``WDSCALE_RAY_CPUS_PER_TASK`` (default 1): CPUs a chunk reserves; torch uses that many threads.
* ``WDSCALE_RAY_MAX_MEMBERS``: slice chunks to at most this many members, so a few widths can fill a large
  cluster (members train independently, so slicing does not change results beyond float round-off).
* ``WDSCALE_RAY_SHIP_CODE=0``: do not ship the package when joining a cluster (it is installed there).
* ``WDSCALE_RAY_FAULT_ONCE=/path/marker`` — **test only**: the first task to reach a training step creates
  the marker file and kills its own worker (``os._exit``), so Ray's retry path can be tested.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time
from typing import Callable, Iterator

FAULT_ENV = "WDSCALE_RAY_FAULT_ONCE"
MAX_RETRIES = 3  # a task whose worker dies is rerun this many times (training is deterministic)
PUSH_EVERY = 0.25  # seconds between progress pushes from a task to the driver
CANCEL_GRACE = 30.0  # seconds running tasks get to return partial results after a cancel

_init_lock = threading.Lock()  # the app may start sweeps from several threads at once


def ensure_ray(address: str | None = None):
    """Connect to ``address`` or start a local instance, once per process; return the ``ray`` module.

    Ray's local processes are started with PR_SET_PDEATHSIG, which Linux ties to the *thread* that spawned
    them: a ``ray.init`` from a short-lived thread (Streamlit's script thread, a job worker) kills the whole
    local cluster when that thread ends.  Off the main thread we therefore call ``ray.init`` from a daemon
    thread that lives as long as the process.
    """
    import ray

    with _init_lock:
        if ray.is_initialized():
            return ray
        if threading.current_thread() is threading.main_thread():
            _init(ray, address)
            return ray
        box, ready = {}, threading.Event()

        def home():
            try:
                _init(ray, address)
            except BaseException as e:  # handed to the caller below
                box["error"] = e
            ready.set()
            if "error" not in box:
                threading.Event().wait()  # never returns: keeps Ray's processes alive

        threading.Thread(target=home, name="wdscale-ray-home", daemon=True).start()
        ready.wait()
        if "error" in box:
            raise box["error"]
        return ray


def _init(ray, address: str | None) -> None:
    kw = dict(include_dashboard=False)
    if address or os.environ.get("RAY_ADDRESS"):
        if os.environ.get("WDSCALE_RAY_SHIP_CODE", "1") != "0":
            import wdscale

            kw["runtime_env"] = {"py_modules": [os.path.dirname(os.path.abspath(wdscale.__file__))],
                                 "excludes": ["__pycache__"]}
        ray.init(address=address or None, **kw)
    else:  # a private instance on this machine, every core (Ray >= 2.59 guards it with a token by default)
        ray.init(num_cpus=os.cpu_count() or 1, **kw)


def _progress_actor(ray):
    @ray.remote(num_cpus=0)
    class Progress:
        """Mailbox between tasks and the driver: events go up, the cancel flag comes back down."""

        def __init__(self):
            self.events, self.cancelled = [], False

        def push(self, events: list) -> bool:
            self.events.extend(events)
            return self.cancelled

        def drain(self) -> list:
            out, self.events = self.events, []
            return out

        def cancel(self) -> None:
            self.cancelled = True

    # On the driver's node when it can be: progress should not die with some worker node.
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=True)
    return Progress.options(scheduling_strategy=here).remote()


def _maybe_die(marker: str) -> None:
    """Fault injection (tests): the first caller creates ``marker`` and kills its worker process."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # atomic: exactly one task dies
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os._exit(1)


def train_chunk(chunk, opts, index: int, progress, fault_marker: str | None, threads: int) -> list[dict]:
    """The body of one Ray task: train one ensemble, streaming its events to the ``progress`` actor."""
    import ray
    import torch

    from .train import train_ensemble

    torch.set_num_threads(max(1, threads))
    marker = fault_marker or os.environ.get(FAULT_ENV)
    stop = threading.Event()
    buf, last = [], [0.0]

    def on_event(e):
        if marker and e["type"] == "step":
            _maybe_die(marker)
        buf.append({**e, "chunk": index})
        now = time.monotonic()
        if e["type"] not in ("step", "spectra") or now - last[0] > PUSH_EVERY:
            # a blocking push: it also brings back the cancel flag and keeps the mailbox small
            try:
                if ray.get(progress.push.remote(list(buf))):
                    stop.set()
            except ray.exceptions.RayActorError:
                pass  # progress is best-effort; the results still come back
            buf.clear()
            last[0] = now

    return train_ensemble(chunk, opts, on_event, stop)


def _slices(chunks: list, max_members: int | None) -> list:
    if not max_members:
        return list(chunks)
    return [c[i:i + max_members] for c in chunks for i in range(0, len(c), max_members)]


def _cost(chunk) -> float:
    c = chunk[0]
    return len(chunk) * c.steps * c.width ** 2


def run_chunks_ray(chunks: list, opts, emit: Callable[[dict], None], cancel: threading.Event | None,
                   address: str | None = None) -> Iterator[list[dict]]:
    """Train ``chunks`` as Ray tasks; yield each chunk's result list as it finishes (any order).

    Events: the trainer's own (``start``/``spectra``/``step``/``done``), each tagged ``chunk`` (the task
    index; tasks run concurrently), a ``chunk`` event before a task's first ``start``, and
    ``{"type": "ray", "done", "running", "queued"}`` whenever those counts change.  A retried task's
    repeated events are dropped so progress never goes backwards.
    """
    from .train import TrainOptions

    opts = opts or TrainOptions()
    emit = emit or (lambda e: None)
    chunks = _slices(chunks, int(os.environ.get("WDSCALE_RAY_MAX_MEMBERS", "0") or 0))
    if not chunks:
        return
    ray = ensure_ray(address)
    from ray.exceptions import TaskCancelledError

    cpus = float(os.environ.get("WDSCALE_RAY_CPUS_PER_TASK", "1"))
    gpus = 0
    if opts.device.startswith("cuda") or (opts.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0):
        gpus = 1
        # Ray exposes the task's GPU as the only visible one, so a "cuda:N" index would not exist there
        opts = dataclasses.replace(opts, device="cuda")
    task = ray.remote(train_chunk).options(max_retries=MAX_RETRIES, num_cpus=cpus, num_gpus=gpus,
                                           name="wdscale.train_chunk")
    progress = _progress_actor(ray)
    fault = os.environ.get(FAULT_ENV)
    n = len(chunks)
    # Largest ensembles first: the sweep's wall time is bounded by its longest task.
    order = sorted(range(n), key=lambda k: _cost(chunks[k]), reverse=True)
    refs = {task.remote(chunks[k], opts, k, progress, fault, max(1, int(cpus))): k for k in order}
    pending = list(refs)
    started, finished = set(), set()
    seen: dict[tuple, int] = {}  # (chunk, event type) -> last step forwarded
    counts = None
    cancel_at = None

    def drain():
        try:
            return ray.get(progress.drain.remote())
        except ray.exceptions.RayActorError:
            return []  # progress is best-effort; the results still come back

    def forward(events):
        for e in events:
            k, typ = e["chunk"], e["type"]
            if typ == "start":
                if k in started:  # a retry restarts from step 0: keep the first attempt's start
                    continue
                started.add(k)
                c = chunks[k]
                emit({"type": "chunk", "index": k, "of": n, "width": c[0].width, "n_members": len(c)})
            elif "step" in e:
                if e["step"] <= seen.get((k, typ), -1):
                    continue
                seen[(k, typ)] = e["step"]
            emit(e)

    def report():
        nonlocal counts
        running = len(started - finished)
        now = (len(finished), running, n - len(finished) - running)
        if now != counts:
            counts = now
            emit({"type": "ray", "done": now[0], "running": now[1], "queued": now[2]})

    try:
        report()
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.2)
            forward(drain())
            for ref in ready:
                k = refs[ref]
                finished.add(k)
                try:
                    results = ray.get(ref)
                except TaskCancelledError:
                    continue
                forward(drain())  # its last events before its records
                report()
                # a task cancelled before its first step trained nothing: nothing to store
                out = [r for r in results if r["steps_done"] > 0]
                if out:
                    yield out
            report()
            if cancel is not None and cancel.is_set() and cancel_at is None:
                cancel_at = time.monotonic()
                progress.cancel.remote()  # running tasks stop at their next push and return partial results
                for ref in pending:
                    if refs[ref] not in started:
                        ray.cancel(ref)  # queued: never start
            if cancel_at is not None and time.monotonic() - cancel_at > CANCEL_GRACE:
                break
    finally:
        for ref in pending:  # driver error, generator closed early, or cancel grace over
            ray.cancel(ref, force=True)
        ray.kill(progress)
