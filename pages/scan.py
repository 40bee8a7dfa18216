"""Which λ transfers: the λ ∝ d^q scan a store holds (wdscale.science.scan_run.stored_scan), its figure, the
predictors' scoreboard and the recipe at a target width."""
import re

import streamlit as st

from pages import _ui
from wdscale.science import scan, scan_run
from wdscale.show import plots

_MD = re.compile(r"([\\`*_{}\[\]<>#|~$])")


def esc(text) -> str:
    """Generated text as literal Markdown (q_drift* must not open italics)."""
    return _MD.sub(r"\\\1", str(text))


def _f(x, fmt: str = "+.2f") -> str:
    return "—" if x is None else format(x, fmt)


def _ci(c) -> str:
    return "—" if not c else "[" + ", ".join("open" if v is None else f"{v:+.2f}" for v in c) + "]"


st.title("Which λ transfers")
st.markdown(
    "Three named rules are three points of one line: under μP's η ∝ 1/d, λ = λ₀·(d/d₀)^q with q = 0 (`mup`), "
    "½ (`wd`, Fan et al.) and 1 (`indep`, ηλ fixed). The scan trains the line on a grid of q at the proxy's own "
    "(η₀, λ₀) and reads two crossings off it, each with a bootstrap CI over seeds: **q_drift\\***, where the optimal "
    "η₀ stops drifting with width (the λ under which the proxy's learning rate transfers), and **q_σ\\***, where "
    "σ_top stops growing with width (the paper's mechanism: a width-invariant sublayer gain). The argument holds "
    "where the two agree.")

recs = _ui.records()  # sidebar "Data": my runs or a reference study
source = _ui.reference()


@st.cache_data(show_spinner="reading the scan (a bootstrap over seeds, a few seconds) …", max_entries=16)
def _scan(source: str | None, root: str, stamp: int) -> dict | None:
    from wdscale.science import gallery
    from wdscale.training.store import RunStore

    if source:  # cached per process: Home's column and the tour read the same numbers
        return scan_run.reference_scan(source, str(gallery.gallery_dir()))
    return scan_run.stored_scan(RunStore(root, create=False).records())


s = _scan(source, _ui.data_root(), len(recs)) if recs else None
cmd = f"wdscale scan --preset synthetic --out {_ui.data_root()}"
if s is None:
    st.info("No λ scan in this data: it needs at least two values of q (λ ∝ d^q under η ∝ 1/d, the named rules "
            "included) with two widths each, at one λ₀. Any transfer study of two named rules is a coarse one; "
            "`wdscale scan` trains the full grid (q = 0 … 1.5) and reuses the named rules' runs.")
    st.code(cmd + " --target-width 1024", language="bash")
    st.stop()

st.markdown("\n".join(f"- {esc(line)}" for line in scan_run.headline(s)))
st.caption(f"η₀ = {s['eta0']:.3g}, λ₀ = {_f(s.get('lam0'), 'g')}, d₀ = {s['base_width']}, widths "
           f"{', '.join(map(str, s['widths']))}, seeds {', '.join(map(str, s['seeds']))}; {s.get('n_runs', '?')} runs. "
           "σ_top's exponent is read at the fixed η₀ (seeds pooled); a crossing's CI is the spread of the crossing "
           "over seed resamples, drawn for both lines at once (so their gap is paired).")
_ui.show(plots.scan_figure(s), "scan_crossings")

st.subheader("The predictors' scoreboard")
st.markdown("Each predictor of q_drift\\* is computed *before* the scan, from the cheapest runs only: the proxy's "
            "η × λ grid at d₀ and one `mup` ensemble at 2·d₀. Error = predicted q − measured q_drift\\*; the "
            f"moonshot is a predictor within ±{scan.MOONSHOT:g} in every regime.")
st.dataframe([{"predictor": b["label"], "predicted q": b["q"], "error vs q_drift*": b["error"]}
              for b in s["scoreboard"]], hide_index=True, width="stretch")
if s.get("closest"):
    near = s.get("within_moonshot") or []
    st.caption(f"Closest: {esc(s['closest'])}; " + (f"within ±{scan.MOONSHOT:g}: {esc(', '.join(near))}." if near
                                                     else f"none within ±{scan.MOONSHOT:g}."))
else:
    st.caption("No error to score: q_drift\\* is not inside the grid" +
               ("" if s.get("q_drift") is not None else " (" + esc(s["q_drift_reason"]) + ")") + ".")
if not any(b["q"] is not None for b in s["scoreboard"][:2]):
    st.caption("The paper's recipe and the measured law need the proxy's η × λ grid in the store (`wdscale scan` "
               "trains it); only the two constant predictors are scored here.")

st.subheader("Per q")
st.dataframe([{"q": r["q"], "rule": r["rule"], "drift (oct/doubling)": r["drift"], "95% CI": _ci(r["drift_ci"]),
               "verdict": r["verdict"], "σ_top ∝ d^": r["sigma_exponent"], "σ 95% CI": _ci(r["sigma_exponent_ci"]),
               "drift per width pair": "; ".join(f"{p['widths'][0]}→{p['widths'][1]}: {_f(p['drift'])} "
                                                 f"{_ci(p['drift_ci'])}" for p in r["pair_drifts"])}
              for r in s["rows"]], hide_index=True, width="stretch")
st.caption("The drift per width pair says whether it fades with width: a crossing found at small widths may move.")

st.subheader("The recipe at a target width")
D = st.number_input("Target width D", min_value=1, max_value=1 << 20, value=max(s["widths"]) * 4, step=64,
                    key="scan_target")
if s.get("lam0"):
    r = scan.recipe(s["eta0"], s["lam0"], s["base_width"], int(D), s["q_drift"], s["q_drift_ci"], max(s["widths"]))
    (st.warning if r["extrapolates"] or r["lam"] is None else st.success)(esc(r["sentence"]))
st.markdown("Run or extend a scan headless (cached like every sweep: the named rules' runs are reused):")
st.code(f"{cmd} --target-width {int(D)}", language="bash")
