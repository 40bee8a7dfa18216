"""Mid-ensemble checkpoints: kill -9 during an ensemble, rerun, and get the numbers of an unbroken run."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wdscale.training.store import RunStore

ARGS = ["sweep", "--model", "synthetic", "--widths", "32", "--base-width", "32", "--rules", "mup,wd",
        "--lrs", "4e-3,8e-3", "--wds", "3", "--steps", "400", "--seeds", "0,1"]


def _sweep(out, extra_env=None, wait=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(extra_env or {})}
    p = subprocess.Popen([sys.executable, "-m", "wdscale", *ARGS, "--out", str(out)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if wait:
        assert p.wait(timeout=600) == 0, p.stderr.read()
    return p


def _by_id(out):
    return {r["run_id"]: r for r in RunStore(out).records()}


def test_kill_9_mid_ensemble_resumes_with_equal_numbers(tmp_path):
    ref = tmp_path / "ref"
    _sweep(ref)
    out = tmp_path / "killed"
    p = _sweep(out, {"WDSCALE_CHECKPOINT_SECONDS": "0"}, wait=False)  # checkpoint after every step
    ckpts = out / "checkpoints"
    t0 = time.time()
    import torch

    while time.time() - t0 < 300:  # wait until the ensemble is well into its run
        files = list(ckpts.glob("*.pt")) if ckpts.exists() else []
        if files:
            try:
                if torch.load(files[0], weights_only=True)["step"] >= 60:
                    break
            except Exception:
                pass  # caught between write and rename is impossible (atomic), but a read may race the next
        time.sleep(0.05)
    else:
        p.kill()
        pytest.fail("no checkpoint appeared")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not _by_id(out) if (out / "index.sqlite").exists() else True  # nothing stored: the unit was lost
    step_at_kill = torch.load(next(ckpts.glob("*.pt")), weights_only=True)["step"]
    assert 60 <= step_at_kill < 400
    _sweep(out)  # resumes from the checkpoint
    assert not list(ckpts.glob("*.pt"))  # deleted once the runs are stored
    a, b = _by_id(ref), _by_id(out)
    assert set(a) == set(b) and len(a) == 8
    for rid in a:
        assert b[rid]["final_loss"] == a[rid]["final_loss"], rid
        assert b[rid]["top_sv"] == a[rid]["top_sv"], rid
        assert b[rid]["evals"] == a[rid]["evals"], rid
        assert b[rid]["train_loss"] == a[rid]["train_loss"], rid
    wa, wb = RunStore(ref).weights(next(iter(a))), RunStore(out).weights(next(iter(a)))
    for n in wa:
        assert torch.equal(wa[n], wb[n]), n


def test_cancel_keeps_a_checkpoint_and_a_rerun_continues(tmp_path):
    """In-process: cancel at step 50, the partial runs and the checkpoint stay; a rerun resumes at step 50."""
    import threading

    from wdscale.training.sweep import expand_grid, run_sweep
    from wdscale.training.train import TrainOptions

    cs = expand_grid("synthetic", [32], 32, ["mup"], [8e-3], [3.0], 120, [0])
    store = RunStore(tmp_path)
    cancel = threading.Event()

    def stop(step, *a):
        if step + 1 == 50:
            cancel.set()

    recs = run_sweep(cs, store, TrainOptions(callbacks=[stop]), cancel=cancel)
    assert recs[0]["status"] == "partial" and recs[0]["steps_done"] == 50
    assert list((tmp_path / "checkpoints").glob("*.pt"))
    starts = []
    recs = run_sweep(cs, store, on_event=lambda e: e["type"] == "start" and starts.append(e["resumed_from"]))
    assert starts == [50] and recs[0]["status"] == "done" and recs[0]["steps_done"] == 120
    ref = run_sweep(cs, None)
    assert recs[0]["final_loss"] == ref[0]["final_loss"]
    assert not list((tmp_path / "checkpoints").glob("*.pt"))
