import math

import pytest
import torch
from torch import nn

import warnings

from wdscale.core.rules import RULES, classify_model, classify_tensor, param_groups, resolve


@pytest.mark.parametrize("rule,lr,wd", [("sp", 2e-2, 0.05), ("mup", 5e-3, 0.05), ("indep", 5e-3, 0.2),
                                        ("wd", 5e-3, 0.1), ("custom", 2e-2 * 4 ** -1.0, 0.05 * 4 ** 0.5)])
def test_rule_table_at_m4(rule, lr, wd):
    r = resolve(rule, 128, 32, 2e-2, 0.05)
    assert r.groups["matrix"]["lr"] == pytest.approx(lr, rel=1e-12)
    assert r.groups["matrix"]["wd"] == pytest.approx(wd, rel=1e-12)
    assert r.groups["vector"] == {"lr": 2e-2, "wd": 0.0, "init_std": None, "mult": 1.0}
    assert r.readout_mult == r.groups["readout"]["mult"] == (1.0 if rule == "sp" else 0.25)


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
        g = resolve(rule, 64, 64, 1e-2, 0.1, b=0.3 if rule in ("fitted", "fitted-sqrt") else None).groups["matrix"]
        assert (g["lr"], g["wd"]) == (1e-2, 0.1)


@pytest.mark.parametrize("rule", ["fitted", "fitted-sqrt"])
def test_fitted_rule_is_custom_with_its_measured_b_and_refuses_without_it(rule):
    f, c = resolve(rule, 256, 64, 1e-2, 0.1, b=0.4), resolve("custom", 256, 64, 1e-2, 0.1, a=1.0, b=0.4)
    assert f.groups == c.groups and f.readout_mult == c.readout_mult == 0.25
    with pytest.raises(ValueError, match=f"{rule} needs"):
        resolve(rule, 256, 64, 1e-2, 0.1)


def test_both_fitted_rules_are_named_everywhere():
    from wdscale.core.rules import FREE_RULES, RULE_INFO, RULE_SHORT

    for rule in ("fitted", "fitted-sqrt"):
        assert rule in RULES and rule in FREE_RULES and rule in RULE_SHORT and rule in RULE_INFO
    assert RULE_SHORT["fitted"] != RULE_SHORT["fitted-sqrt"]


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
    model = Unseen(d=192)
    groups = param_groups(model, width=192, base_width=48, rule="wd", lr=1e-2, wd=0.1, base_model=Unseen(d=48))
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
    model = Unseen(d=96)
    groups = param_groups(model, 96, 48, "mup", 1e-2, 0.1, overrides={r"blocks\.1\.mix": "readout"},
                          base_model=Unseen(d=48))
    readout = next(g for g in groups if g["name"] == "readout")
    assert id(model.blocks[1]["mix"].weight) in {id(p) for p in readout["params"]}
    with pytest.raises(ValueError):
        param_groups(model, 96, 48, "mup", 1e-2, 0.1, overrides={"tok": "banana"})


def mlp(d, d_in=64, classes=10):
    return nn.Sequential(nn.Linear(d_in, d), nn.LayerNorm(d), nn.ReLU(), nn.Linear(d, d), nn.LayerNorm(d), nn.ReLU(),
                         nn.Linear(d, classes))


@pytest.mark.parametrize("with_base", [False, True])
def test_unnamed_sequential_classes_come_from_the_scaling_dims(with_base):
    """The issue's model: input and readout layers were put in the hidden group by name guessing."""
    model = mlp(256)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # it has a readout: no warning
        groups = param_groups(model, 256, 64, "wd", 1e-2, 0.1, base_model=mlp(64) if with_base else None)
    cls = {id(p): g["name"] for g in groups for p in g["params"]}
    assert cls[id(model[0].weight)] == "embedding" and cls[id(model[3].weight)] == "matrix"
    assert cls[id(model[6].weight)] == "readout"
    assert {cls[id(p)] for n, p in model.named_parameters() if p.ndim == 1} == {"vector"}
    lr = {g["name"]: g["lr"] for g in groups}
    assert lr["matrix"] == pytest.approx(1e-2 / 4) and lr["embedding"] == lr["readout"] == 1e-2


