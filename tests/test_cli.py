import json
import subprocess
import sys

import pytest


def wdscale(*args, **kw):
    return subprocess.run([sys.executable, "-m", "wdscale", *args], capture_output=True, text=True, timeout=300, **kw)


def test_rules_json_contract():
    p = wdscale("rules", "--rule", "wd", "--width", "256", "--base-width", "64", "--lr", "1e-2", "--wd", "0.1",
                "--json")
    assert p.returncode == 0, p.stderr
    t = json.loads(p.stdout)
    assert t["matrix"]["lr"] == pytest.approx(2.5e-3) and t["matrix"]["wd"] == pytest.approx(0.2)
    assert t["vector"] == {"lr": 0.01, "wd": 0.0, "init_std": None, "mult": 1.0, "decay_per_step": 0.0, "tau": None}
    assert t["matrix"]["decay_per_step"] == pytest.approx(5e-4)
    # the rest of the parametrization: init std (x 1/sqrt(fan_in)), forward multipliers, attention scale
    assert t["readout"]["mult"] == 0.25 and t["matrix"]["mult"] == 1.0 and t["matrix"]["init_std"] == 1.0
    assert t["attention"] == {"head_dim": 32, "scale": pytest.approx(32 ** -0.5)}


def test_rules_table_shows_decay_and_warns_short_horizon():
    p = wdscale("rules", "--rule", "mup", "--width", "256", "--base-width", "64", "--lr", "1e-2", "--wd", "0.1",
                "--steps", "1000")
    assert p.returncode == 0
    assert "lr*wd" in p.stdout and "tau" in p.stdout and "not yet steady state" in p.stdout
    assert "init std" in p.stdout and "forward x" in p.stdout and "attention logits" in p.stdout


BAD = [["--widths", "-64"], ["--widths", "abc"], ["--widths", "64.5"], ["--lrs", "0"], ["--lrs", "nan"],
       ["--lrs", "inf"], ["--wds", "-0.1"], ["--steps", "0"], ["--rules", "nope"], ["--model", "nope"],
       ["--base-width", "0"], ["--base-width", "x"]]


@pytest.mark.parametrize("bad", BAD, ids=[" ".join(b) for b in BAD])
def test_sweep_bad_input_one_line_exit_2_trains_nothing(bad, tmp_path):
    args = ["sweep", "--model", "synthetic", "--widths", "64", "--base-width", "64", "--rules", "wd", "--lrs",
            "1e-2", "--wds", "0.1", "--steps", "10", "--out", str(tmp_path / "s")] + bad
    p = wdscale(*args)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1 and "error" in p.stderr
    assert p.stdout == "" and not (tmp_path / "s").exists()


def test_sweep_json_records(tmp_path):
    p = wdscale("sweep", "--model", "synthetic", "--widths", "32,64", "--base-width", "32", "--rules", "mup,wd",
                "--lrs", "1e-2", "--wds", "0.5", "--steps", "20", "--out", str(tmp_path / "s"), "--json")
    assert p.returncode == 0, p.stderr
    runs = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(runs) == 4
    need = {"model", "rule", "width", "base_width", "lr", "wd", "matrix_lr", "matrix_wd", "steps", "final_loss",
            "diverged", "top_sv", "param_class", "weights"}
    assert all(need <= set(r) for r in runs)
    wd64 = next(r for r in runs if r["rule"] == "wd" and r["width"] == 64)
    assert wd64["matrix_lr"] == pytest.approx(5e-3) and wd64["matrix_wd"] == pytest.approx(0.5 * 2 ** 0.5)
    assert wd64["lr"] == 1e-2 and wd64["wd"] == 0.5  # proxy values as given
    from safetensors.torch import load_file

    assert set(load_file(wd64["weights"])) == set(wd64["top_sv"]) | {k for k, c in wd64["param_class"].items()
                                                                     if c == "vector"}


def test_one_list_parser_for_cli_and_app():
    import pytest as _pytest

    from wdscale.models.config import parse_numbers

    assert parse_numbers("64, 128;256", int) == [64, 128, 256]
    assert parse_numbers("1e-3,,3e-3", float) == [1e-3, 3e-3]
    with _pytest.raises(ValueError, match="'abc' is not an integer"):
        parse_numbers("64,abc", int)
    with _pytest.raises(ValueError, match="not a finite number"):
        parse_numbers("nan", float)
