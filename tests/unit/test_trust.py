"""Trust: a file the user did not name runs no code. A config stored inside a checkpoint is
data (only trainrun's own targets and torch.nn / torch.optim classes are built from it), a
checkpoint is recognized as one before anything is read from it, and a module lying in the
working folder never replaces an installed one. Each attack leaves a marker file if it ran."""

from __future__ import annotations

import pytest

from trainrun.targets import trusted_target, untrusted_targets


@pytest.mark.parametrize("target, trusted", [
    ("trainrun.build.models.MLP", True), ("trainrun.data.sources.read_csv", True),
    ("trainrun.report.loggers.csv_logs.CsvLogger", True), ("torch.nn.CrossEntropyLoss", True),
    ("torch.optim.AdamW", True), ("torch.optim.lr_scheduler.ReduceLROnPlateau", True),
    # torch functions run code (pickles, downloaded repositories); a path through a module's
    # attributes reaches them too; trainrun functions that write files are not presets.
    ("torch.load", False), ("torch.hub.load", False), ("torch.nn.modules.module.torch.load", False),
    ("torch.nn.Linear.__init__", False), ("trainrun.files.atomic_write_text", False),
    ("builtins.open", False), ("os.system", False), ("numpy.load", False), ("usercode.Net", False),
])
def test_trusted_targets(target, trusted):
    assert trusted_target(target) is trusted


def test_untrusted_targets_are_found_anywhere_and_trust_names_them():
    config = {"model": {"_target_": "mynet.Net", "hidden": [{"_target_": "os.system"}]},
              "loss": {"_target_": "torch.nn.MSELoss"}, "scheduler": {"_target_": None}}
    assert untrusted_targets(config) == ["model._target_=mynet.Net", "model.hidden[0]._target_=os.system"]
    assert untrusted_targets(config, trust=["mynet.Net"]) == ["model.hidden[0]._target_=os.system"]
