"""wdscale bench: the JSON contract, in the test-only tiny mode (a few steps; nothing here is timed)."""
import json
import math

from wdscale.cli import main

KEYS = ["peak_gflops", "mfu_d64", "mfu_d128", "mfu_d256", "ensemble_speedup_d64", "ensemble_speedup_d128",
        "ensemble_speedup_d256", "ensemble_max_abs_diff", "spectra_overhead_pct", "demo_seconds", "device"]


def test_bench_json_has_every_key_with_sane_types(capsys):
    assert main(["bench", "--json", "--test-tiny"]) == 0
    r = json.loads(capsys.readouterr().out)
    for k in KEYS:
        assert k in r, k
    assert r["device"] == "cpu"
    for k in ("peak_gflops", "mfu_d64", "ensemble_speedup_d64", "spectra_overhead_pct", "demo_seconds"):
        assert isinstance(r[k], float) and math.isfinite(r[k]) and r[k] > 0, (k, r[k])
    assert r["mfu_d128"] is None and r["ensemble_speedup_d256"] is None  # tiny mode measures d=64 only
    # the ensemble trains exactly what the members would train alone
    assert r["ensemble_max_abs_diff"] <= 1e-5
    for k, t in r["targets"].items():
        assert set(t) >= {"target", "value", "pass"}, k
        assert t["pass"] is None if t["value"] is None else isinstance(t["pass"], bool)
    # pass/fail agrees with the value and the threshold
    sp = r["targets"]["ensemble_speedup_d64"]
    assert sp["pass"] == (sp["value"] >= 4.0)


def test_bench_rejects_unknown_device(capsys):
    assert main(["bench", "--device", "tpu", "--test-tiny"]) == 2
    assert "unknown device" in capsys.readouterr().err
