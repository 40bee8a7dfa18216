"""Regimes: the same Transformer in the paper's one-pass LM regime and in a multi-epoch control, side by side."""
import streamlit as st

from pages import _ui
from wdscale import gallery, plots, regimes

st.title("The regime decides the rule")
st.markdown(
    "Fan et al.'s λ ∝ √d comes from LLaMA-style LM pretraining: about **one pass** over the data with a decaying "
    "lr. Over **many epochs** of a finite set, Wang & Aitchison find the AdamW timescale τ = 1/(ηλ) fixed in "
    "epochs transfers, i.e. λ ∝ d under μP's η ∝ 1/d. Here the same model is measured in both. torch's AdamW "
    "decays by η·λ per step; S = Σₜ ηₜ·λ counts the schedule (≥ 3 is steady state).")


@st.cache_data(show_spinner="reading the reference studies")
def _load():
    return gallery.reference_regimes()


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
    st.markdown(f"**{s['name']}** ({s['regime']}): {s['sentence']}")
    if s.get("fitted"):
        f = s["fitted"]
        st.caption(f"fitted rule λ ∝ d^{f['b']:+.2f}: drift {f['drift']:+.2f}; "
                   f"{'at least as good as' if f['at_least_as_good'] else 'worse than'} the best named rule "
                   f"({f['best_named']}).")
_ui.show(plots.regime_drift_plot(sel), "regime_drift")
_ui.show(plots.regime_alpha_plot(sel), "regime_alpha")
st.dataframe(regimes.regime_rows(sel), hide_index=True, width="stretch")
