"""``evaluate report=true`` and ``loss.class_weights`` end to end, on an imbalanced CSV (about 9 %
of the rows are "fraud"): weighted by class, the rare class is found far more often; the report
says so per class, as text, a picture and in eval.json."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch
from conftest import command_path, env_for_tests, run_train


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imbalanced")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 4))
    y = np.where(x[:, 0] + 0.5 * rng.normal(size=600) > 1.6, "fraud", "ok")
    lines = ["a,b,c,d,label"] + [",".join(f"{v:.4f}" for v in row) + f",{t}" for row, t in zip(x, y, strict=True)]
    (folder / "imbalanced.csv").write_text("\n".join(lines) + "\n")
    common = ("data=csv", "data.path=imbalanced.csv", "data.target=label", "trainer.epochs=10")
    plain = run_train(*common, cwd=folder, run_dir=folder / "plain")
    weighted = run_train(*common, "loss.class_weights=balanced", cwd=folder, run_dir=folder / "weighted")
    return folder, plain, weighted


def evaluate(folder, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(command_path("evaluate")), *args], cwd=folder, env=env_for_tests(), capture_output=True,
                          text=True, timeout=240)


def test_the_report_is_printed_and_written_per_class(imbalanced):
    folder, plain, _ = imbalanced
    done = evaluate(folder, f"run={plain.run_dir}", "report=true")
    assert done.returncode == 0, done.stderr
    out = plain.run_dir / "eval" / "best_val"
    text = (out / "report.txt").read_text()
    assert text.splitlines()[0].split() == ["class", "precision", "recall", "f1", "support"]
    assert "confusion matrix (rows: true class, columns: predicted)" in text and text.strip() in done.stdout
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((out / "eval.json").read_text())["report"]
    assert [c["label"] for c in report["classes"]] == ["fraud", "ok"]
    assert sum(map(sum, report["confusion"])) == report["samples"] == 120
    assert report["accuracy"] == pytest.approx(json.loads((out / "eval.json").read_text())["acc"])


def test_balanced_class_weights_find_the_rare_class(imbalanced):
    folder, plain, weighted = imbalanced
    assert "loss: class weights fraud" in weighted.output  # the numbers in the header
    recalls = {}
    for run in (plain, weighted):
        done = evaluate(folder, f"run={run.run_dir}", "report=true")
        assert done.returncode == 0, done.stderr
        report = json.loads((run.run_dir / "eval" / "best_val" / "eval.json").read_text())["report"]
        recalls[run.run_dir.name] = report["classes"][0]["recall"]  # fraud
    assert recalls["weighted"] >= recalls["plain"] + 0.3, recalls
    stored = torch.load(weighted.run_dir / "checkpoints" / "best.pt", weights_only=True)["config"]["loss"]
    fraud, ok = stored["class_weights"]  # the numbers balanced meant on the training split
    assert fraud > 1 > ok and fraud / ok > 5


def test_resume_and_predict_with_class_weights(imbalanced):
    folder, _, weighted = imbalanced
    resumed = run_train("data=csv", "data.path=imbalanced.csv", "data.target=label", "trainer.epochs=12",
                        "loss.class_weights=balanced", "resume=auto", cwd=folder, run_dir=weighted.run_dir)
    assert resumed.summary["epochs_run"] == 12
    (folder / "new.csv").write_text("a,b,c,d\n3.0,0,0,0\n-1.0,0,0,0\n")
    done = subprocess.run([str(command_path("predict")), f"run={weighted.run_dir}", "data=csv", "data.path=new.csv",
                           f"hydra.run.dir={folder / 'predicted'}"], cwd=folder, env=env_for_tests(),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    rows = (folder / "predicted" / "predictions.csv").read_text().splitlines()
    assert rows[0] == "row,prediction,p_fraud,p_ok" and rows[1].split(",")[1] == "fraud"


def test_hand_typed_weights_resumed_with_balanced_are_refused(imbalanced, tmp_path):
    """A run weighed by hand, resumed with loss.class_weights=balanced: the checkpoint holds only
    numbers, so the word passed the config comparison, and balanced's other numbers changed the
    loss in the middle of the run, exit 0. Refused now, with the run's weights as the fix."""
    folder = imbalanced[0]
    common = ("data=csv", f"data.path={folder / 'imbalanced.csv'}", "data.target=label")
    run_train(*common, "loss.class_weights=[1,3]", "trainer.epochs=2", cwd=tmp_path, run_dir=tmp_path / "hand")
    resumed = run_train(*common, "loss.class_weights=balanced", "trainer.epochs=3", "resume=auto", cwd=tmp_path,
                        run_dir=tmp_path / "hand", check=False)
    assert resumed.returncode == 2, resumed.output
    assert "the checkpoint's run weighed its classes [1.0,3.0]" in resumed.output
    assert "key: loss.class_weights" in resumed.output and "loss.class_weights=[1.0,3.0]" in resumed.output
    assert "Traceback" not in resumed.output
    again = run_train(*common, "loss.class_weights=[1.0,3.0]", "trainer.epochs=3", "resume=auto", cwd=tmp_path,
                      run_dir=tmp_path / "hand")  # the fix as printed
    assert again.summary["epochs_run"] == 3


