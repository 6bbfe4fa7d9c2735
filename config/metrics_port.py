"""`engine run --metrics-port`: this engine process's own figures (its circuit breakers and its connection to the
broker) on a port of its own, for Prometheus to scrape next to `serve`'s /metrics. The county-wide figures are the
store's and come from /metrics; what is here only this process knows. Plain HTTP without a key, so it binds
127.0.0.1 unless told otherwise: scrape it from the same host or over a private network, never the public one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry, start_http_server

from alerting.deliver.link import links_of
from alerting.views.process_metrics import ProcessCollector
from config.wiring import AssembledEngine

log = structlog.get_logger()


@contextlib.asynccontextmanager
async def serving_metrics(engine: AssembledEngine, host: str, port: int) -> AsyncIterator[WSGIServer]:
    """Serve `engine`'s figures at http://host:port/metrics until the block ends."""
    registry = CollectorRegistry(auto_describe=True)
    breakers = {k.value: b for k, b in engine.dispatcher.breakers.items()}
    registry.register(ProcessCollector(breakers, links_of(engine.channels)))
    # prometheus_client serves from a thread of its own; binding and stopping it block, so off the loop
    server, _ = await asyncio.to_thread(start_http_server, port, host, registry)
    log.info("engine.metrics", url=f"http://{host}:{server.server_port}/metrics")
    try:
        yield server
    finally:
        await asyncio.to_thread(server.shutdown)
        server.server_close()
