"""A process that takes a CAP message and is SIGKILLed part-way: `python -m tests.alerting.cap.dying_import URL FILE
WHEN`, WHEN being `before-alert` (as the alert is about to be written) or `after-alert` (once it is committed).
The kill is the operating system's, so nothing of the process's own clean-up runs."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from alerting.audit import configured
from alerting.audit.keys import Keyring
from alerting.cap.importer import CapImporter
from alerting.issue.alerts import AlertRequest, AlertService, Issued
from alerting.model.clock import ManualClock
from alerting.store.db import Database
from config.cli.cap import CLI
from tests.harness import sandbox_engine


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def main(url: str, message: bytes, when: str) -> None:
    configured.install(configured.AuditSetup(Keyring.from_secrets(os.environ["JIAOYING_AUDIT_KEY"])))
    trigger = AlertService.trigger

    async def dying(self: AlertService, req: AlertRequest, **kwargs: Any) -> Issued:
        if when == "before-alert":
            die()
        issued = await trigger(self, req, **kwargs)
        die()
        return issued

    AlertService.trigger = dying  # type: ignore[method-assign]
    engine = sandbox_engine(Database(url), ManualClock())
    core = engine.core
    await CapImporter(core.db, core.clock, core.alerts, core.cap_mapping).take(message, CLI)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]).read_bytes(), sys.argv[3]))
