"""OpenMP's wait policy chosen at start from the load (wdscale.core.threads), and the CLI's line saying so."""
import json
import os
import subprocess
import sys

import pytest

from wdscale.core import threads


@pytest.mark.parametrize("load, want", [(0.0, None), (0.3, None), (0.49, None), (0.5, "PASSIVE"), (1.0, "PASSIVE"),
                                        (1.9, "PASSIVE"), (6.5, "PASSIVE")])
def test_a_busy_machine_gets_passive_and_an_idle_one_the_default(load, want):
    policy, why = threads.choose_policy(load=load, cores=2, env={})
    assert policy == want
    assert f"load {load:.1f} on 2 cores" in why
    assert ("busy" in why) == (want == "PASSIVE") and ("idle" in why) == (want is None)


def test_the_users_own_policy_always_wins():
    for load in (0.0, 3.0):
        policy, why = threads.choose_policy(load=load, cores=2, env={"OMP_WAIT_POLICY": "active"})
        assert policy == "ACTIVE" and "set in the environment" in why


def test_a_policy_a_wdscale_parent_chose_is_chosen_again():
    parent = {"OMP_WAIT_POLICY": "PASSIVE", threads.AUTO: "1"}  # the parent saw a busy machine
    assert threads.choose_policy(load=0.1, cores=2, env=parent)[0] is None
    assert threads.choose_policy(load=1.2, cores=2, env=parent)[0] == "PASSIVE"


def test_an_unknown_load_keeps_openmps_default(monkeypatch):
    monkeypatch.setattr(threads, "measure", lambda: {"load": None, "load_avg": None, "cores": 4})
    policy, why = threads.choose_policy(env={})
    assert policy is None and "load unknown on 4 cores" in why


def test_load_now_sees_a_busy_process():
    if threads.load_now(0.05) is None:
        pytest.skip("no /proc/stat here")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.5)
        assert threads.load_now(0.3) >= 0.5  # one spinning process keeps (most of) a core busy
    finally:
        busy.kill()
        busy.wait()


def _child(code: str, env: dict) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", threads.AUTO)}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**base, **env})
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


APPLY = ("import json, os, sys; from wdscale.core import threads; c = threads.apply(load={load}); "
         "print(json.dumps({{'policy': c['policy'], 'env': os.environ.get('OMP_WAIT_POLICY'), "
         "'effective': c['effective'], 'torch': 'torch' in sys.modules}}))")


def test_apply_sets_the_variable_before_torch_loads():
    busy = _child(APPLY.format(load=1.5), {})
    assert busy == {"policy": "PASSIVE", "env": "PASSIVE", "effective": True, "torch": False}
    idle = _child(APPLY.format(load=0.0), {"OMP_WAIT_POLICY": "PASSIVE", threads.AUTO: "1"})  # a parent's choice
    assert idle == {"policy": None, "env": None, "effective": True, "torch": False}
    mine = _child(APPLY.format(load=0.0), {"OMP_WAIT_POLICY": "PASSIVE"})  # the user's own: kept
    assert mine["policy"] == "PASSIVE" and mine["env"] == "PASSIVE"
    late = _child("import torch\n" + APPLY.format(load=1.5), {})  # too late: nothing changes
    assert late["effective"] is False and late["env"] is None


def test_the_cli_chooses_before_anything_imports_torch():
    code = "import sys, json, wdscale, wdscale.cli; print(json.dumps('torch' in sys.modules))"
    assert _child(code, {}) is False


def test_the_clis_first_line_says_what_was_chosen_and_stdout_stays_json(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", threads.AUTO)}
    p = subprocess.run([sys.executable, "-m", "wdscale", "sweep", "--widths", "32", "--base-width", "32",
                        "--rules", "mup", "--lrs", "0.05", "--wds", "2", "--steps", "40", "--json",
                        "--out", str(tmp_path / "s")], capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    first = p.stderr.splitlines()[0]
    assert first.startswith("wdscale: ") and " threads, OMP wait policy " in first and " cores" in first, first
    assert [json.loads(x)["rule"] for x in p.stdout.splitlines()] == ["mup"]
    # a command that fails before training prints its one error line only
    bad = subprocess.run([sys.executable, "-m", "wdscale", "sweep", "--widths", "0"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert bad.stderr.startswith("wdscale sweep: error"), bad.stderr
