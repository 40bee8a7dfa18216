"""A damaged store heals instead of breaking, ids never escape the store, resources are bounded before anything is
allocated, an edited corpus is a new run, and no CLI input ends in a traceback (issue 16)."""
import json
import os
import shutil
import sqlite3
import time

import pytest

from wdscale import cli
from wdscale.core.errors import BadInput, DamagedRun, StoreCorrupt, StoreError
from wdscale.training.store import RunStore, rebuild_index
from wdscale.training.sweep import expand_grid, plan, run_sweep
from wdscale.training.train import RunConfig, preflight

# m = 2: mup and wd are different members here (at m = 1 they are twins, read from each other: tested below)
GRID = dict(model="synthetic", widths=[32], base_width=16, rules=["mup", "wd"], lrs=[1e-2, 2e-2], wds=[0.5], steps=12)


def grid():
    return expand_grid(**GRID)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny finished store (4 runs), trained once; each test damages its own copy."""
    root = tmp_path_factory.mktemp("trained") / "S"
    run_sweep(grid(), RunStore(root))
    return root


@pytest.fixture
def S(trained, tmp_path):
    dst = tmp_path / "S"
    shutil.copytree(trained, dst)
    return dst


def ids(root):
    return sorted(r["run_id"] for r in RunStore(root).records())


def run_cli(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return len(lines) == 1 and "error" in lines[0] and "Traceback" not in err


def read_only(monkeypatch, root):
    """Make ``root`` look like a read-only mount (the tests run as root, which chmod cannot stop)."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if mode == os.W_OK and str(p).startswith(
        str(root)) else real(p, mode, *a, **k))


# -- the index keeps size and sha256; artifacts carry their record; old stores migrate ----------------------
def test_index_keeps_size_and_sha256_and_files_carry_their_record(S):
    from safetensors import safe_open

    rid = ids(S)[0]
    with sqlite3.connect(S / "index.sqlite") as c:
        art = json.loads(c.execute("SELECT info FROM artifacts WHERE run_id=?", (rid,)).fetchone()[0])
    w = S / "weights" / f"{rid}.safetensors"
    assert art["weights"]["size"] == w.stat().st_size and len(art["weights"]["sha256"]) == 64
    with safe_open(str(w), framework="pt") as f:
        meta = json.loads(f.metadata()["wdscale"])
    assert meta["record"]["run_id"] == rid and meta["config"]["model"] == "synthetic"
    assert RunStore(S).check() == {"runs": 4, "ok": 4, "damaged": [], "orphans": [], "adopted": [],
                                   "repaired": False}


def test_old_store_without_artifact_columns_still_loads(S):
    with sqlite3.connect(S / "index.sqlite") as c:  # the schema before sizes and hashes were kept
        c.execute("DROP TABLE artifacts")
    store = RunStore(S)
    assert len(store.records()) == 4 and all(r["status"] == "done" for r in store.records())
    assert store.check()["ok"] == 4
    assert plan(grid(), store)[1] == []  # still cached


# -- damaged runs: reported, not served, retrained, repaired -------------------------------------------------
def test_missing_spectra_and_truncated_weights_are_damaged_and_a_sweep_retrains_them(S, capsys):
    a, b = ids(S)[:2]
    (S / "spectra" / f"{a}.npz").unlink()
    w = S / "weights" / f"{b}.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    store = RunStore(S)
    status = {r["run_id"]: r["status"] for r in store.records()}
    assert status[a] == status[b] == "damaged" and list(status.values()).count("done") == 2
    assert store.get(a) is None and store.get(b) is None
    with pytest.raises(DamagedRun, match="spectra file missing"):
        store.spectra(a)
    with pytest.raises(DamagedRun, match="weights file unreadable"):
        store.weights(b)
    rc, out, err = run_cli(capsys, "runs", "--out", S)
    assert rc == 0 and out.count("damaged") == 2 and "--repair" in err
    rc, out, _ = run_cli(capsys, "runs", "--out", S, "--check")
    assert rc == 1 and "2 damaged" in out
    cached, todo = plan(grid(), store)
    assert len(cached) == 2 and sorted(c.run_id for ch in todo for c in ch) == sorted([a, b])
    run_sweep(grid(), store)
    assert store.check()["ok"] == 4 and store.get(a) and store.get(b)


