"""The app's alert reports (views.report.cache), shared by the API and the console."""

from __future__ import annotations

from starlette.requests import Request

from alerting.views.report.cache import Reports


def reports(request: Request) -> Reports:
    """Made on the app's first report view and kept on its state: one cache per app, as the app has one store."""
    found: Reports | None = getattr(request.app.state, "reports", None)
    if found is None:  # no await between the look and the set: two first views cannot make two caches
        found = request.app.state.reports = Reports(request.app.state.core.db)
    return found
