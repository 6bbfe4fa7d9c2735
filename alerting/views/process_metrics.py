"""The figures only one process knows, as Prometheus families: each provider's circuit breaker and each standing
connection (the MQTT broker) as this process sees them. `serve` adds them to /metrics; `engine run --metrics-port`
serves them on a port of its own, since its connection to the broker is not the web's."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from alerting.deliver.breaker import BreakerState, CircuitBreaker
from alerting.deliver.link import REFUSALS, LinkHealth

BREAKER_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


def process_families(breakers: Mapping[str, CircuitBreaker], links: Mapping[str, LinkHealth]) -> Iterator[Metric]:
    """`breakers` and `links` by channel kind."""
    breaker = GaugeMetricFamily(
        "jiaoying_circuit_breaker",
        "Each provider's circuit as this process sees it: 0 closed, 1 half-open, 2 open",
        labels=["channel"],
    )
    for kind, b in sorted(breakers.items()):
        breaker.add_metric([kind], float(BREAKER_VALUE[b.state]))
    yield breaker
    up = GaugeMetricFamily(
        "jiaoying_link_up", "1 while this process is connected to the channel's broker, else 0", labels=["channel"]
    )
    connections = CounterMetricFamily(
        "jiaoying_link_connections",
        "Times this process connected to the channel's broker since it started (more than 1: it reconnected)",
        labels=["channel"],
    )
    rejected = CounterMetricFamily(
        "jiaoying_inbound_rejected",
        "Messages from devices this process refused, by channel and reason (malformed, too_large)",
        labels=["channel", "reason"],
    )
    for kind, link in sorted(links.items()):
        up.add_metric([kind], 1.0 if link.up else 0.0)
        connections.add_metric([kind], float(link.connections))
        for reason in REFUSALS:  # each always shown, so a rate() has a zero to start from
            rejected.add_metric([kind, reason], float(link.rejected[reason]))
    yield from (up, connections, rejected)


class ProcessCollector(Collector):
    def __init__(self, breakers: Mapping[str, CircuitBreaker], links: Mapping[str, LinkHealth]) -> None:
        self.breakers, self.links = breakers, links

    def collect(self) -> Iterator[Metric]:
        return process_families(self.breakers, self.links)