def test_a_damaged_run_with_a_healthy_twin_is_restored_from_it_without_training(tmp_path):
    """At m = 1 mup and wd are the same member: a damaged mup run is read back from its stored wd twin."""
    g = expand_grid(**dict(GRID, base_width=32))
    store = RunStore(tmp_path / "T")
    run_sweep(g, store)
    mup = next(c for c in g if c.rule == "mup")
    (tmp_path / "T" / "spectra" / f"{mup.run_id}.npz").unlink()
    store = RunStore(tmp_path / "T")
    assert store.get(mup.run_id) is None
    cached, todo = plan(g, store)
    assert todo == [] and len(cached) == 4
    run_sweep(g, store)
    assert store.check()["ok"] == 4 and store.get(mup.run_id)["twin_of"]


def test_same_size_garbage_is_found_by_the_deep_check(S, capsys):
    rid = ids(S)[0]
    w = S / "weights" / f"{rid}.safetensors"
    w.write_bytes(b"\0" * w.stat().st_size)
    rep = RunStore(S).check()
    assert rep["damaged"] == [(rid, "weights file content changed (sha256 mismatch)")]
    rc, out, _ = run_cli(capsys, "runs", "--out", S, "--repair")
    assert rc == 0 and "dropped" in out and rid not in ids(S) and not w.exists()
    assert len(ids(S)) == 3


def test_repair_drops_orphans_and_reindexes_complete_unindexed_runs(S, capsys):
    rid = ids(S)[0]
    with sqlite3.connect(S / "index.sqlite") as c:  # a kill between put()'s files and its row
        c.execute("DELETE FROM runs WHERE run_id=?", (rid,))
    tmp = S / "weights" / f"{'f' * 16}.safetensors.123.tmp"  # a kill inside put(): a half-written file
    tmp.write_bytes(b"partial")
    old = time.time() - 3600
    os.utime(tmp, (old, old))
    rc, out, _ = run_cli(capsys, "runs", "--out", S, "--check")
    assert rc == 1 and "1 unindexed, 1 orphan files" in out
    rc, out, _ = run_cli(capsys, "runs", "--out", S, "--check", "--repair")
    assert rc == 0 and not tmp.exists() and rid in ids(S)
    assert RunStore(S).get(rid)["run_id"] == rid


def test_garbage_index_is_one_line_and_repair_rebuilds_it(S, capsys):
    before = {r["run_id"]: r["final_loss"] for r in RunStore(S).records()}
    (S / "index.sqlite").write_bytes(os.urandom(4096))
    for extra in ("-wal", "-shm"):
        (S / f"index.sqlite{extra}").unlink(missing_ok=True)
    with pytest.raises(StoreCorrupt):
        RunStore(S)
    for argv in (["runs", "--out", S], ["report", S], ["runs", "--out", S, "--check"],
                 ["sweep", "--widths", "32", "--base-width", "16", "--steps", "12", "--out", S]):
        rc, out, err = run_cli(capsys, *argv)
        assert rc == 1 and one_line_error(err) and "--repair" in err and "corrupt" in err, (argv, err)
    rc, out, err = run_cli(capsys, "runs", "--out", S, "--repair")
    assert rc == 0 and "index rebuilt" in out
    assert {r["run_id"]: r["final_loss"] for r in RunStore(S).records()} == before
    assert list(S.glob("index.sqlite.corrupt-*"))  # kept aside, not deleted


