"""``predict`` and the statistics a checkpoint keeps, through the real commands, on one run: a
user's model (so the trust rule is exercised too) trained on a CSV file whose features have very
different scales (so standardizing with the wrong statistics shows), with a test split (so
``train`` scores ``best.pt`` on it at the end)."""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import run_command, run_train

NET = textwrap.dedent("""
    import pathlib
    from torch import nn

    pathlib.Path("imported.txt").write_text("netmod was imported")  # shows whether this code ran

    class Net(nn.Module):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(in_features, 16), nn.ReLU(), nn.Linear(16, out_features))

        def forward(self, x):
            return self.layers(x)
""")

SOURCE = textwrap.dedent("""
    import csv
    import numpy as np

    def load(path):  # a user's source for predict: X alone, columns a..d
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return np.array([[float(r[c]) for c in "abcd"] for r in rows], dtype=np.float32)
""")

SCALES = np.array([[50.0, 10.0], [-3.0, 0.1], [0.0, 1.0], [1000.0, 200.0]])  # mean, std per feature
TRUST = "trust=[netmod]"
pytestmark = pytest.mark.xdist_group("predict")  # one worker: the module's run is trained once


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, header: list[str], rows: list[list]) -> Path:
    path.write_text("\n".join([",".join(header), *(",".join(str(v) for v in row) for row in rows)]) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict")
    (folder / "netmod.py").write_text(NET)
    (folder / "newsource.py").write_text(SOURCE)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(150, 4))
    x = SCALES[:, 0] + z * SCALES[:, 1]
    labels = np.where(z[:, 0] > 0.4, "cat", np.where(z[:, 3] > 0, "dog", "bird"))
    write_rows(folder / "train.csv", ["a", "b", "c", "d", "label"],
               [[f"{v:.6f}" for v in row] + [t] for row, t in zip(x, labels, strict=True)])
    result = run_train("model._target_=netmod.Net", "data=csv", "data.path=train.csv", "data.target=label",
                       "data.test_fraction=0.2", "data.batch_size=16", "trainer.epochs=4", "plot=false",
                       cwd=folder, run_dir=folder / "run")
    return folder, result, x


def predict(*overrides: str, cwd: Path, out: Path, check: bool = True):
    return run_command("predict", *overrides, f"hydra.run.dir={out}", cwd=cwd, check=check)


def test_train_scores_best_pt_on_the_test_split_as_evaluate_does(trained):
    folder, result, _ = trained
    test = result.summary["test"]
    assert test["checkpoint"] == "best.pt" and test["epoch"] == result.summary["best_epoch"]
    assert test["samples"] == result.summary["data_sizes"]["test"] == 30
    assert "test (best.pt)" in result.output  # the summary table's column
    run_command("evaluate", f"run={result.run_dir}", "split=test", TRUST, cwd=folder)
    report = json.loads((result.run_dir / "eval" / "best_test" / "eval.json").read_text())
    assert report["samples"] == test["samples"]
    assert report["loss"] == test["loss"] and report["acc"] == test["acc"]  # the same computation


def test_the_checkpoints_code_runs_only_when_trusted(trained):
    folder, result, _ = trained
    (folder / "imported.txt").unlink(missing_ok=True)
    refused = predict(f"run={result.run_dir}", "data=csv", "data.path=train.csv", cwd=folder,
                      out=folder / "refused", check=False)
    assert refused.returncode == 2, refused.output
    assert "model._target_=netmod.Net" in refused.output and "trust=[netmod.Net]" in refused.output
    assert "Traceback" not in refused.output
    assert not (folder / "imported.txt").exists()  # netmod was never imported
    assert not (folder / "refused").exists()  # a failed predict leaves no folder


