"""`jiaoying engine run`: the dispatcher and escalation loops on the configured database, without HTTP.

Run one next to `jiaoying serve`, or several on one database, on one machine or many: deadlines and
deliveries are claimed in the store, so each fires or goes out once. Every process registers and beats
in the store (alerting.liveness): a live process's claims are never taken, and a dead one's are taken
over at once on its own machine, or once its heartbeat is stale from anywhere else.

    python -m config.engine_process run --sandbox-devices
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Annotated

import structlog
import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.markup import escape
from sqlalchemy.engine import make_url

from alerting.deliver.port import Channel
from alerting.model.domain import ChannelKind
from channels.sandbox import SandboxChannel
from config.logging import configure_logging
from config.metrics_port import serving_metrics
from config.settings import Settings
from config.startup import refuse_bad_settings, refuse_weak_secret, warn_unknown_variables
from config.wiring import AssembledEngine, build_engine
from escalation.policy.rules import load_policy

log = structlog.get_logger()
err = Console(stderr=True)

engine_app = typer.Typer(
    help="Run the engine's loops without the HTTP API.", no_args_is_help=True, rich_markup_mode="rich"
)


async def run_engine(
    settings: Settings,
    *,
    stop_event: asyncio.Event,
    sandbox_devices: bool = False,
    poll_s: float = 1.0,
    claim_batch: int | None = None,
    metrics_at: tuple[str, int] | None = None,
    on_ready: Callable[[AssembledEngine], None] = lambda _: None,
) -> None:
    """Resume what was in flight, then dispatch and escalate until `stop_event` is set; stop cleanly.
    With `metrics_at` (host, port) the process's own figures are served there meanwhile."""
    channels: dict[ChannelKind, Channel] = {}
    if sandbox_devices:
        channels[ChannelKind.DEVICE] = SandboxChannel(ChannelKind.DEVICE)
    policy = await asyncio.to_thread(load_policy, settings.policy_file)
    engine = build_engine(settings, policy=policy, channels=channels)
    if claim_batch is not None:
        engine.dispatcher.batch_size = claim_batch
        engine.escalation.batch_size = claim_batch
    try:
        await engine.db.upgrade()
        await engine.start(poll_s=poll_s)
        log.info(
            "engine.running",
            owner=engine.escalation.owner,
            database=make_url(settings.database_url).render_as_string(hide_password=True),
            sandbox=[k.value for k, c in engine.channels.items() if c.sandbox],
        )
        async with contextlib.AsyncExitStack() as serving:
            if metrics_at is not None:
                await serving.enter_async_context(serving_metrics(engine, *metrics_at))
            on_ready(engine)
            await stop_event.wait()
        log.info("engine.stopping", owner=engine.escalation.owner)
    finally:
        await engine.stop()


async def _until_signalled(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)


@engine_app.callback()
def _group() -> None:
    """Run the engine's loops without the HTTP API."""


@engine_app.command("run")
def run_command(
    sandbox_devices: Annotated[
        bool,
        typer.Option(
            "--sandbox-devices",
            help="sirens over a sandbox channel instead of MQTT: no broker needed, and no siren sounds (drills, tests)",
        ),
    ] = False,
    poll: Annotated[float, typer.Option(min=0.05, help="seconds between looks at the store when idle")] = 1.0,
    claim_batch: Annotated[
        int | None, typer.Option(min=1, help="deadlines and deliveries this process claims at a time")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="serve this process's own Prometheus figures (broker link, breakers) on this port"
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="where --metrics-port listens: keep it off the public network (it has no key)")
    ] = "127.0.0.1",
) -> None:
    """Dispatch and escalate on the configured database until SIGTERM or Ctrl-C.

    Example: [bold]JIAOYING_DATABASE_URL=postgresql+asyncpg://jy@db/jiaoying jiaoying engine run[/]
    """
    try:
        settings = Settings()
    except (ValidationError, SettingsError) as exc:
        refuse_bad_settings(exc, err)
    configure_logging(settings.log_level)
    warn_unknown_variables(os.environ, err)
    refuse_weak_secret(settings, err)

    def ready(engine: AssembledEngine) -> None:
        err.print(f"[bold green]engine running[/] as {engine.escalation.owner}; SIGTERM or Ctrl-C stops it")

    async def main(stop: asyncio.Event) -> None:
        await run_engine(
            settings,
            stop_event=stop,
            sandbox_devices=sandbox_devices,
            poll_s=poll,
            claim_batch=claim_batch,
            metrics_at=None if metrics_port is None else (metrics_host, metrics_port),
            on_ready=ready,
        )

    try:
        asyncio.run(_until_signalled(main))
    except (ValueError, OSError) as exc:  # bad settings or policy, a port in use: one clear line
        err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)  # a path stays one piece
        raise typer.Exit(2) from None


if __name__ == "__main__":
    engine_app()