def test_read_only_store_reads_and_refuses_writes(S, capsys, monkeypatch):
    read_only(monkeypatch, S)
    store = RunStore(S)
    assert store.readonly and len(store.records()) == 4
    rc, out, err = run_cli(capsys, "runs", "--out", S)
    assert rc == 0 and out.count("done") == 4
    base = ["sweep", "--widths", "32", "--base-width", "16", "--rules", "mup,wd", "--wds", "0.5", "--steps", "12",
            "--out", S]
    rc, out, err = run_cli(capsys, *base, "--lrs", "1e-2,2e-2")
    assert rc == 0 and out.count("yes") == 4  # fully cached: only reads
    rc, out, err = run_cli(capsys, *base, "--lrs", "3e-2")
    assert rc == 1 and one_line_error(err) and "read-only" in err
    with pytest.raises(StoreError, match="read-only"):
        store.delete(ids(S)[0])


# -- ids never escape the store --------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["/some/dir/x", "../../x", "../weights/abc", "0123456789ABCDEF", "0123456789abcde",
                                 "0123456789abcdef0", "", "0123456789abcde/", "..", "x" * 16])
def test_ids_that_could_escape_are_refused_everywhere(S, tmp_path, bad, capsys):
    victim = tmp_path / "x.safetensors"
    victim.write_bytes(b"keep me")
    store = RunStore(S)
    for f in (store.delete, store.get, store.spectra, store.weights, store.paths):
        with pytest.raises(BadInput):
            f(bad)
    rc, out, err = run_cli(capsys, "runs", "--out", S, "--delete", bad)
    assert rc == 2 and one_line_error(err)
    assert victim.exists() and len(ids(S)) == 4


def test_deleting_an_unknown_id_is_an_error(S, capsys):
    rc, out, err = run_cli(capsys, "runs", "--out", S, "--delete", "0123456789abcdef")
    assert rc == 2 and "no run 0123456789abcdef" in err
    rid = ids(S)[0]
    rc, *_ = run_cli(capsys, "runs", "--out", S, "--delete", rid)
    assert rc == 0 and rid not in ids(S)


# -- resource bounds: refused before anything is allocated ----------------------------------------------
@pytest.mark.parametrize("kw,needle", [(dict(steps=10_000_000_000), "steps"), (dict(width=100_000), "width"),
                                       (dict(depth=100_000), "depth"), (dict(batch_size=10**9), "batch size"),
                                       (dict(seed=10**22), "seed"), (dict(seed=-1), "seed"),
                                       (dict(lr=0.5, wd=3.0), "per-step decay 1.5"),
                                       (dict(rule="custom", b=1e308, width=128), "not usable")])
def test_bounds_are_one_line_value_errors(kw, needle):
    """Refused before anything is allocated (how fast: bench's `bounds_refusal_s`, not asserted here)."""
    base = dict(model="synthetic", width=64, base_width=64, rule="wd", lr=1e-2, wd=0.1, steps=10)
    with pytest.raises(ValueError, match=needle):
        RunConfig(**(base | kw))


def test_synthetic_memory_estimate_refuses_what_cannot_fit(monkeypatch):
    import wdscale.models.transformer as tr

    monkeypatch.setattr(tr, "available_memory", lambda dev: 8 * 2**30)
    big = expand_grid("synthetic", [8192], 64, ["mup", "wd"], [1e-3, 1e-2], [0.1], 10, depth=64)
    with pytest.raises(ValueError, match="GiB"):
        preflight(big)
    preflight(expand_grid("synthetic", [256], 64, ["wd"], [1e-2], [0.1], 10))


def test_a_huge_corpus_is_refused_without_reading_it(tmp_path):
    from wdscale.models.data import read_text_file

    big = tmp_path / "big.txt"
    with open(big, "wb") as f:  # sparse: 8 GB on paper, nothing on disk
        f.truncate(8 * 2**30)
    # refused from its size alone: the sparse file is never read (how fast: bench's `huge_corpus_refusal_s`)
    with pytest.raises(ValueError, match="above the limit"):
        read_text_file(str(big))


