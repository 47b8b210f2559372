"""``train --help``: every config group and option (checked against what Hydra itself finds),
the trainer and data keys (checked against the schemas), example commands that compose; and
``--cfg job`` / ``--info`` still work."""

from __future__ import annotations

import dataclasses
import re
import subprocess

import pytest
from conftest import command_path, env_for_tests

from trainrun.cli import reference
from trainrun.config import config_dir, schemas
from trainrun.config.groups import DataConfig


def run_cli(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(command_path("train")), *args], cwd=cwd, env=env_for_tests(),
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def help_text(tmp_path_factory) -> str:
    proc = run_cli("--help", cwd=tmp_path_factory.mktemp("help"))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def parse_groups(text: str) -> dict[str, dict[str, tuple[str, bool]]]:
    """The "Config groups" section as ``group -> option -> (description, current)``."""
    section = text.split("Config groups", 1)[1].split("\n\n", 1)[0]
    groups: dict[str, dict[str, tuple[str, bool]]] = {}
    group = None
    for line in section.splitlines()[1:]:
        option = re.match(r"    ([* ]) (\S+)\s*(.*)$", line)
        if option and group is not None:
            groups[group][option.group(2)] = (option.group(3).strip(), option.group(1) == "*")
            continue
        head = re.match(r"  (\S+)", line)
        if head:
            group = head.group(1)
            groups[group] = {}
    return groups


def hydra_groups() -> dict[str, list[str]]:
    """Every group and option Hydra finds for ``train`` (the ground truth for the help)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    found: dict[str, list[str]] = {}
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        loader = GlobalHydra.instance().config_loader()

        def walk(parent: str) -> None:
            for name in loader.list_groups(parent):
                group = f"{parent}/{name}" if parent else name
                found[group] = loader.get_group_options(group)
                walk(group)

        walk("")
    return found


def test_help_lists_every_group_and_option_with_a_description(help_text):
    shown = parse_groups(help_text)
    for group, options in hydra_groups().items():
        if group.startswith(("schema", "hydra")) or not options:
            continue
        assert group in shown, f"group {group} missing from train --help"
        assert set(shown[group]) == set(options), f"{group}: help shows {sorted(shown[group])}, Hydra has {options}"
        for option, (description, _) in shown[group].items():
            assert description, f"{group}={option} has no description (first comment line of its YAML)"


def test_help_lists_the_projects_launcher_presets(help_text):
    shown = parse_groups(help_text)
    project = {p.stem for p in (config_dir() / "hydra" / "launcher").glob("*.yaml")}
    assert project, "configs/hydra/launcher holds no presets"
    assert set(shown["hydra/launcher"]) == project
    assert all(o in help_text for o in ("submitit_slurm", "joblib"))  # Hydra's own, named in the group line


def test_help_marks_the_default_choices(help_text):
    shown = parse_groups(help_text)
    assert shown["model"]["mlp"][1] and not shown["model"]["cnn"][1]
    assert shown["logger"]["csv"][1] and not shown["logger"]["tensorboard"][1]


def test_help_marks_the_choices_made_on_the_command_line(tmp_path):
    proc = run_cli("model=cnn", "logger=[csv,tensorboard]", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    shown = parse_groups(proc.stdout)
    assert shown["model"]["cnn"][1] and not shown["model"]["mlp"][1]
    assert shown["logger"]["csv"][1] and shown["logger"]["tensorboard"][1]


@pytest.mark.parametrize("group, schema", [("trainer", schemas.TrainerConfig), ("data", DataConfig)])
def test_help_lists_every_trainer_and_data_key(help_text, group, schema):
    for key in reference.schema_keys(schema):
        if key.name == "_target_":
            continue
        assert re.search(rf"^  {re.escape(group)}\.{re.escape(key.name)}=\S*\s+\S", help_text, re.M), \
            f"{group}.{key.name} missing from train --help (or has no description)"
    assert dataclasses.fields(schema)


def test_help_examples_cover_the_main_tasks(help_text):
    examples = help_text.split("\nExamples\n", 1)[1]
    for needle in ("train ", "train -m ", "hparams_search=", "hydra/launcher=slurm", "resume=auto", "evaluate run="):
        assert needle in examples, f"no example with {needle!r}"


def test_cfg_job_and_info_still_work(tmp_path):
    job = run_cli("--cfg", "job", "model=cnn", cwd=tmp_path)
    assert job.returncode == 0, job.stderr
    assert "_target_: trainrun.build.models.CNN" in job.stdout and "trainer:" in job.stdout
    info = run_cli("--info", "defaults", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert "logger/csv" in info.stdout and "hydra/job_logging/trainrun" in info.stdout


def test_the_run_prints_its_config_tree_and_folder_first(train):
    result = train("trainer.epochs=1", "trainer.limit_train_batches=2", "optim.lr=0.0123", "print_config=true")
    out = result.proc.stdout
    tree, _, rest = out.partition(f"run folder: {result.run_dir}\n")
    assert rest, "the run folder is not printed on a line of its own"
    assert "epoch 1/1" not in tree and "epoch 1/1" in rest  # before training starts
    for line in ("├── optim", "│   ├── lr: 0.0123", "├── trainer", "│   ├── epochs: 1", "print_config: True"):
        assert line in tree, f"{line!r} not in the config tree"


def test_print_config_false_and_progress_none(train, tmp_path):
    quiet_tree = train("trainer.epochs=1", "trainer.limit_train_batches=2")  # print_config=false by default
    assert "├── optim" not in quiet_tree.output
    assert f"run folder: {quiet_tree.run_dir}" in quiet_tree.output
    silent = train("trainer.epochs=1", "trainer.limit_train_batches=2", "trainer.progress=none",
                   run_dir=tmp_path / "silent")  # a folder of its own: the first run owns "run"
    assert "├── optim" not in silent.output and "epoch 1/1" not in silent.output
    assert silent.summary["status"] == "completed"