def test_three_new_rows_get_the_predictions_they_get_inside_the_training_data(trained):
    """The rows of the val split, scored by evaluate with the run's own data, and the same rows
    alone in a new file (columns reordered, an extra id column, no label) scored by predict."""
    folder, result, x = trained
    run_command("evaluate", f"run={result.run_dir}", "predictions=true", TRUST, cwd=folder)
    reference = read_csv(result.run_dir / "eval" / "best_val" / "predictions.csv")[:3]
    rows = [int(r["row"]) for r in reference]
    write_rows(folder / "new.csv", ["id", "d", "c", "b", "a"],
               [[f"id{i}", *(f"{v:.6f}" for v in x[i][::-1])] for i in rows])
    out = folder / "pred"
    predict(f"run={result.run_dir}", "data=csv", "data.path=new.csv", TRUST, cwd=folder, out=out)
    got = read_csv(out / "predictions.csv")
    assert list(got[0]) == ["row", "prediction", "p_bird", "p_cat", "p_dog"]
    assert [g["row"] for g in got] == ["0", "1", "2"]  # the position in the new file
    for mine, theirs in zip(got, reference, strict=True):
        assert mine["prediction"] == theirs["prediction"]
        for label in ("bird", "cat", "dog"):  # other batch sizes: equal to float32 rounding
            assert float(mine[f"p_{label}"]) == pytest.approx(float(theirs[f"p_{label}"]), abs=1e-6)
    assert {p.name for p in out.iterdir()} >= {"predictions.csv", "predict.json", "predict.log", ".hydra"}

    # The same rows after 20 rows shifted far away: a file's own statistics would move them all;
    # the training statistics leave them as they were.
    shifted = [[f"s{i}", *(f"{v + 500:.6f}" for v in x[i][::-1])] for i in range(20)]
    write_rows(folder / "shifted.csv", ["id", "d", "c", "b", "a"],
               [[f"id{i}", *(f"{v:.6f}" for v in x[i][::-1])] for i in rows] + shifted)
    predict(f"run={result.run_dir}", "data=csv", "data.path=shifted.csv", TRUST, cwd=folder, out=folder / "shift")
    again = read_csv(folder / "shift" / "predictions.csv")[:3]
    for mine, first in zip(again, got, strict=True):
        assert float(mine["p_cat"]) == pytest.approx(float(first["p_cat"]), abs=1e-6)

    # evaluate on new data scales and encodes it as training did too: the same three rows with
    # only two of the three labels, scored whole (data.val_fraction=0, split=train).
    labels = {r["row"]: r["target"] for r in reference}
    write_rows(folder / "labelled.csv", ["d", "c", "b", "a", "label"],
               [[*(f"{v:.6f}" for v in x[i][::-1]), labels[str(i)]] for i in rows])
    run_command("evaluate", f"run={result.run_dir}", "data=csv", "data.path=labelled.csv",
                "data.val_fraction=0", "split=train", "predictions=true", f"out={folder / 'ev'}", TRUST, cwd=folder)
    scored = {r["row"]: r for r in read_csv(folder / "ev" / "predictions.csv")}
    for i, theirs in enumerate(reference):
        assert scored[str(i)]["target"] == theirs["target"]  # labels by the training's encoding
        assert float(scored[str(i)]["p_dog"]) == pytest.approx(float(theirs["p_dog"]), abs=1e-6)


def test_npz_with_x_only_and_a_user_source(trained):
    folder, result, x = trained
    np.savez(folder / "new.npz", X=x[:5].astype(np.float32))
    predict(f"run={result.run_dir}", "data=npz", "data.path=new.npz", TRUST, cwd=folder, out=folder / "npz")
    from_npz = read_csv(folder / "npz" / "predictions.csv")
    write_rows(folder / "five.csv", ["a", "b", "c", "d"], [[f"{v:.6f}" for v in row] for row in x[:5]])
    predict(f"run={result.run_dir}", "data._target_=newsource.load", "+data.path=five.csv", TRUST,
            cwd=folder, out=folder / "user")
    from_user = read_csv(folder / "user" / "predictions.csv")
    assert len(from_npz) == len(from_user) == 5
    for a, b in zip(from_npz, from_user, strict=True):
        assert a["prediction"] == b["prediction"]
        assert float(a["p_bird"]) == pytest.approx(float(b["p_bird"]), abs=1e-6)


def test_a_file_without_a_trained_column_is_refused_with_a_fix_that_works(trained):
    """Adversarial pass: the refusal said "list columns of the file in data.features", and doing so
    was refused in turn ("leave data.features out")."""
    folder, result, x = trained
    write_rows(folder / "three.csv", ["a", "b", "c"], [[f"{v:.6f}" for v in row[:3]] for row in x[:4]])
    refused = predict(f"run={result.run_dir}", "data=csv", "data.path=three.csv", TRUST, cwd=folder,
                      out=folder / "three", check=False)
    assert refused.returncode == 2 and "no feature column 'd'" in refused.output, refused.output
    assert "key: data.path" in refused.output
    assert "give a file holding every column the model was trained on (a, b, c, d)" in refused.output
    # evaluate the same: the run's columns are not the user's to list (it said data.features)
    write_rows(folder / "three_labelled.csv", ["a", "b", "c", "label"],
               [[*(f"{v:.6f}" for v in row[:3]), "cat"] for row in x[:4]])
    scored = run_command("evaluate", f"run={result.run_dir}", "data=csv", "data.path=three_labelled.csv",
                         TRUST, cwd=folder, run_dir=folder / "three_ev", check=False)
    assert scored.returncode == 2 and "no feature column 'd'" in scored.output, scored.output
    assert "key: data.path" in scored.output and "(a, b, c, d)" in scored.output


