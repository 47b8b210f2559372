"""The docs agree with the code: docs/configuration.md is what the schemas and option files
generate, every key has a description, and the commands in the user guide and the recipes
compose."""

from __future__ import annotations

import dataclasses
import re

import pytest
from conftest import REPO, compose_command

from trainrun.cli import reference
from trainrun.config import config_dir, schemas
from trainrun.config.fields import setting
from trainrun.config.groups import GROUP_SCHEMAS

DOCS = REPO / "docs"


def test_configuration_reference_is_up_to_date():
    current = (DOCS / "configuration.md").read_text()
    assert current == reference.markdown(), (
        "docs/configuration.md differs from the schemas/option files: run python scripts/gen_config_docs.py"
    )


def test_every_schema_key_has_a_description():
    assert reference.undocumented() == [], (
        "give the field a description: setting(default, \"...\") in trainrun/config/"
    )


def test_every_key_of_every_schema_is_in_the_reference():
    text = (DOCS / "configuration.md").read_text()
    sections = {"trainer": schemas.TrainerConfig, "checkpoint": schemas.CheckpointConfig,
                "device": schemas.DeviceConfig}
    for section, cls in sections.items():
        for key in reference.schema_keys(cls):
            assert f"| `{section}.{key.name}` |" in text
    for group, by_name in GROUP_SCHEMAS.items():
        for name, cls in by_name.items():
            prefix = f"logger.{name}." if group == "logger" else f"{group}."
            for field in dataclasses.fields(cls):
                if field.name == "_target_" and group != "logger":
                    continue
                assert f"`{prefix}{field.name}`" in text or f"`logger.<name>.{field.name}`" in text, \
                    f"{prefix}{field.name} missing from docs/configuration.md"
    for option_file in config_dir().glob("*/*.yaml"):
        assert f"`{option_file.parent.name}={option_file.stem}`" in text


def test_the_reference_follows_a_schema_change(monkeypatch):
    """A key added to a schema without regenerating the docs is caught (the drift this file guards)."""
    @dataclasses.dataclass
    class Patched(schemas.TrainerConfig):
        new_knob: int = setting(3, "a key added without regenerating the docs")

    monkeypatch.setattr(schemas, "TrainerConfig", Patched)
    generated = reference.markdown()
    assert "| `trainer.new_knob` | int | `3` | a key added without regenerating the docs |" in generated
    assert generated != (DOCS / "configuration.md").read_text()


def shell_commands(markdown: str) -> list[str]:
    """``train`` / ``evaluate`` / ``predict`` / ``export-model`` lines inside the fenced bash blocks
    of a markdown file."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith(("train ", "evaluate ", "predict ", "export-model ")) or line == "train":
                commands.append(line)
    return commands


GUIDES = ["user-guide.md", "recipes.md", "deploy.md"]


@pytest.mark.parametrize("command", [c for doc in GUIDES for c in shell_commands((DOCS / doc).read_text())])
def test_commands_in_the_guides_compose(command, tmp_path):
    compose_command(command, str(tmp_path))


@pytest.mark.parametrize("command", shell_commands((REPO / "README.md").read_text()))
def test_commands_in_the_readme_compose(command, tmp_path):
    compose_command(command, str(tmp_path))


def test_the_guides_have_commands_and_cover_every_recipe():
    assert len(shell_commands((DOCS / "user-guide.md").read_text())) >= 5
    recipes = (DOCS / "recipes.md").read_text()
    for option in (config_dir() / "experiment").glob("*.yaml"):
        assert f"experiment={option.stem}" in recipes, f"docs/recipes.md does not show experiment={option.stem}"
    for option in (config_dir() / "debug").glob("*.yaml"):
        assert f"debug={option.stem}" in recipes
