"""GET /metrics: Prometheus text for whoever keeps jiaoying running, behind a county-wide API key (duty, auditor or
admin; a scrape config's bearer token), never public: a township key gets 403, as the numbers are the county's.

The county-wide figures come from the store at each scrape (views.metrics); what only this process sees — the
providers' circuit breakers, its connection to the broker, and the webhooks it refused — is counted here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from alerting.model.access import AccountRole, Principal
from alerting.views.metrics import StoreFigures, store_figures
from alerting.views.process_metrics import process_families
from alerting.web.api.auth import CoreDep, require
from alerting.web.core import Core

router = APIRouter(tags=["operations"])

# this process's own counts; the store's figures are added per scrape
PROCESS = CollectorRegistry(auto_describe=True)
WEBHOOKS_REFUSED = Counter(
    "jiaoying_webhooks_refused",
    "Provider callbacks refused by this process (403: a bad signature), by provider and status",
    ["provider", "status"],
    registry=PROCESS,
)


class _Scrape(Collector):
    """One scrape's figures as metric families."""

    def __init__(self, figures: StoreFigures, core: Core) -> None:
        self.figures, self.core = figures, core

    def collect(self) -> Iterator[Metric]:
        f = self.figures
        yield _gauge(
            "jiaoying_deliveries",
            "Deliveries of the active alerts, by channel and state",
            ["channel", "state"],
            {k: float(n) for k, n in f.deliveries.items()},
        )
        for name, doc, attr in (
            ("jiaoying_queue_due", "Deliveries due now and not yet claimed, by channel", "due"),
            ("jiaoying_queue_later", "Deliveries waiting for a retry or their time, by channel", "later"),
            ("jiaoying_queue_claimed", "Deliveries claimed by a dispatcher, not handed over yet", "claimed"),
            (
                "jiaoying_queue_at_provider",
                "Deliveries handed to their provider, outcome not recorded yet",
                "at_provider",
            ),
            ("jiaoying_queue_oldest_due_seconds", "How long the oldest due delivery has waited", "oldest_due_s"),
        ):
            yield _gauge(name, doc, ["channel"], {(c,): float(getattr(q, attr)) for c, q in f.queue.items()})
        yield _gauge(
            "jiaoying_answers",
            "Counted answers to the active alerts, by channel",
            ["channel"],
            {(c,): float(n) for c, n in f.answers.items()},
        )
        per_alert = {(str(i), a.level): a for i, a in f.alerts.items()}
        yield _gauge(
            "jiaoying_open_loops",
            "Targets of each active alert with no answer yet",
            ["alert", "level"],
            {k: float(a.open_targets) for k, a in per_alert.items()},
        )
        yield _gauge(
            "jiaoying_targets",
            "Targets of each active alert",
            ["alert", "level"],
            {k: float(a.targets) for k, a in per_alert.items()},
        )
        yield _gauge(
            "jiaoying_first_send_seconds",
            "From issuing each active alert to its first delivery handed to a provider",
            ["alert", "level"],
            {k: a.first_send_s for k, a in per_alert.items() if a.first_send_s is not None},
        )
        answer = GaugeMetricFamily(
            "jiaoying_answer_seconds",
            "From issuing each active alert to its answers: median and 90th percentile",
            labels=["alert", "level", "quantile"],
        )
        for (alert, level), a in per_alert.items():
            for q, v in (("0.5", a.answer_median_s), ("0.9", a.answer_p90_s)):
                if v is not None:
                    answer.add_metric([alert, level, q], v)
        yield answer
        yield _gauge(
            "jiaoying_deadline_lag_seconds",
            "How overdue the most overdue escalation step is",
            [],
            {(): f.deadline_lag_s},
        )
        if f.checkpoint_age_s is not None:
            yield _gauge(
                "jiaoying_audit_checkpoint_age_seconds",
                "Since the newest audit checkpoint outside the database",
                [],
                {(): f.checkpoint_age_s},
            )
        yield from process_families(self.core.breakers, self.core.links)


def _gauge(name: str, doc: str, labels: list[str], samples: dict[tuple[str, ...], float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in sorted(samples.items()):
        family.add_metric(list(key), value)
    return family


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics (a duty, auditor or admin key)",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(
    core: CoreDep, _: Annotated[Principal, Depends(require(AccountRole.DUTY, AccountRole.AUDITOR, AccountRole.ADMIN))]
) -> Response:
    figures = await store_figures(core.db, core.clock.now())
    scrape = CollectorRegistry(auto_describe=True)
    scrape.register(_Scrape(figures, core))
    body = generate_latest(scrape) + generate_latest(PROCESS)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
