"""Outside programs some tests drive (headless Chromium, Debian's GDAL tools), found or required.

Locally a missing program skips the tests that need it. Under CI
(``RASTERFLOW_REQUIRE_TOOLS=1``, set by .ci/run, which installs them) it fails
them: a skipped test proves nothing.
"""

from __future__ import annotations

import os
import shutil

import pytest


def tool(*names: str, why: str) -> str:
    """The path of the first of ``names`` on PATH; else skip (or fail under CI) saying ``why``."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    message = f"no {' or '.join(names)} on PATH ({why})"
    if os.environ.get("RASTERFLOW_REQUIRE_TOOLS") == "1":
        pytest.fail(message + "; .ci/run installs it")
    pytest.skip(message)


def chromium() -> str:
    return tool("chromium", "chromium-browser", why="apt-get install chromium, to take screenshots")
