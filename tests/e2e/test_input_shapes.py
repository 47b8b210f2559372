"""What a model asks for decides the shape of its input: ``in_features`` alone means flat
samples (digits as ``[N, 64]``), ``in_shape`` means the samples as the data shapes them
(``[N, 1, 8, 8]``), and preflight, explain and evaluate see the same input as training."""

from __future__ import annotations

import json

import pytest
from conftest import run_command

FAST = ("trainer.epochs=3", "print_config=false", "plot=false")


def test_a_linear_first_model_gets_flat_digits_in_train_explain_and_evaluate(shapes_folder):
    result = run_command("train", "model._target_=shapes.LinearFirst", *FAST, cwd=shapes_folder)
    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["val_acc"] > 0.8  # three epochs of a 32-unit network
    assert "[32,64]" in result.output  # preflight's report of the batch the model got

    evaluated = run_command("evaluate", f"run={result.run_dir}", "predictions=true", "trust=[shapes]",
                            cwd=shapes_folder)
    report = json.loads(next((result.run_dir / "eval").glob("*/eval.json")).read_text())
    # best.pt scored on val again: the val_loss its epoch logged, from the same flat input
    assert report["loss"] == pytest.approx(report["logged"]["val_loss"], rel=1e-5), evaluated.output

    explained = run_command("train", "model._target_=shapes.LinearFirst", "explain=true",
                            "print_config=false", cwd=shapes_folder, run_dir=shapes_folder / "explain")
    assert "Traceback" not in explained.output and "[32,64]" in explained.output


def test_a_model_that_asks_for_in_shape_gets_images(shapes_folder):
    result = run_command("train", "model._target_=shapes.Images", *FAST, cwd=shapes_folder)
    assert "[32,1,8,8]" in result.output
    run_command("evaluate", f"run={result.run_dir}", "trust=[shapes]", cwd=shapes_folder)


@pytest.mark.parametrize("model, shape", [("shapes.LinearFirst", "[32,64]"), ("shapes.Images", "[32,1,8,8]")])
def test_a_user_dataset_of_images_follows_the_model_too(shapes_folder, model, shape):
    result = run_command("train", "data._target_=userdata.DigitImages", f"model._target_={model}",
                         *FAST, cwd=shapes_folder)
    assert shape in result.output
    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["val_acc"] > 0.5
