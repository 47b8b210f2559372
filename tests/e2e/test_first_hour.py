"""What a practitioner ran into in the first hour (issue 18), each through the real commands:
predict on a CSV after a run on bundled data, HYDRA_FULL_ERROR on a preflight failure in the
user's forward, explain=true leaving no folder, one knob for "best", a failed run's summary and
curves, the MLflow refusal in one clean line, tab completion, and two DDP processes told apart."""

from __future__ import annotations

import os
import subprocess

import pytest
import torch
from conftest import BIN, env_for_tests, run_command, run_train

BADNET = '''from torch import nn


class Net(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)

    def forward(self, x):
        return self.fc(x) + undefined_name
'''


def test_predict_a_csv_with_a_run_trained_on_bundled_data(tmp_path):
    run = run_train("trainer.epochs=1", cwd=tmp_path)
    from sklearn.datasets import load_digits

    x = load_digits().data[:5]
    (tmp_path / "new.csv").write_text(",".join(f"x{i}" for i in range(64)) + "\n"
                                      + "".join(",".join(f"{v:g}" for v in row) + "\n" for row in x))
    done = run_command("predict", f"run={run.run_dir}", "data=csv", "data.path=new.csv", cwd=tmp_path)
    assert "predicted 5 rows" in done.output
    (tmp_path / "bad.csv").write_text("x0,x1\n1,2\n")  # too few features: refused, no folder left
    before = set((tmp_path / "predictions").rglob("*"))
    bad = run_command("predict", f"run={run.run_dir}", "data=csv", "data.path=bad.csv", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "Error executing job" not in bad.output and "Traceback" not in bad.output
    assert set((tmp_path / "predictions").rglob("*")) == before


def test_a_failure_in_the_users_forward_at_preflight(tmp_path):
    (tmp_path / "badnet.py").write_text(BADNET)
    plain = run_train("model._target_=badnet.Net", cwd=tmp_path, run_dir=tmp_path / "a", check=False)
    assert plain.returncode == 2
    assert "NameError: name 'undefined_name' is not defined (raised in badnet.py:10, in forward)" in plain.output
    full = run_train("model._target_=badnet.Net", cwd=tmp_path, run_dir=tmp_path / "b", check=False,
                     env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode == 2, full.output  # the same exit status with the traceback
    assert 'badnet.py", line 10, in forward' in full.output and "Traceback" in full.output


def test_explain_leaves_no_run_folder(tmp_path):
    done = run_train("explain=true", "optim=sgd", cwd=tmp_path, run_dir=tmp_path / "explained")
    assert "SGD check" in done.output and not (tmp_path / "explained").exists()
    (tmp_path / "kept").mkdir()  # a folder that was there before stays
    run_train("explain=true", cwd=tmp_path, run_dir=tmp_path / "kept")
    assert (tmp_path / "kept").is_dir()


@pytest.mark.parametrize("extra", [(), ("checkpoint.monitor=val_loss",)])
def test_one_knob_decides_what_best_means(tmp_path, extra):
    done = run_train("objective=val_acc", "trainer.epochs=6", "optim.lr=0.01", *extra, cwd=tmp_path)
    summary, rows = done.summary, done.metrics
    saved = torch.load(done.run_dir / "checkpoints" / "best.pt", weights_only=True)["state"]["epoch"]
    held = next(r for r in rows if r["epoch"] == saved)
    assert summary["best_epoch"] == saved
    assert summary["objective"]["value"] == held["val_acc"]  # the score shown is best.pt's
    if not extra:  # best.pt is the best-accuracy epoch
        assert held["val_acc"] == max(r["val_acc"] for r in rows)
    else:  # best.pt is the lowest-loss epoch; the objective is its accuracy
        assert held["val_loss"] == min(r["val_loss"] for r in rows)


def test_a_failed_run_leaves_its_summary_and_curves(tmp_path):
    done = run_train("optim=sgd", "optim.lr=3", "trainer.epochs=5", cwd=tmp_path, check=False)
    assert done.returncode == 1
    summary = done.summary
    assert summary["status"] == "failed" and "non-finite" in summary["error"]
    assert summary["epochs_run"] == len(done.metrics) >= 1
    assert (done.run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_the_mlflow_refusal_is_one_clean_paragraph(tmp_path):
    done = run_train("logger=[csv,mlflow]", "logger.mlflow.tracking_uri=http://127.0.0.1:9",
                     "logger.mlflow.startup_timeout=2", "trainer.epochs=1", cwd=tmp_path, check=False)
    assert done.returncode == 2
    assert "Retrying" not in done.output and "urllib3" not in done.output
    line = next(line for line in done.output.splitlines() if line.startswith("Error: could not start an MLflow run"))
    assert line.endswith("([Errno 111] Connection refused)")


def test_tab_completion_as_documented(tmp_path):
    script = subprocess.run([str(BIN / "train"), "-sc", "install=bash"], capture_output=True, text=True,
                            env=env_for_tests(), timeout=60)
    assert script.returncode == 0 and "complete -o nospace" in script.stdout
    env = env_for_tests({"COMP_LINE": "train optim=s", "COMP_POINT": "13"})
    query = subprocess.run([str(BIN / "train"), "-sc", "query=bash"], capture_output=True, text=True, env=env,
                           timeout=60, cwd=tmp_path)
    assert "optim=sgd" in query.stdout.split()


def test_two_ddp_processes_are_told_apart(tmp_path):
    (tmp_path / "warnnet.py").write_text(
        "import os, warnings\nfrom torch import nn\n\n\nclass Net(nn.Module):\n"
        "    def __init__(self, in_features, out_features):\n        super().__init__()\n"
        "        warnings.warn(f\"built by process {os.environ.get('RANK')}\")\n"
        "        self.fc = nn.Linear(in_features, out_features)\n\n    def forward(self, x):\n"
        "        return self.fc(x)\n")
    done = run_train("trainer.devices=2", "trainer.epochs=1", "model._target_=warnnet.Net", cwd=tmp_path)
    assert "DDP: 2 processes" in done.output
    lines = [line for line in done.output.splitlines() if "built by process" in line]
    assert any(line.startswith("[rank 1] ") and line.endswith("process 1") for line in lines), lines
    assert not any(line.startswith("[rank") and "process 0" in line for line in lines), lines


def test_debug_anomaly_as_the_recipes_show_it_finds_the_nan(tmp_path):
    done = run_train("debug=anomaly", "optim=sgd", "optim.lr=10", "trainer.epochs=1", cwd=tmp_path, check=False)
    assert done.returncode == 1 and "returned nan values" in done.output
    assert "key: trainer.detect_anomaly" in done.output


def test_a_rank_prefix_needs_no_torch(tmp_path):
    """The prefix is a log filter of report/echo.py: a rank > 0 line is marked, rank 0's never."""
    code = ("import logging; from trainrun.report.echo import mark_rank\n"
            "logging.basicConfig(format='%(message)s'); mark_rank(3); logging.getLogger('x').warning('hi')\n")
    done = subprocess.run([str(BIN / "python"), "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.stderr.strip() == "[rank 3] hi"

