"""Screenshots the browser tests leave behind as artifacts (test-artifacts/, not committed)."""

from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import Page

ARTIFACTS = Path(os.environ.get("JIAOYING_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact; returns its path."""
    path = ARTIFACTS / "screenshots" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path
