"""Tour: the argument in eight steps, for a talk or a class (data and figures: wdscale.show.tour).

The step lives in the URL (``?step=4``) so a slide can link straight to it; ``?present=1`` is presenter mode
(sidebar hidden, large type, figures sized for a projector).  The whole tour downloads as one HTML file."""
import html
import time

import streamlit as st

from pages import _ui
from wdscale.science import gallery
from wdscale.show import tour
from wdscale.core.errors import BadInput, StoreError

N = tour.N_STEPS
MINE = "my runs (the demo)"


def _step_from_url() -> int:
    try:
        return min(N, max(1, int(st.query_params.get("step", 1))))
    except (TypeError, ValueError):
        return 1


def _go(n: int) -> None:
    st.query_params["step"] = str(n)


def _toggle_present() -> None:
    if st.session_state.get("tour_present"):
        st.query_params["present"] = "1"
    else:
        st.query_params.pop("present", None)


@st.cache_data(show_spinner="computing the live steps with torch's AdamW…")
def _live() -> dict:
    t0 = time.perf_counter()
    out = {"update_rms": tour.live_update_rms(), "settling": tour.live_norm_settling()}
    out["seconds"] = time.perf_counter() - t0
    return out


@st.cache_resource(show_spinner="reading the study…", max_entries=8)
def _data(source: str, stamp: int):
    if source == MINE:
        return tour.load(store=_ui.store())
    return tour.load(study=source, gallery_root=str(gallery.gallery_dir()))


@st.cache_resource(show_spinner=False, max_entries=64)
def _step(source: str, stamp: int, n: int) -> dict:
    return tour.build_step(n, _data(source, stamp), _live(), gallery_root=str(gallery.gallery_dir()))


@st.cache_data(show_spinner=False, max_entries=4)
def _html(source: str, stamp: int) -> bytes:
    data = _data(source, stamp)
    all_steps = [_step(source, stamp, n) for n in range(1, N + 1)]
    return tour.tour_html(all_steps, data["label"]).encode()


step = _step_from_url()
present = st.query_params.get("present") == "1"
st.session_state["tour_present"] = present

# -- data: a reference study (instant) or the user's store --------------------------------------------------
refs = gallery.names()
opts = refs + [MINE]
default = tour.DEFAULT_STUDY if tour.DEFAULT_STUDY in refs else opts[0]
source = st.session_state.get("tour_source", default)
source = source if source in opts else default
if not present:
    source = st.sidebar.selectbox("Data", opts, index=opts.index(source), key="tour_source_pick",
                                  format_func=lambda s: s if s == MINE else f"reference study: {s}",
                                  help="reference studies ship with wdscale: nothing to train. 'my runs' reads the "
                                       "demo from your store (Home → Run the demo).")
st.session_state["tour_source"] = source
stamp = len(_ui.store().records(check=False)) if source == MINE else 0  # a finished demo is new data

if present:  # sidebar and Streamlit's header hidden, large type: for a projector
    st.markdown("<style>[data-testid='stSidebar'],[data-testid='stSidebarCollapsedControl'],"
                "[data-testid='stHeader']{display:none}"
                "[data-testid='stMainBlockContainer']{padding-top:1.5rem;max-width:100%}"
                "[data-testid='stMarkdownContainer'] p,[data-testid='stMarkdownContainer'] li{font-size:1.55rem;"
                "line-height:1.4}.tour-formula{font-size:2.1rem!important}h1{font-size:2.8rem!important}</style>",
                unsafe_allow_html=True)

head, tog = st.columns([4, 1])
with head:
    st.title(f"{step}. {tour.TITLES[step - 1]}")
with tog:
    st.toggle("Presenter mode", key="tour_present", on_change=_toggle_present,
              help="sidebar hidden, large type, figures sized for a projector (also ?present=1 in the URL)")

try:
    s = _step(source, stamp, step)
except (ValueError, StoreError, BadInput) as e:
    st.error(str(e))
    st.stop()

st.markdown(f"<div class='tour-formula' style='font-family:serif;font-size:1.35rem;background:#f2f5f9;"
            f"padding:.4em .8em;border-radius:4px'>{html.escape(s['formula'])}</div>", unsafe_allow_html=True)
st.markdown(s["text"])
if step == 4:  # the formula is the paper's a = b = 1/2; say what this study measured (step 3)
    from wdscale.science.law import holds

    p = (tour.study_law(_data(source, stamp)).get("pooled") or {})
    if holds(p) is not None:
        st.caption(f"The formula is Fan et al.'s √(η/λ) law (a = b = ½). Measured on this study (step 3, all hidden "
                   f"matrices pooled, S ≥ 3): σ_top ∝ η^{p['a']:.2f}·λ^−{p['b']:.2f}, "
                   + ("within 0.1 of ½: the law holds here." if holds(p) else
                      "not √(η/λ): with η ∝ 1/d, λ fixed, σ_top ∝ d^(γ−a), and step 5's rule uses the measured b."))
for line in s.get("lines", []):
    st.markdown(f"- {line}")
fig = tour.presenter(s["fig"]) if present else s["fig"]
# theme=None in presenter mode: Streamlit's chart theme would override the projector-sized fonts
st.plotly_chart(fig, width="stretch", config=_ui.PLOT_CONFIG, key=f"tour_fig_{step}",
                theme=None if present else "streamlit")
st.markdown(f"**Look at:** {s['look']}")
if step <= 2:
    st.caption(f"Computed live on this machine with torch's AdamW ({_live()['seconds']:.1f} s for steps 1 and 2).")
else:
    st.caption(f"Data: {_data(source, stamp)['label']}.")

prev, mid, nxt = st.columns([1, 4, 1])
prev.button("← Previous", key="tour_prev", disabled=step == 1, on_click=_go, args=(step - 1,), width="stretch")
nxt.button("Next →", key="tour_next", disabled=step == N, on_click=_go, args=(step + 1,), width="stretch",
           type="primary")
mid.progress(step / N, text=f"step {step} of {N} · link to this step: ?step={step}")

if not present:
    st.divider()
    st.download_button("Download the whole tour (one HTML file, works offline)", data=lambda: _html(source, stamp),
                       file_name=f"wdscale-tour-{source.split()[0]}.html", mime="text/html", on_click="ignore",
                       key="tour_download", icon=":material/download:",
                       help="every figure interactive, plotly.js inlined once, nothing fetched from the network; "
                            "also `wdscale tour --out tour.html`")