def test_balanced_weights_on_data_that_changed_name_the_data_and_the_fix_resumes(imbalanced, tmp_path):
    """balanced on a CSV that gained rows: the changed data is named first (it was a misleading
    trainer.devices refusal), and with resume_changed_data=true the printed weights (full
    precision: a rounded list was refused in turn as another config) resume the run."""
    folder = imbalanced[0]
    data = tmp_path / "grown.csv"
    data.write_text((folder / "imbalanced.csv").read_text())
    common = ("data=csv", f"data.path={data}", "data.target=label")
    run_train(*common, "loss.class_weights=balanced", "trainer.epochs=2", cwd=tmp_path, run_dir=tmp_path / "b")
    with data.open("a") as f:
        f.write("".join(f"{i / 10:.4f},0,0,0,ok\n" for i in range(40)))
    first = run_train(*common, "loss.class_weights=balanced", "trainer.epochs=3", "resume=auto", cwd=tmp_path,
                      run_dir=tmp_path / "b", check=False)
    assert first.returncode == 2 and "the data changed since the checkpoint" in first.output, first.output
    allowed = run_train(*common, "loss.class_weights=balanced", "trainer.epochs=3", "resume=auto",
                        "resume_changed_data=true", cwd=tmp_path, run_dir=tmp_path / "b", check=False)
    assert allowed.returncode == 2 and "key: loss.class_weights" in allowed.output, allowed.output
    weights = allowed.output.split("resume with loss.class_weights=", 1)[1].split()[0]
    resumed = run_train(*common, f"loss.class_weights={weights}", "trainer.epochs=3", "resume=auto",
                        "resume_changed_data=true", cwd=tmp_path, run_dir=tmp_path / "b")
    assert resumed.summary["epochs_run"] == 3


def test_class_weights_that_do_not_fit_and_a_list_for_loss_weight_are_refused(imbalanced):
    folder = imbalanced[0]
    common = ("data=csv", "data.path=imbalanced.csv", "data.target=label")
    wrong = run_train(*common, "loss.class_weights=[1,2,3]", cwd=folder, run_dir=folder / "wrong", check=False)
    assert wrong.returncode == 2
    assert "has 3 weight(s), but the data has 2 classes (fraud, ok, in this order)" in wrong.output
    listed = run_train(*common, "+loss.weight=[1,5]", cwd=folder, run_dir=folder / "listed", check=False)
    assert listed.returncode == 2 and "key: loss.weight" in listed.output and "TypeError" not in listed.output


def test_a_report_of_a_regression_is_refused(tmp_path):
    run = run_train("data=diabetes", "loss=mse", "trainer.epochs=1", cwd=tmp_path)
    done = evaluate(tmp_path, f"run={run.run_dir}", "report=true")
    assert done.returncode == 2 and "report=true is a per-class report, but this run is a regression" in done.stderr
