"""wdscale: see why AdamW's weight decay must scale with width for learning-rate transfer.

The science core (rules, models, ensemble trainer, spectra, store) imports without Streamlit.
"""
__version__ = "0.1.0"

from .rules import RULES, param_groups, resolve  # noqa: E402,F401
