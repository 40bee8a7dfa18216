"""wdscale explorer: `streamlit run app.py`.

Why AdamW's weight decay must scale with width for learning-rate transfer (Fan et al. 2025). The pages are
listed explicitly (st.navigation turns off the automatic pages/ discovery); each page is thin and draws
figures from wdscale.show.plots with data from the run store ($WDSCALE_DATA or ./runs).
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # pages import pages._ui; AppTest does not add the script folder itself
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

st.set_page_config(page_title="wdscale: weight decay vs width", page_icon=":material/straighten:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/tour.py", title="Tour", icon=":material/co_present:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/spectra.py", title="Spectra", icon=":material/show_chart:"),
    st.Page("pages/transfer.py", title="Transfer", icon=":material/target:"),
    st.Page("pages/regimes.py", title="Regimes", icon=":material/compare_arrows:"),
    st.Page("pages/scan.py", title="Which λ transfers", icon=":material/tune:", url_path="scan"),
    st.Page("pages/steady_state.py", title="Steady state", icon=":material/balance:"),
    st.Page("pages/diagnostics.py", title="Diagnostics", icon=":material/troubleshoot:"),
    st.Page("pages/inspect.py", title="Inspect your model", icon=":material/biotech:"),
    st.Page("pages/runs.py", title="Runs & export", icon=":material/folder_open:"),
]

st.navigation(PAGES).run()