class GPT2ish(nn.Module):
    """GPT-2's names and layout (wte, wpe, h.N.attn.c_attn, c_proj, mlp.c_fc, ln_f, lm_head), with nn.Linear."""

    def __init__(self, d=64, vocab=600, ctx=64, tied=False):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.h = nn.ModuleList(nn.ModuleDict({
            "ln_1": nn.LayerNorm(d),
            "attn": nn.ModuleDict({"c_attn": nn.Linear(d, 3 * d), "c_proj": nn.Linear(d, d)}),
            "mlp": nn.ModuleDict({"c_fc": nn.Linear(d, 4 * d), "c_proj": nn.Linear(4 * d, d)})}) for _ in range(2))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        if tied:
            self.lm_head.weight = self.wte.weight


@pytest.mark.parametrize("with_base", [False, True])
def test_gpt2_names_and_layout(with_base):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cls = classify_model(GPT2ish(64), 64, GPT2ish(16) if with_base else None)
    assert cls["wte.weight"] == cls["wpe.weight"] == "embedding"  # a table's rows (tokens, positions) never scale
    assert cls["h.0.attn.c_attn.weight"] == cls["h.1.mlp.c_proj.weight"] == cls["h.0.mlp.c_fc.weight"] == "matrix"
    assert cls["lm_head.weight"] == "readout"
    assert cls["h.0.attn.c_attn.bias"] == cls["ln_f.weight"] == "vector"


def test_tied_embedding_is_one_parameter_with_both_roles():
    model = GPT2ish(64, tied=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the tied head is the readout: no "no readout" warning
        groups = param_groups(model, 64, 16, "mup", 1e-2, 0.1)
    cls = {id(p): g["name"] for g in groups for p in g["params"]}
    assert cls[id(model.wte.weight)] == "embedding" and id(model.lm_head.weight) == id(model.wte.weight)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_ambiguous_weights_are_refused_in_one_line_with_the_override_to_use():
    # a 1000-class head at width 256: 1000 could be 4 d, a vocabulary, or anything between; nothing tells
    model = mlp(256, classes=1000)
    with pytest.raises(ValueError) as e:
        param_groups(model, 256, 64, "wd", 1e-2, 0.1)
    msg = str(e.value)
    assert "\n" not in msg and "6.weight" in msg and "overrides={'6.weight': " in msg and "base_model" in msg
    groups = param_groups(model, 256, 64, "wd", 1e-2, 0.1, overrides={r"^6\.weight$": "readout"})
    assert any(g["name"] == "readout" for g in groups)
    assert param_groups(model, 256, 64, "wd", 1e-2, 0.1, base_model=mlp(64, classes=1000))  # or a base model
    # a LLaMA MLP's 8/3 d hidden is no multiple of d: refused too, where a silent "readout" would be wrong
    llama_mlp = nn.Sequential(nn.Linear(96, 256, bias=False), nn.Linear(256, 96, bias=False))
    with pytest.raises(ValueError, match=r"0\.weight"):
        classify_model(llama_mlp, 96)
    with pytest.raises(ValueError, match="base_model has no parameter"):
        classify_model(mlp(256), 256, base_model=nn.Linear(3, 3))


def test_no_readout_warns():
    with pytest.warns(UserWarning, match="no readout"):
        param_groups(nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256)), 256, 64, "mup", 1e-2, 0.1)


def test_state_dict_tensors_shapes_first_names_break_ties():
    assert classify_tensor("layers.0.anything", (256, 768), 256) == "matrix"  # both dims scale: no name read
    assert classify_tensor("lm_head.weight", (50257, 256), 256) == "readout"  # (vocab, d) is an embedding or a head
    assert classify_tensor("wte.weight", (50257, 256), 256) == "embedding"
    assert classify_tensor("layers.0.headless.weight", (50257, 256), 256) == "matrix"  # 'head' must be a whole name
    assert classify_tensor("norm.weight", (256,), 256) == "vector"
    assert classify_tensor("x", (256, 256), 256, overrides={"x": "readout"}) == "readout"


def test_symbolic_formulas_follow_the_exponents():
    from wdscale.core.rules import symbolic

    assert symbolic("sp") == ("η₀", "λ₀")
    assert symbolic("mup") == ("η₀/m", "λ₀")
    assert symbolic("wd") == ("η₀/m", "λ₀·√m")
    assert symbolic("indep") == ("η₀/m", "λ₀·m")
    assert symbolic("custom", 0.5, -1) == ("η₀/√m", "λ₀/m")
