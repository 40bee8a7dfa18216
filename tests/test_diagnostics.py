import pytest
import torch
from safetensors.torch import save_file

from wdscale.science.coord import coord_check, sublayer_gains
from wdscale.training.sweep import expand_grid, run_sweep
from wdscale.training.train import TrainOptions


pytestmark = pytest.mark.usefixtures("one_thread")


def _rows_by(rows, **kw):
    return [r for r in rows if all(r[k] == v for k, v in kw.items())]


@pytest.mark.parametrize("model", ["synthetic", "transformer"])
def test_sublayer_gains_of_stored_runs(store, model):
    extra = dict(seq_len=16, head_dim=16, batch_size=4, depth=1) if model == "transformer" else {}
    cfgs = expand_grid(model, [32, 64], 32, ["mup"], [1e-2], [0.1], steps=5, **extra)
    recs = run_sweep(cfgs, store, TrainOptions(n_evals=1, spectra_every=100))
    rows = sublayer_gains(store, recs)
    for rec in recs:
        mine = _rows_by(rows, run_id=rec["run_id"])
        expected = {"w_in", "w1_0", "w2_0", "w1_1", "w2_1", "w_out"} if model == "synthetic" else \
            {"emb", "l0_wq", "l0_wk", "l0_wv", "l0_wo", "l0_w1", "l0_w2", "l0_w3", "readout"}  # every matrix
        assert {r["param"] for r in mine} == expected
        for r in mine:
            assert r["gain"] > 0 and r["top_sv"] == pytest.approx(rec["top_sv"][r["param"]], rel=1e-4)
            if r["param"] in ("w1_0", "w2_1", "l0_wq", "l0_wo"):  # square: RMS gain <= spectral norm
                assert r["gain"] <= r["top_sv"] * (1 + 1e-5)
    # the gain is a property of the stored weights: doubling one matrix doubles its gain and sigma_top
    rec = recs[0]
    name = "w2_1" if model == "synthetic" else "l0_wo"
    w = store.weights(rec["run_id"])
    w[name] = w[name] * 2
    save_file(w, rec["weights"])
    before = _rows_by(rows, run_id=rec["run_id"], param=name)[0]
    after = _rows_by(sublayer_gains(store, [rec]), param=name)[0]
    assert after["gain"] == pytest.approx(2 * before["gain"], rel=1e-4)
    assert after["top_sv"] == pytest.approx(2 * before["top_sv"], rel=1e-4)


def _growth(rows, rule, module, step):
    by_w = {r["width"]: r["rms"] for r in _rows_by(rows, rule=rule, module=module, step=step)}
    ws = sorted(by_w)
    return by_w[ws[-1]] / by_w[ws[0]]


def test_coord_check_synthetic_sp_blows_up_mup_flat():
    rows = coord_check("synthetic", widths=(64, 128, 256), rules=("sp", "mup"), steps=4, lr=1e-2)
    assert {r["step"] for r in rows} == set(range(5))
    assert {"w_in", "w1_0", "w2_1", "logits"} <= {r["module"] for r in rows}
    sp, mup = _growth(rows, "sp", "logits", 4), _growth(rows, "mup", "logits", 4)
    assert sp > 1.8 and sp > 1.5 * mup
    assert _growth(rows, "sp", "w2_1", 4) > 1.5 * _growth(rows, "mup", "w2_1", 4)


def test_coord_check_transformer_and_module_filter():
    rows = coord_check("transformer", widths=(32, 64, 128), base_width=32, rules=("sp", "mup"), steps=6,
                       lr=1e-2, depth=2, modules=["logits", "l1_block", "emb"])
    assert {r["module"] for r in rows} == {"logits", "l1_block", "emb"}
    assert _growth(rows, "sp", "logits", 6) > 1.3 * _growth(rows, "mup", "logits", 6)
    assert _growth(rows, "sp", "l1_block", 6) > 1.3 * _growth(rows, "mup", "l1_block", 6)
    # before any update both rules share the init: same residual stream
    s0 = _rows_by(rows, step=0, module="l1_block", width=128)
    assert s0[0]["rms"] == pytest.approx(s0[1]["rms"], rel=0.1)


