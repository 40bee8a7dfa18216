import csv
import io
import json

import pytest

from wdscale import cli
from wdscale.training.store import RunStore

from test_verdict import planted_sweep


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A small real synthetic sweep: 2 widths x 3 lrs x 1 rule, a few steps (far below 3 tau)."""
    out = tmp_path_factory.mktemp("report") / "runs"
    import contextlib

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(["sweep", "--widths", "32,64", "--base-width", "32", "--rules", "mup", "--lrs",
                       "3e-3,1e-2,3e-2", "--wds", "0.1", "--steps", "8", "--depth", "1", "--batch-size", "16",
                       "--out", str(out)])
    assert rc == 0
    return out, err.getvalue()


def test_sweep_warns_once_when_runs_are_short(swept):
    _, err = swept
    lines = [l for l in err.splitlines() if l.startswith("warning:")]
    assert len(lines) == 1 and "rule mup: 6 of 6 runs stop before 3 tau" in lines[0]


def test_report_prints_the_verdict_table(swept, capsys):
    out, _ = swept
    assert cli.main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| width | optimal lr |" in text
    assert "\n| 32 |" in text and "\n| 64 |" in text
    assert "threshold 0.25" in text
    assert any(v in text for v in ("**PASS**", "**FAIL**", "**INCONCLUSIVE**"))
    assert "Horizon check" in text and "< 3 tau" in text  # 8 steps are far from steady state


def test_report_csv_and_json(swept, capsys):
    out, _ = swept
    assert cli.main(["report", str(out), "--format", "csv", "--threshold", "0.25"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [int(r["width"]) for r in rows] == [32, 64]
    assert {r["threshold"] for r in rows} == {"0.25"}
    assert cli.main(["report", str(out), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (v,) = data["verdicts"]
    assert v["rule"] == "mup" and v["widths"] == [32, 64] and v["threshold"] == 0.25
    assert "scan" not in data  # one lam exponent (mup's q = 0): no scan to read
    assert [h["fraction"] for h in data["horizon"]] == [0.25, 0.5, 1.0]
    # the numbers agree with the records the store holds
    recs = RunStore(out).records()
    best64 = min(r["final_loss"] for r in recs if r["width"] == 64 and r["final_loss"] is not None)
    assert v["optima"]["64"]["best_loss"] == pytest.approx(best64)


def test_report_on_planted_store_gives_planted_drift(tmp_path, capsys):
    # a store written by hand (records only) with optimum drifting -1 octave per doubling
    import sqlite3

    store = RunStore(tmp_path)
    with sqlite3.connect(store.db) as c:
        for i, r in enumerate(planted_sweep({64: 2.0 ** -7, 128: 2.0 ** -8})):
            c.execute("INSERT INTO runs VALUES (?,?,?,?,?)", (r["run_id"], "{}", "done", json.dumps(r), i))
    assert cli.main(["report", str(tmp_path), "--format", "json", "--regret-threshold", "0.05"]) == 0
    (v,) = json.loads(capsys.readouterr().out)["verdicts"]
    assert v["drift"] == pytest.approx(-1.0) and v["regret"]["128"] == pytest.approx(0.1)
    assert v["verdict"] == "FAIL" and v["regret_threshold"] == 0.05


def test_report_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "no run store" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "nowhere").exists()  # reporting never creates a store
    RunStore(tmp_path / "empty")
    assert cli.main(["report", str(tmp_path / "empty")]) == 2
    assert "no runs in" in capsys.readouterr().err


def test_report_too_few_lrs(swept, capsys):
    out, _ = swept
    store = RunStore(out)
    keep = {r["run_id"] for r in store.records() if r["lr"] != 3e-2}
    import shutil
    import sqlite3

    small = out.parent / "small"
    shutil.copytree(out, small)
    with sqlite3.connect(small / "index.sqlite") as c:
        for (rid,) in c.execute("SELECT run_id FROM runs").fetchall():
            if rid not in keep:
                c.execute("DELETE FROM runs WHERE run_id=?", (rid,))
    assert cli.main(["report", str(small)]) == 2
    err = capsys.readouterr().err
    assert "too few runs" in err and ">= 3 values of lr" in err and len(err.strip().splitlines()) == 1


def test_report_json_carries_the_measured_law(capsys):
    """`wdscale report DIR --format json` has `law`: per class and pooled, a and b with CIs, run count, S filter."""
    import json as _json
    from pathlib import Path

    from wdscale.cli import main as _main

    ref = Path(__file__).resolve().parent.parent / "gallery" / "tf-lm"
    assert _main(["report", str(ref), "--format", "json"]) == 0
    law = _json.loads(capsys.readouterr().out)["law"]
    assert law["min_S"] == 3 and law["scope"] == "proxy"
    assert {"attn q", "attn k", "attn v", "attn o", "mlp gate", "mlp up", "mlp down"} == set(law["classes"])
    for f in list(law["classes"].values()) + [law["pooled"]]:
        assert f["a_ci"][0] <= f["a"] <= f["a_ci"][1] and f["b_ci"][0] <= f["b"] <= f["b_ci"][1]
        assert f["n"] == law["pooled"]["n"] > 0 and f["min_S"] == 3
    # the Transformer after a cosine decay: b well above a, not the sqrt(eta/lam) law
    assert law["pooled"]["b"] - law["pooled"]["a"] > 0.2
    assert "not for" in law["sentence"] and law["snapshots"] == 1


def test_report_json_carries_the_law_even_without_a_verdict(tmp_path, capsys):
    """One lr per width gives no verdict, but a JSON reader still gets the law (and why there is no verdict);
    with no run at S >= 3 the law says so (min_S 0, below_steady_state)."""
    from wdscale import cli

    out = tmp_path / "few"
    assert cli.main(["sweep", "--widths", "32,64", "--base-width", "32", "--rules", "mup,wd", "--lrs", "0.01",
                     "--wds", "0.1", "--steps", "10", "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["report", str(out), "--format", "json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["verdicts"] == [] and "too few runs" in r["no_verdict"]
    assert r["law"]["pooled"]["min_S"] == 0 and r["law"]["below_steady_state"] is True
    assert cli.main(["report", str(out)]) == 2  # the human report still refuses, in one line
