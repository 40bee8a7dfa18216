"""The CLI's one error boundary: every bad invocation is one line on stderr, exit 2 for bad input and 1 for the
environment, never a traceback, and nothing trains.  In-process (``cli.main``) so the table stays fast."""
import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wdscale import cli

SWEEP = ["sweep", "--widths", "64", "--base-width", "64", "--rules", "wd", "--lrs", "1e-2", "--wds", "0.1",
         "--steps", "10"]


@pytest.fixture
def no_training(monkeypatch):
    """Anything that reaches training fails the test (the boundary would turn it into rc 1, not 2)."""
    import wdscale.training.sweep as sweep

    def boom(*a, **k):
        raise AssertionError("trained")

    monkeypatch.setattr(sweep, "train_ensemble", boom)
    monkeypatch.setattr(sweep, "run_sweep", boom)


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Paths the table refers to: a file, a read-only folder, a garbage index, a valid empty store, a huge corpus."""
    from wdscale.training.store import RunStore

    afile = tmp_path / "afile"
    afile.write_text("x")
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if mode == os.W_OK and str(p).startswith(
        str(ro)) else real(p, mode, *a, **k))
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "index.sqlite").write_bytes(os.urandom(4096))
    empty = tmp_path / "empty"
    RunStore(empty)
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate(8 * 2**30)
    return {"FILE": afile, "RO": ro, "GARBAGE": garbage, "EMPTY": empty, "NOPE": tmp_path / "typo", "BIG": big}


BAD = [  # (argv, exit code); capitals name a path of the `places` fixture
    (SWEEP + ["--widths", "-64"], 2),
    (SWEEP + ["--widths", "abc"], 2),
    (SWEEP + ["--widths", ""], 2),
    (SWEEP + ["--lrs", "0"], 2),
    (SWEEP + ["--lrs", "nan"], 2),
    (SWEEP + ["--lrs", "1e-3,1e39"], 2),  # eta*lam >= 1
    (SWEEP + ["--lrs", "0.5", "--wds", "3"], 2),  # eta*lam = 1.5
    (SWEEP + ["--wds", "-0.1"], 2),
    (SWEEP + ["--steps", "0"], 2),
    (SWEEP + ["--steps", "10000000000"], 2),
    (SWEEP + ["--widths", "100000", "--base-width", "64"], 2),
    (SWEEP + ["--depth", "100000"], 2),
    (SWEEP + ["--widths", "8192", "--depth", "64"], 2),  # memory estimate
    (SWEEP + ["--batch-size", "0"], 2),
    (SWEEP + ["--rules", "nope"], 2),
    (SWEEP + ["--model", "nope"], 2),
    (SWEEP + ["--base-width", "4096", "--widths", "64,128"], 2),
    (SWEEP + ["-a", "1"], 2),  # -a without custom
    (SWEEP + ["--widths", "128", "--rules", "custom", "-b", "1e308"], 2),
    (SWEEP + ["--seed", "12345678901234567890123"], 2),
    (SWEEP + ["--seed", "-1"], 2),
    (SWEEP + ["--seeds", "0,99999999999"], 2),
    (SWEEP + ["--warmup", "2"], 2),
    (SWEEP + ["--spectra-every", "-5"], 2),
    (SWEEP + ["--device", "foo"], 2),
    (SWEEP + ["--device", "cuda:99"], 2),
    (SWEEP + ["--model", "transformer", "--corpus", "/nonexistent/c.txt"], 2),
    (SWEEP + ["--model", "transformer", "--corpus", "BIG"], 2),
    (SWEEP + ["--model", "transformer", "--head-dim", "3"], 2),
    (SWEEP + ["--out", "FILE"], 2),
    (SWEEP + ["--out", "FILE/sub"], 2),
    (SWEEP + ["--out", "RO"], 1),
    (SWEEP + ["--out", "GARBAGE"], 1),
    (SWEEP + ["--executor", "ray"], 1),  # ray hidden by the test
    (["runs", "--out", "NOPE"], 2),
    (["runs", "--out", "FILE"], 2),
    (["runs", "--out", "GARBAGE"], 1),
    (["runs", "--out", "GARBAGE", "--check"], 1),
    (["runs", "--out", "EMPTY", "--delete", "/some/dir/x"], 2),
    (["runs", "--out", "EMPTY", "--delete", "../../x"], 2),
    (["runs", "--out", "EMPTY", "--delete", "0123456789abcdef"], 2),
    (["runs", "--out", "NOPE", "--check"], 2),
    (["report", "NOPE"], 2),
    (["report", "GARBAGE"], 1),
    (["report", "EMPTY"], 2),
    (["rules", "--rule", "custom", "--width", "256", "--base-width", "64", "--lr", "1e-2", "--wd", "0.1", "-b",
      "1e308"], 2),
    (["rules", "--rule", "wd", "--width", "0", "--base-width", "64", "--lr", "1e-2", "--wd", "0.1"], 2),
    (["rules", "--rule", "wd"], 2),
    ([], 2),
    (["nope"], 2),
]


def _expand(argv, places):
    out = []
    for a in argv:
        head, _, tail = a.partition("/")
        out.append(str(places[head]) + ("/" + tail if tail else "") if head in places else a)
    return out


@pytest.mark.parametrize("argv,code", BAD, ids=[" ".join(a[len(SWEEP):] if a[:1] == ["sweep"] else a) or "(none)"
                                                for a, _ in BAD])
def test_bad_invocation_is_one_line_with_its_exit_code(argv, code, places, no_training, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    rc = cli.main(_expand(argv, places))
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == code, err
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in err, err
    assert out == ""


def test_table_is_big_enough():
    assert len(BAD) >= 30


def test_debug_shows_the_traceback(capsys, no_training):
    assert cli.main(SWEEP + ["--device", "foo", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("wdscale sweep: error: unknown device")


def test_an_unexpected_exception_is_one_line_too(capsys, monkeypatch, tmp_path):
    import wdscale.training.sweep as sweep

    def crash(*a, **k):
        raise KeyError("surprise")

    monkeypatch.setattr(sweep, "run_sweep", crash)
    assert cli.main(SWEEP + ["--steps", "20000", "--out", str(tmp_path / "s")]) == 1  # long enough: no warning
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "KeyError" in err and "--debug" in err and "Traceback" not in err


# -- fuzz: no input to `wdscale sweep` ever produces a traceback -------------------------------------------
PLAUSIBLE = st.sampled_from(["32", "64", "128", "1", "2", "10", "0.01", "0.1", "0.5", "1e-3", "3"])
NUM = st.one_of(PLAUSIBLE, PLAUSIBLE, st.integers(-10**25, 10**25).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                st.sampled_from(["", "x", "1e308", "-0", "0x10", "1_000", " 64", "64,", ",", "1e-400"]))
NUMS = st.lists(NUM, min_size=0, max_size=4).map(",".join)
OPTS = {
    "--model": st.sampled_from(["synthetic", "transformer", "nope", ""]),
    "--widths": NUMS, "--base-width": NUM, "--lrs": NUMS, "--wds": NUMS, "--steps": NUM, "--seed": NUM,
    "--seeds": NUMS, "-a": NUM, "-b": NUM, "--warmup": NUM, "--batch-size": NUM, "--depth": NUM,
    "--seq-len": NUM, "--head-dim": NUM, "--spectra-every": NUM,
    "--rules": st.lists(st.sampled_from(["sp", "mup", "indep", "wd", "custom", "x", ""]), max_size=3).map(",".join),
    "--schedule": st.sampled_from(["constant", "warmup", "cosine", "exp_warmup", "bad"]),
    "--device": st.sampled_from(["cpu", "auto", "cuda", "cuda:7", "mps", "foo", "meta", ""]),
    "--executor": st.sampled_from(["local", "ray", "dask"]),
    "--corpus": st.sampled_from(["stdlib", "/nonexistent", "/etc", ""]),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(picked=st.dictionaries(st.sampled_from(sorted(OPTS)), st.just(None), max_size=8).flatmap(
    lambda d: st.fixed_dictionaries({k: OPTS[k] for k in d})))
def test_fuzz_sweep_arguments_never_traceback(picked, tmp_path, monkeypatch, capsys):
    import wdscale.training.sweep as sweep

    monkeypatch.setattr(sweep, "run_sweep", lambda configs, *a, **k: [])  # validate everything, train nothing
    monkeypatch.setitem(sys.modules, "ray", None)
    argv = ["sweep", "--out", str(tmp_path / "fuzz")]
    for k, v in picked.items():
        argv += [f"{k}={v}"]
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err and rc in (0, 1, 2), (argv, err)
    if rc:
        errors = [ln for ln in err.splitlines() if "error" in ln]
        assert len(errors) == 1 and "rerun with --debug" not in err, (argv, err)  # an expected, worded error
