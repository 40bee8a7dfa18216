"""Regimes: the same Transformer in the paper's one-pass LM regime and in a multi-epoch control, side by side."""
import re

import streamlit as st

from pages import _ui
from wdscale.science import gallery
from wdscale.science import law
from wdscale.show import plots
from wdscale.science import regimes

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|~$])")


def md_escape(text: str) -> str:
    """Generated text as literal Markdown: "S = sum lr_t*wd < 3" must not turn into italics, a `$` into LaTeX."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def split_reasons(sentence: str, rules) -> tuple[str, list[str]]:
    """A study's verdict sentence -> (its head, its "why inconclusive" reasons with each shared reason once).

    ``verdict.compare_rules`` gives one reason per rule ("wd: S = sum lr_t*wd < 3 at an optimum; mup: S = ...");
    the same reason for several rules becomes one line that names them ("... (wd, mup)", "(every rule)")."""
    head, sep, why = sentence.partition(" Why inconclusive: ")
    if not sep:
        return sentence, []
    by_reason: dict[str, list[str]] = {}
    for part in why.rstrip(".").split("; "):
        rule, colon, reason = part.partition(": ")
        if colon and rule in rules:
            by_reason.setdefault(reason, []).append(rule)
        else:
            by_reason.setdefault(part, [])
    out = []
    for reason, who in by_reason.items():
        if not who:
            out.append(reason)
        else:
            out.append(f"{reason} ({'every rule' if set(who) == set(rules) and len(who) > 1 else ', '.join(who)})")
    return head, out


st.title("The regime decides the rule")
st.markdown(
    "Fan et al.'s λ ∝ √d comes from LLaMA-style LM pretraining: about **one pass** over the data with a decaying "
    "lr. Over **many epochs** of a finite set, Wang & Aitchison find the AdamW timescale τ = 1/(ηλ) fixed in "
    "epochs transfers, i.e. λ ∝ d under μP's η ∝ 1/d. Here the same model is measured in both. torch's AdamW "
    "decays by η·λ per step; S = Σₜ ηₜ·λ counts the schedule (≥ 3 is steady state).")


@st.cache_data(show_spinner="reading the reference studies")
def _load():
    return gallery.reference_regimes()


@st.cache_data(show_spinner="fitting the law on the reference studies ...")
def _laws() -> dict:
    return gallery.gallery_laws(n_boot=300)


studies, missing = _load()
if missing:
    st.caption("Not in this checkout: " + ", ".join(missing) + " (build: `wdscale study --preset lm` / "
               "`--preset lm-epochs`, or `python scripts/build_tf_gallery.py`).")
if not studies:
    st.info("No reference study to compare yet.")
    st.stop()
names = [s["name"] for s in studies]
pick = st.multiselect("Studies", names, default=names, key="rg_pick")
sel = [s for s in studies if s["name"] in pick]
for s in sel:
    head, why = split_reasons(s["sentence"], s["rules"])
    st.markdown(f"**{md_escape(s['name'])}** ({md_escape(s['regime'])}): {md_escape(head)}" +
                (f" Why inconclusive: {md_escape('; '.join(why))}." if why else ""))
    if s.get("fitted"):
        f = s["fitted"]
        st.caption(f"fitted rule λ ∝ d^{f['b']:+.2f}: drift {f['drift']:+.2f}; "
                   f"{'at least as good as' if f['at_least_as_good'] else 'worse than'} the best named rule "
                   f"({f['best_named']}).")
_ui.show(plots.regime_drift_plot(sel), "regime_drift")
_ui.show(plots.regime_alpha_plot(sel), "regime_alpha")
st.caption("α reads σ_top's width exponent through the paper's √(η/λ) law (λ exponent 2α − 1): where the measured "
           "b is not ½ (below) the `fitted` rule's e/b̂ replaces it.")
st.dataframe(regimes.regime_rows(sel), hide_index=True, width="stretch")

st.subheader("The law behind it: σ_top ∝ η^a·λ^−b, measured")
st.markdown("Fan et al.'s derivation assumes σ_top ∝ √(η/λ) (a = b = ½): decay balancing a random walk. Here a and "
            "b are fitted apart per matrix class (log σ_top on log η and log λ of the class, one intercept per width, "
            "runs at S ≥ 3 counted once, bootstrap 95% CIs); the λ exponent of the `fitted` rule is e/b̂.")
laws = {n: lw for n, lw in _laws().items() if n in pick}
if laws:
    st.markdown(f"**{md_escape(law.where_law_holds(laws))}**")
    st.dataframe(law.law_rows(laws), hide_index=True, width="stretch")
    for lw in laws.values():
        st.caption(md_escape(lw["sentence"]))
    st.caption("The same fit through the schedule (a, b at each spectra snapshot, cosine decay vs constant lr): "
               "docs/law.md.")
else:
    st.caption("No reference study with a measured law among those picked.")