def test_codes_a_new_file_holds_as_numbers_only_are_read_as_written(tmp_path):
    """Adversarial pass: a column of codes (007, 7, A1B) one-hot encoded at training, met in a new
    file without its text code, was read as numbers: 007 became category 7 (another class, no
    word) and a 9-digit code was rounded by float32. The columns training encoded are read as text."""
    codes = ["007", "7", "123456789", "123456790", "A1B"]
    rows = [[codes[i % 5], f"{(i % 7) / 7:.3f}", ["a", "b", "c", "d", "e"][i % 5]] for i in range(300)]
    write_rows(tmp_path / "train.csv", ["code", "x", "label"], rows)
    run = run_train("data=csv", "data.path=train.csv", "data.target=label", "data.categorical=[code]",
                    "trainer.epochs=40", "optim.lr=0.05",
                    "plot=false", "trainer.progress=none", cwd=tmp_path, run_dir=tmp_path / "run").run_dir
    write_rows(tmp_path / "new.csv", ["code", "x"], [[c, "0.1"] for c in codes[:4]])  # numbers only
    done = predict(f"run={run}", "data=csv", "data.path=new.csv", cwd=tmp_path, out=tmp_path / "p")
    assert "never had" not in done.output, done.output  # every code is one training saw
    assert [r["prediction"] for r in read_csv(tmp_path / "p" / "predictions.csv")] == ["a", "b", "c", "d"]
    # evaluate on a streamed file cannot encode them: refused, saying where data.categorical came from
    write_rows(tmp_path / "labelled.csv", ["code", "x", "label"], rows[:50])
    refused = run_command("evaluate", f"run={run}", "data=csv", "data.path=labelled.csv", "data.target=label",
                          "data.stream=true", cwd=tmp_path, run_dir=tmp_path / "e", check=False)
    assert refused.returncode == 2 and "the columns the trained run encoded as categories" in refused.output
    assert "read the file whole with data.stream=false" in refused.output, refused.output
    run_command("evaluate", f"run={run}", "data=csv", "data.path=labelled.csv", "data.target=label",
                "data.stream=false", cwd=tmp_path, run_dir=tmp_path / "e2")  # the fix holds


def test_a_run_trained_on_arrays_takes_a_csv_files_columns_in_their_order_and_says_so(tmp_path):
    """Adversarial pass: a digits run has no column names, so predict takes a CSV file's columns in
    their order; it said nothing, and its refusal of an extra id column promised columns "picked by
    name". Now a line says how the columns are taken, and the refusal's fix works."""
    run = run_train("data=iris", "trainer.epochs=1", "plot=false", cwd=tmp_path, run_dir=tmp_path / "run").run_dir
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    write_rows(tmp_path / "new.csv", ["id", "w", "x", "y", "z"], [[f"r{i}", *r] for i, r in enumerate(rows)])
    refused = predict(f"run={run}", "data=csv", "data.path=new.csv", cwd=tmp_path, out=tmp_path / "p1", check=False)
    assert refused.returncode == 2 and "picked by name" not in refused.output, refused.output
    assert "data.id=id (an id column)" in refused.output  # a text id: the fix sets it aside
    write_rows(tmp_path / "numbered.csv", ["n", "w", "x", "y", "z"], [[i, *r] for i, r in enumerate(rows)])
    wide = predict(f"run={run}", "data=csv", "data.path=numbered.csv", cwd=tmp_path, out=tmp_path / "p0", check=False)
    assert wide.returncode == 2 and "in its order (it had no column names to pick them by)" in wide.output
    done = predict(f"run={run}", "data=csv", "data.path=new.csv", "data.id=id", cwd=tmp_path, out=tmp_path / "p2")
    assert "the new file's feature columns are taken in their order" in done.output
    assert [r["id"] for r in read_csv(tmp_path / "p2" / "predictions.csv")] == ["r0", "r1"]


def test_regression_predictions_are_in_the_targets_units(tmp_path):
    """data=diabetes (targets 25..346, standardized in training): predict's values are the
    model's outputs mapped back with the training statistics (the checkpoint's model, run here)."""
    import torch

    from trainrun.build.setup import build_model
    from trainrun.commands.trained import typed_config
    from trainrun.data.fitted import from_payload
    from trainrun.data.sources import load_sklearn
    from trainrun.engine.checkpoint import load

    run_train("data=diabetes", "loss=mse", "trainer.epochs=1", "plot=false", cwd=tmp_path)
    x, y = load_sklearn("diabetes")
    np.savez(tmp_path / "four.npz", X=x[:4])
    predict(f"run={tmp_path / 'run'}", "data=npz", "data.path=four.npz", cwd=tmp_path, out=tmp_path / "pred")
    got = [float(r["prediction"]) for r in read_csv(tmp_path / "pred" / "predictions.csv")]

    saved = load(tmp_path / "run" / "checkpoints" / "best.pt")
    info = from_payload(saved["data"])
    model = build_model(typed_config(saved), info)[0]
    model.load_state_dict(saved["model"])
    x_train = x[split_train_rows(len(x))]  # the statistics, computed here from the training rows
    scaled = (x[:4] - x_train.mean(axis=0)) / x_train.std(axis=0)
    with torch.no_grad():
        out = model.eval()(torch.as_tensor(scaled, dtype=torch.float32))[:, 0].numpy()
    y_train = y[split_train_rows(len(x))]
    expected = out * y_train.std() + y_train.mean()
    assert got == pytest.approx(expected.tolist(), rel=1e-4)
    assert all(10 < v < 400 for v in got)  # the target's units, not standardized ones


def split_train_rows(n: int) -> np.ndarray:
    """The training rows of data.val_fraction=0.2, data.seed=0: the seeded permutation after the
    first 20 %."""
    return np.random.default_rng(0).permutation(n)[round(n * 0.2):]


