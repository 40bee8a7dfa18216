"""wdscale: see why AdamW's weight decay must scale with width for learning-rate transfer.

The science core (rules, models, ensemble trainer, spectra, store) imports without Streamlit.  The public API is
importable from the package itself; each name loads its module on first use (module-level ``__getattr__``), so
``import wdscale`` stays cheap (no torch):

    from wdscale import param_groups, SpectralMonitor, inspect
"""
from __future__ import annotations

__version__ = "0.1.0"

# No global OpenMP setting here: PASSIVE (threads sleep while they wait) helps beside a busy process and cost 2.8x
# on an idle machine (issue 31).  The CLI chooses at start from the load it sees (wdscale.core.threads.apply).

# public name -> (module, attribute in it)
_LAZY = {
    "RULES": ("core.rules", "RULES"),
    "param_groups": ("core.rules", "param_groups"),
    "classify_model": ("core.rules", "classify_model"),
    "resolve": ("core.rules", "resolve"),
    "Resolved": ("core.rules", "Resolved"),
    "SpectralMonitor": ("training.monitor", "SpectralMonitor"),
    "inspect": ("science.inspect", "inspect"),  # checkpoints' sigma_top report (``wdscale inspect``), not the stdlib's
    "RunStore": ("training.store", "RunStore"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{mod}", __name__), attr)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
