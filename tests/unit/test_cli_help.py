"""``train --help``: every config group and option (checked against what Hydra itself finds),
the trainer and data keys (checked against the schemas), example commands that compose; and
``--cfg job`` / ``--info`` still work."""

from __future__ import annotations

import pytest
from conftest import compose_command

from trainrun.cli import help as cli_help


@pytest.mark.parametrize("command", [c for c, _ in cli_help.EXAMPLES])
def test_help_examples_compose(command, tmp_path):
    compose_command(command, str(tmp_path))
