"""What a person reads in `jiaoying --help` and each command's help: the options, without noise beside the flags."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from config.cli.main import app

COMMANDS = [[], ["import"], ["serve"], ["alert", "send"], ["alert", "cancel"], ["audit", "verify"], ["engine", "run"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "jiaoying")
def test_help_lists_flags_without_a_type_beside_them(command: list[str]) -> None:
    shown = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert shown.exit_code == 0, shown.output
    assert "--help" in shown.output
    assert "<bool>" not in shown.output  # typer 0.29 prints it beside every flag; pyproject keeps it below