# -- the hook path gives the numbers the old ``capture`` argument gave --------------------------------------------
HOOK_TOL = 1e-5  # relative; measured (one thread): 0 for every shared row (max over all rows, see the test)


def _same(old_rows, new_rows, key, value_keys):
    """Max relative difference over the rows the old path had (the hooks add some: synthetic w_out, w_in gains)."""
    new = {tuple(r[k] for k in key): r for r in new_rows}
    worst = 0.0
    for r in old_rows:
        n = new[tuple(r[k] for k in key)]
        for v in value_keys:
            worst = max(worst, abs(n[v] - r[v]) / max(abs(r[v]), 1e-30))
    return worst


def test_hooks_give_the_old_capture_numbers(tmp_path):
    """tests/data/capture_reference.json was recorded with the old ``forward(..., capture=dict)`` path (commit
    fccaae4) by the same calls as here; the hook-based diagnostics must give the same numbers."""
    import json
    from pathlib import Path

    from wdscale.science.kosson import KossonMonitor
    from wdscale.training.store import RunStore
    from wdscale.training.train import RunConfig, train_ensemble

    ref = json.loads((Path(__file__).parent / "data" / "capture_reference.json").read_text())
    worst = {}
    rows = coord_check("transformer", widths=(32, 64), base_width=32, rules=("sp", "mup"), steps=2, lr=1e-2, depth=1)
    worst["coord_transformer"] = _same(ref["coord_transformer"], rows, ("rule", "width", "step", "module"), ["rms"])
    assert {r["module"] for r in rows} == {r["module"] for r in ref["coord_transformer"]}
    rows = coord_check("synthetic", widths=(32, 64), base_width=32, rules=("sp", "mup"), steps=2, lr=1e-2)
    worst["coord_synthetic"] = _same(ref["coord_synthetic"], rows, ("rule", "width", "step", "module"), ["rms"])
    store = RunStore(tmp_path / "runs")
    gains = []
    for model in ("synthetic", "transformer"):
        extra = dict(seq_len=16, head_dim=16, batch_size=4, depth=1) if model == "transformer" else {}
        cfgs = expand_grid(model, [32, 64], 32, ["mup"], [1e-2], [0.1], steps=5, **extra)
        gains += sublayer_gains(store, run_sweep(cfgs, store, TrainOptions(n_evals=1, spectra_every=100)))
    worst["sublayer_gains"] = _same(ref["sublayer_gains"], gains, ("model", "width", "param"),
                                    ["gain", "rms_in", "rms_out", "top_sv"])
    cfgs = [RunConfig(model="synthetic", width=32, base_width=32, rule="mup", lr=lr, wd=0.1, steps=8, depth=2,
                      batch_size=16) for lr in (3e-3, 1e-2)]
    mon = KossonMonitor(every=4, early=False)
    train_ensemble(cfgs, TrainOptions(callbacks=[mon], n_evals=1))
    fields = ["rel_update", "rel_rep_change", "alpha_dw", "alpha_w", "ratio"]
    worst["kosson_synthetic"] = _same(ref["kosson_synthetic"], mon.series, ("step", "member", "param"), fields)
    tc = [RunConfig(model="transformer", width=32, base_width=32, rule="mup", lr=1e-2, wd=0.1, steps=4, seq_len=16,
                    head_dim=16, batch_size=4, depth=1)]
    mon = KossonMonitor(every=2, early=False)
    train_ensemble(tc, TrainOptions(callbacks=[mon], n_evals=1))
    worst["kosson_transformer"] = _same(ref["kosson_transformer"], mon.series, ("step", "member", "param"), fields)
    assert len(mon.series) == len(ref["kosson_transformer"])
    assert max(worst.values()) <= HOOK_TOL, worst
