import math

import pytest
import torch
from torch import nn

from wdscale.rules import RULES, classify, param_groups, resolve


@pytest.mark.parametrize("rule,lr,wd", [("sp", 2e-2, 0.05), ("mup", 5e-3, 0.05), ("indep", 5e-3, 0.2),
                                        ("wd", 5e-3, 0.1), ("custom", 2e-2 * 4 ** -1.0, 0.05 * 4 ** 0.5)])
def test_rule_table_at_m4(rule, lr, wd):
    r = resolve(rule, 128, 32, 2e-2, 0.05)
    assert r.groups["matrix"]["lr"] == pytest.approx(lr, rel=1e-12)
    assert r.groups["matrix"]["wd"] == pytest.approx(wd, rel=1e-12)
    assert r.groups["vector"] == {"lr": 2e-2, "wd": 0.0}
    assert r.readout_mult == (1.0 if rule == "sp" else 0.25)


def test_table_reports_per_step_decay_and_tau():
    t = resolve("wd", 256, 64, 1e-2, 0.1).table(steps=8000)["matrix"]
    assert t["decay_per_step"] == pytest.approx(2.5e-3 * 0.2)  # torch multiplies wd by lr
    assert t["tau"] == pytest.approx(1 / (2.5e-3 * 0.2))
    assert t["steps_over_tau"] == pytest.approx(8000 * 2.5e-3 * 0.2)
    assert math.isinf(resolve("wd", 256, 64, 1e-2, 0.1).table()["vector"]["tau"])


def test_custom_exponents_and_identity_at_base_width():
    r = resolve("custom", 512, 64, 1e-2, 0.1, a=0.5, b=1.5)
    assert r.groups["matrix"]["lr"] == pytest.approx(1e-2 * 8 ** -0.5)
    assert r.groups["matrix"]["wd"] == pytest.approx(0.1 * 8 ** 1.5)
    for rule in RULES:  # at m = 1 every rule is the proxy itself
        assert resolve(rule, 64, 64, 1e-2, 0.1, b=0.3 if rule == "fitted" else None).groups["matrix"] == \
            {"lr": 1e-2, "wd": 0.1}


def test_fitted_rule_is_custom_with_its_measured_b_and_refuses_without_it():
    f, c = resolve("fitted", 256, 64, 1e-2, 0.1, b=0.4), resolve("custom", 256, 64, 1e-2, 0.1, a=1.0, b=0.4)
    assert f.groups == c.groups and f.readout_mult == c.readout_mult == 0.25
    with pytest.raises(ValueError, match="fitted needs"):
        resolve("fitted", 256, 64, 1e-2, 0.1)


@pytest.mark.parametrize("bad", [dict(rule="nope"), dict(width=0), dict(base_width=-1), dict(lr=0.0),
                                 dict(lr=float("nan")), dict(wd=-0.1), dict(wd=float("inf"))])
def test_bad_input_raises(bad):
    kw = dict(rule="wd", width=128, base_width=64, lr=1e-2, wd=0.1) | bad
    with pytest.raises(ValueError):
        resolve(**kw)


class Unseen(nn.Module):
    """A model the rule engine has never seen: embedding, attention-ish block, layer norms, biases, head."""

    def __init__(self, d=48, vocab=100):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList([nn.ModuleDict({"ln": nn.LayerNorm(d), "proj": nn.Linear(d, 3 * d),
                                                    "mix": nn.Linear(3 * d, d, bias=False)}) for _ in range(2)])
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, idx):
        h = self.tok(idx)
        for b in self.blocks:
            h = h + b["mix"](torch.relu(b["proj"](b["ln"](h))))
        return self.lm_head(h) * self.scale


def test_param_groups_on_unseen_model():
    model = Unseen()
    groups = param_groups(model, width=192, base_width=48, rule="wd", lr=1e-2, wd=0.1)
    by = {g["name"]: g for g in groups}
    ids = lambda g: {id(p) for p in g["params"]}  # noqa: E731
    assert ids(by["embedding"]) == {id(model.tok.weight)}
    assert ids(by["readout"]) == {id(model.lm_head.weight)}
    assert ids(by["matrix"]) == {id(b[k].weight) for b in model.blocks for k in ("proj", "mix")}
    vec = {id(model.scale)} | {id(b["ln"].weight) for b in model.blocks} | {id(b["ln"].bias) for b in model.blocks} \
        | {id(b["proj"].bias) for b in model.blocks}
    assert ids(by["vector"]) == vec
    assert by["matrix"]["lr"] == pytest.approx(2.5e-3) and by["matrix"]["weight_decay"] == pytest.approx(0.2)
    assert by["vector"]["weight_decay"] == 0.0
    # every parameter in exactly one group, and torch's AdamW takes the groups as they are
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    opt = torch.optim.AdamW(groups)
    model(torch.randint(0, 100, (2, 5))).sum().backward()
    opt.step()


def test_param_groups_overrides():
    model = Unseen()
    groups = param_groups(model, 96, 48, "mup", 1e-2, 0.1, overrides={r"blocks\.1\.mix": "readout"})
    readout = next(g for g in groups if g["name"] == "readout")
    assert id(model.blocks[1]["mix"].weight) in {id(p) for p in readout["params"]}
    with pytest.raises(ValueError):
        param_groups(model, 96, 48, "mup", 1e-2, 0.1, overrides={"tok": "banana"})


def test_classify_by_name_components():
    assert classify("embed.weight", torch.zeros(3, 3)) == "embedding"
    assert classify("layers.0.headless.weight", torch.zeros(3, 3)) == "matrix"  # 'head' must be a whole name
    assert classify("head.weight", torch.zeros(3, 3)) == "readout"
    assert classify("norm.weight", torch.zeros(3)) == "vector"


def test_symbolic_formulas_follow_the_exponents():
    from wdscale.rules import symbolic

    assert symbolic("sp") == ("η₀", "λ₀")
    assert symbolic("mup") == ("η₀/m", "λ₀")
    assert symbolic("wd") == ("η₀/m", "λ₀·√m")
    assert symbolic("indep") == ("η₀/m", "λ₀·m")
    assert symbolic("custom", 0.5, -1) == ("η₀/√m", "λ₀/m")
