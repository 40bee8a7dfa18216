"""What every real-browser test needs first: Debian's chromium (skip without it, fail in CI where
WDSCALE_REQUIRE_BROWSER=1) and docs/screenshots.py's server, launcher and flows (shared with the bench)."""
import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"

if not os.path.exists(CHROMIUM):
    if os.environ.get("WDSCALE_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"WDSCALE_REQUIRE_BROWSER=1 but {CHROMIUM} is missing")
    pytest.skip(f"{CHROMIUM} not installed", allow_module_level=True)

_spec = importlib.util.spec_from_file_location("wdscale_screenshots", ROOT / "docs" / "screenshots.py")
shots = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shots)
