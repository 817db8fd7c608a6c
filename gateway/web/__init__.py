"""The dashboard's static files: HTML pages, their JavaScript and CSS, served by the
status API's listener (gateway/api.py). The pages fetch the JSON API; nothing here
reads the database.

vendor/ holds the charting library (uPlot from npm), copied in by `make web` and
shipped in the wheel; it is not committed. Without it the pages still load and say
that the charts are missing.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENDOR = ROOT / "vendor"
# The files `make web` copies from node_modules/uplot/dist into vendor/.
CHART_FILES = ("uPlot.iife.min.js", "uPlot.min.css")

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_NAME = re.compile(r"^(vendor/)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.(html|js|css|svg)$")


def asset(name: str) -> tuple[bytes, str] | None:
    """(content, content type) of a static file by its name under web/, or None.

    Only plain names (optionally under vendor/) with a known suffix: no path walks."""
    if not _NAME.match(name):
        return None
    path = ROOT / name
    if not path.is_file():
        return None
    return path.read_bytes(), _TYPES[path.suffix]


def charts_missing() -> list[str]:
    """The chart library's files that `make web` has not copied in."""
    return [n for n in CHART_FILES if not (VENDOR / n).is_file()]
