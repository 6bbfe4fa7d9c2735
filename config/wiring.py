"""Wiring: settings in, a running engine out. The one place that knows every package."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # APScheduler 3 ships no types

from alerting.answer.acks import AckService
from alerting.answer.inbound import Inbound
from alerting.audit import configured
from alerting.audit.checkpoints import Checkpointer, CheckpointFileError, checkpoint_file
from alerting.audit.keys import Keyring
from alerting.deliver.breaker import CircuitBreaker
from alerting.deliver.compose import Composer
from alerting.deliver.dispatcher import Dispatcher
from alerting.deliver.link import links_of
from alerting.deliver.port import Channel
from alerting.deliver.tokens import TokenSigner
from alerting.issue.alerts import AlertService
from alerting.issue.once import forget_expired
from alerting.model.clock import Clock, SystemClock
from alerting.model.domain import ChannelKind
from alerting.model.plan import Planner
from alerting.people.accounts import AccountService
from alerting.people.liveness import ProcessRegistry
from alerting.store.db import Database
from alerting.web.core import ChannelInfo, Core
from channels.mqtt.broker import EmbeddedBroker
from channels.mqtt.devices import MqttDeviceChannel, engine_client_id
from channels.sandbox import SandboxChannel
from channels.sim.simulation import AnswerSimulator
from config.channels import complete, device_channel, provider_channels
from config.directory.importer import FileImporter
from config.settings import Settings
from escalation.engine import EscalationEngine
from escalation.help import HelpEscalation
from escalation.policy.rules import PolicySet, load_policy

log = structlog.get_logger()


def api_keys(settings: Settings) -> dict[str, str]:
    keys: dict[str, str] = {}
    for item in settings.api_keys:
        key, _, grant = item.partition(":")
        role, _, unit = grant.partition(":")
        if role not in ("duty", "township", "auditor", "admin") or not key or (role == "township") != bool(unit):
            raise ValueError(
                f"JIAOYING_API_KEYS: '{key[:4]}…' needs the form key:role with role duty|auditor|admin, "
                "or key:township:<unit code>"
            )
        keys[key] = grant
    return keys


def audit_setup(settings: Settings) -> configured.AuditSetup:
    """The audit's keys and checkpoint file as settings give them."""
    current = settings.audit_key.get_secret_value() if settings.audit_key else None
    keyring = Keyring.from_secrets(current, [k.get_secret_value() for k in settings.audit_keys])
    location = settings.audit_checkpoints
    return configured.AuditSetup(keyring, checkpoint_file(location) if location is not None else None)