def test_editing_a_corpus_changes_the_run_id(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world\n" * 2000)
    kw = dict(model="transformer", width=64, base_width=64, rule="wd", lr=1e-2, wd=0.1, steps=10, corpus=str(corpus))
    first = RunConfig(**kw).run_id
    assert RunConfig(**kw).run_id == first
    corpus.write_text("goodbye world\n" * 2000)
    assert RunConfig(**kw).run_id != first
    # synthetic and stdlib runs keep the ids they always had (no corpus hash in their canonical form)
    assert "corpus_sha256" not in RunConfig(**(kw | dict(model="synthetic"))).canonical()
    assert "corpus_sha256" not in RunConfig(**(kw | dict(corpus="stdlib"))).canonical()


# -- the app: damaged and corrupt stores ----------------------------------------------------------------------
VIEW_PAGES = ["pages/spectra.py", "pages/steady_state.py", "pages/diagnostics.py", "pages/runs.py",
              "pages/transfer.py", "pages/train.py"]


def app_page(page):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file("../app.py", default_timeout=120)
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    return at


def test_pages_draw_the_rest_and_name_the_damaged_runs(S, monkeypatch):
    monkeypatch.setenv("WDSCALE_DATA", str(S))
    a, b = ids(S)[:2]
    (S / "spectra" / f"{a}.npz").unlink()
    w = S / "weights" / f"{b}.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    for page in VIEW_PAGES:
        at = app_page(page)
        assert not at.exception, (page, [e.value for e in at.exception])
        if page in ("pages/spectra.py", "pages/steady_state.py", "pages/runs.py"):
            notes = [x.value for x in at.warning if "damaged" in x.value]
            assert len(notes) == 1 and a in notes[0] and b in notes[0], (page, notes)
        if page in ("pages/spectra.py", "pages/steady_state.py"):
            assert at.get("plotly_chart"), page


def test_pages_name_a_run_whose_file_fails_to_load(S, monkeypatch):
    monkeypatch.setenv("WDSCALE_DATA", str(S))
    for rid in ids(S):  # same size, garbage content: only loading finds it
        p = S / "spectra" / f"{rid}.npz"
        p.write_bytes(b"\0" * p.stat().st_size)
    at = app_page("pages/spectra.py")
    assert not at.exception, [e.value for e in at.exception]
    assert any("damaged" in x.value for x in at.warning)


def test_pages_on_a_garbage_index_show_one_error(S, monkeypatch):
    monkeypatch.setenv("WDSCALE_DATA", str(S))
    (S / "index.sqlite").write_bytes(os.urandom(4096))
    for page in [None] + VIEW_PAGES:
        at = app_page(page)
        assert not at.exception, (page, [e.value for e in at.exception])
        assert any("--repair" in e.value for e in at.error), page


def test_pages_read_a_read_only_store(S, monkeypatch):
    monkeypatch.setenv("WDSCALE_DATA", str(S))
    read_only(monkeypatch, S)
    for page in ["pages/spectra.py", "pages/runs.py"]:
        at = app_page(page)
        assert not at.exception, (page, [e.value for e in at.exception])
        assert at.get("plotly_chart") or at.dataframe


def test_train_page_refuses_steps_0_and_a_huge_seed_and_decay_above_1(tmp_path, monkeypatch):
    monkeypatch.setenv("WDSCALE_DATA", str(tmp_path / "runs"))
    at = app_page("pages/train.py")
    at.number_input(key="t_steps").set_value(0).run()
    assert not at.exception and any("steps must be a positive integer, got 0" in e.value for e in at.error)
    at.number_input(key="t_steps").set_value(100).run()
    at.text_input(key="t_seeds").set_value("12345678901234567890123").run()
    assert any("seed must be an integer" in e.value for e in at.error)
    at.text_input(key="t_seeds").set_value("0").run()
    at.text_input(key="t_lrs").set_value("0.5").run()
    at.text_input(key="t_wds").set_value("3").run()
    assert any("per-step decay 1.5" in e.value for e in at.error)
    at.text_input(key="t_wds").set_value("0.3").run()
    assert not at.error and any("per-step decay" in w.value for w in at.warning)
