"""``train explain=true``: the binding report after exactly one training step."""

from __future__ import annotations

import re
from pathlib import Path

ROW = re.compile(
    r"^(?P<name>\S+)\s+\[(?P<shape>[\d,]+)\]\s+(?P<before>None)\s+(?P<grad>[\d.e+-]+)\s+"
    r"(?P<delta>[\d.e+-]+)\s+(?P<ok>yes|NO) (?P<err>[\d.e+-]+)\s+(?P<after>None)\s*$"
)


def step_rows(output: str) -> list[dict[str, str]]:
    return [m.groupdict() for line in output.splitlines() if (m := ROW.match(line.strip()))]


def test_explain_plain_sgd_identity(train, tmp_path: Path) -> None:
    """On the default model with plain SGD the report shows, per parameter, .grad None before
    backward, |grad| after it, |Δp| after step equal to lr·|grad|, and .grad None again after
    zero_grad; then it exits 0 without training or writing anything."""
    lr = 0.1
    result = train("explain=true", "print_config=false", "optim=sgd", "optim.momentum=0",
                   f"optim.lr={lr}")
    out = result.output
    rows = step_rows(out)
    assert [r["name"] for r in rows] == ["1.weight", "1.bias", "3.weight", "3.bias"], out
    assert [r["shape"] for r in rows] == ["128,64", "128", "10,128", "10"]
    for r in rows:
        grad, delta = float(r["grad"]), float(r["delta"])
        assert grad > 0
        assert abs(delta - lr * grad) <= 1e-4 * lr * grad, r  # printed to 6 significant digits
        assert r["ok"] == "yes" and float(r["err"]) < 1e-6
    check = re.search(r"SGD check: Δp = -lr·grad with lr=0\.1 holds for 4 tensors; "
                      r"max \|Δp - \(-lr·grad\)\| = ([\d.e+-]+)", out)
    assert check, out
    assert float(check.group(1)) < 1e-6
    assert "the very same objects as model.parameters()" in out
    assert "CrossEntropyLoss()" in out and "class indices, int64 [N], in [0, 10)" in out
    assert "AccumulateGrad(" in out
    assert "8,320" in out and "9,610 parameters in 4 tensors" in out
    # one training step, nothing trained or written
    assert "epoch 1/" not in out
    assert not (result.run_dir / "checkpoints").exists()
    assert not (result.run_dir / "metrics.jsonl").exists()
    # one screen
    report = out[out.index("trainrun explain"):]
    assert len(report.splitlines()) <= 40, report


def test_explain_default_optimizer_and_head(train, tmp_path: Path) -> None:
    """The default optimizer (Adam) is shown without a re-derived rule (its step is torch's);
    loss=bce shows its head."""
    result = train("explain=true", "print_config=false")
    assert "Adam: its step is torch's own rule" in result.output, result.output
    assert len(re.findall(r"^\s*[13]\.(weight|bias)\s+\[", result.output, re.M)) == 4

    bce = train("explain=true", "print_config=false", "data=breast_cancer", "loss=bce",
                "optim=sgd", "optim.momentum=0.9", run_dir=tmp_path / "bce")
    assert "head added: Sigmoid (module 'head')" in bce.output
    assert "floats shaped like the output [N, k]" in bce.output
    # momentum SGD's first step is still -lr·grad: the momentum buffer starts as the gradient
    assert "SGD check: Δp = -lr·grad with lr=0.1 holds for 4 tensors" in bce.output
    assert step_rows(bce.output)[0]["name"] == "body.1.weight"