@dataclass
class AssembledEngine:
    """The whole engine as settings wire it: the core, its loops (dispatcher, escalation), its channels and broker.

    Not the escalation loop (escalation.engine.EscalationEngine) and not a SQLAlchemy engine (alerting.store.db).
    """

    settings: Settings
    core: Core
    dispatcher: Dispatcher
    escalation: EscalationEngine
    inbound: Inbound
    channels: dict[ChannelKind, Channel]
    registry: ProcessRegistry
    broker: EmbeddedBroker | None = None
    scheduler: AsyncIOScheduler | None = None
    checkpointer: Checkpointer | None = None  # the audit chain's end, written outside the database
    _started: bool = field(default=False, repr=False)
    _planning: asyncio.Task[int] | None = field(default=None, repr=False)

    @property
    def db(self) -> Database:
        return self.core.db

    @property
    def clock(self) -> Clock:
        return self.core.clock

    @property
    def alerts(self) -> AlertService:
        return self.core.alerts

    @property
    def acks(self) -> AckService:
        return self.core.acks

    def wake(self) -> None:
        self.dispatcher.wake()
        self.escalation.wake()

    async def start(self, *, loops: bool = True, poll_s: float = 1.0) -> None:
        """Resume what was in flight, connect channels, start the loops. `loops=False` leaves driving to the caller."""
        configured.current().keyring.signer()  # an engine that cannot sign its audit writes nothing: refuse now
        if self.broker is not None:
            await self.broker.start()
        if self.checkpointer is not None:  # a checkpoint file that cannot be written is found now, not in a storm
            await self.checkpointer.write()
        await self.registry.register()  # first: the slot names the MQTT client, and claims need a live owner
        self._name_mqtt_clients()
        self.registry.on_slot_changed = self._slot_changed
        for channel in self.channels.values():
            await channel.start(self.inbound)
        await self.dispatcher.resume()
        await self.escalation.claims.resume()
        if loops:  # the grid workers of an alert whose issuing process died mid-way, planned alongside sending
            self._planning = asyncio.create_task(self.alerts.resume_planning(), name="resume-planning")
        else:
            await self.alerts.resume_planning()
        sandboxed = [k.value for k, c in self.channels.items() if c.sandbox]
        if sandboxed:
            log.warning(
                "channels.sandbox",
                channels=sandboxed,
                note="these channels only record what they would send; nobody is reached through them",
            )
        if loops:
            self.dispatcher.idle_poll_s = poll_s
            self.dispatcher.start()
            self.escalation.start(poll_s, hold=self._inbound_caught_up, grace_s=self.settings.startup_grace_s)
            # APScheduler is only a heartbeat: the deadlines themselves live in the database
            self.scheduler = AsyncIOScheduler(timezone="UTC")
            self.scheduler.add_job(
                self.wake, "interval", seconds=5, misfire_grace_time=30, coalesce=True, max_instances=1, id="wake"
            )
            if self.checkpointer is not None:  # within seconds of an alert issued or ended, else once a minute
                self.scheduler.add_job(
                    self.checkpointer.tick, "interval", seconds=5, coalesce=True, max_instances=1, id="checkpoint"
                )
            self.scheduler.add_job(
                self._forget_keys, "interval", hours=1, coalesce=True, max_instances=1, id="forget-keys"
            )
            self.scheduler.start()
            # every beat also takes over what runs found dead meanwhile left behind
            self.registry.on_beat = [self.dispatcher.resume, self.escalation.claims.release_dead_claims]
            self.registry.start()
        self._started = True

    async def _forget_keys(self) -> None:
        """Idempotency keys past their day: a maintenance chore, so a failure is logged and tried next hour."""
        try:
            await forget_expired(self.db, self.clock.now())
        except Exception:
            log.exception("alert.keys_forget_failed")

    async def _inbound_caught_up(self) -> None:
        """Until every device channel has taken in what its broker kept for us (the escalation holds till then)."""
        channels = [c for c in self.channels.values() if isinstance(c, MqttDeviceChannel)]
        await asyncio.gather(*(c.wait_caught_up() for c in channels))

    def _derived_mqtt_clients(self) -> list[MqttDeviceChannel]:
        derived = self.settings.mqtt_client_id is None
        return [c for c in self.channels.values() if isinstance(c, MqttDeviceChannel) and derived]

    def _name_mqtt_clients(self) -> None:
        for channel in self._derived_mqtt_clients():
            channel.client_id = engine_client_id(self.registry.slot_name)

    async def _slot_changed(self, _slot: int) -> None:
        """Registered again in another slot (this process hung and was found dead): the old client id may be
        a successor's now, and two clients with one id would push each other off the broker."""
        for channel in self._derived_mqtt_clients():
            await channel.close()
            channel.client_id = engine_client_id(self.registry.slot_name)
            await channel.start(self.inbound)

    async def settle(self, rounds: int = 50) -> None:
        """Run every due escalation step and send everything due, until nothing is left to do now."""
        for _ in range(rounds):
            fired = await self.escalation.run_due()
            sent = await self.dispatcher.drain()
            if not fired and not sent:
                return

    async def stop(self) -> None:
        if self._planning is not None:
            self._planning.cancel()
            await asyncio.gather(self._planning, return_exceptions=True)
            self._planning = None
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        await self.dispatcher.stop()
        await self.escalation.stop()
        with contextlib.suppress(Exception):  # unable to say goodbye: the heartbeat ages and says it instead
            await self.registry.stop()
        if self.checkpointer is not None and self._started:
            try:  # the chain's end as this process leaves it
                await self.checkpointer.write()
            except CheckpointFileError as exc:
                log.error("audit.checkpoint_failed", path=str(self.checkpointer.path), error=str(exc))
        for channel in self.channels.values():
            with contextlib.suppress(Exception):
                await channel.close()
        if self.broker is not None:
            await self.broker.stop()
        await self.db.close()


def build_engine(
    settings: Settings,
    *,
    clock: Clock | None = None,
    policy: PolicySet | None = None,
    channels: Mapping[ChannelKind, Channel] | None = None,
    simulator: AnswerSimulator | None = None,
    embedded_broker: EmbeddedBroker | None = None,
) -> AssembledEngine:
    """Everything from settings. Channels not given and not configured are sandboxes (said loudly at start)."""
    clock = clock or SystemClock()
    setup = audit_setup(settings)
    configured.install(setup)  # before anything can write: every audit append signs with it
    db = Database(settings.database_url)
    given: dict[ChannelKind, Channel] = {**provider_channels(settings, clock), **(channels or {})}
    broker = embedded_broker
    if ChannelKind.DEVICE not in given:
        given[ChannelKind.DEVICE], default_broker = device_channel(settings, clock)
        broker = broker or default_broker
    chosen = complete(given, simulator)
    signer = TokenSigner(
        settings.secret_key.get_secret_value().encode(), ttl=timedelta(hours=settings.ack_token_ttl_hours)
    )
    registry = ProcessRegistry(db, clock, settings.node)
    dispatcher = Dispatcher(db, clock, chosen, Composer(signer, settings.public_url, clock), registry=registry)
    escalation = EscalationEngine(
        db, clock, owner=f"escalation/{registry.owner}", registry=registry, on_sent=dispatcher.wake
    )
    dispatcher.on_exhausted = escalation.wake
    chosen_policy = policy or load_policy(settings.policy_file)
    core, inbound = _core(settings, db, clock, chosen_policy, chosen, signer, dispatcher.wake, dispatcher.breakers)
    signing = setup.keyring.signing
    checkpointer = (
        Checkpointer(db, clock, setup.checkpoints, signing) if setup.checkpoints is not None and signing else None
    )
    return AssembledEngine(
        settings, core, dispatcher, escalation, inbound, chosen, registry, broker, checkpointer=checkpointer
    )


def web_core(engine: AssembledEngine, wake: Callable[[], None]) -> Core:
    """The services of `engine` again, on a store connection of their own, for a web server whose event loop
    is not the engine's: the same channels, keys, signer and policy; `wake` reaches the engine's loop."""
    db = Database(engine.settings.database_url)
    policy = engine.alerts.planner
    breakers = engine.dispatcher.breakers  # read for /healthz only
    core, _ = _core(engine.settings, db, engine.clock, policy, engine.channels, engine.core.signer, wake, breakers)
    return core


def _core(
    settings: Settings,
    db: Database,
    clock: Clock,
    policy: Planner,
    chosen: Mapping[ChannelKind, Channel],
    signer: TokenSigner,
    wake: Callable[[], None],
    breakers: Mapping[ChannelKind, CircuitBreaker],
) -> tuple[Core, Inbound]:
    acks = AckService(db, on_help=HelpEscalation(db, clock, wake=wake))
    inbound = Inbound(
        db, acks, clock=clock, wake=wake, resend_window=timedelta(seconds=settings.device_resend_window_s)
    )
    core = Core(
        db=db,
        clock=clock,
        alerts=AlertService(db, clock, policy, wake=wake),
        acks=acks,
        signer=signer,
        accounts=AccountService(db, clock),
        api_keys=api_keys(settings),
        channels=[ChannelInfo(k.value, c.provider, c.sandbox) for k, c in chosen.items()],
        public_url=settings.public_url,
        inbound=inbound,
        webhooks={w.name: w for c in chosen.values() for w in c.webhooks},
        breakers={k.value: b for k, b in breakers.items()},
        links=links_of(chosen),
        directory=FileImporter(db, clock),
        outboxes=[c for c in chosen.values() if isinstance(c, SandboxChannel)],  # what the sandboxes recorded
        cap_mapping=settings.cap_mapping,
        cap_identity=settings.cap_identity(),
        duty_phone=settings.duty_phone,
    )
    return core, inbound
