"""Data beyond memory and data known by its content, through the real commands: data=npy with
loader workers killed and resumed, a CSV streamed, Parquet shards, a table with text columns,
empty cells and ids end to end, a user Dataset under DDP for another seed, and issue 17's
examples (a CSV that gained rows, evaluate from another folder, columns in another order)."""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import numpy as np
import pytest
from conftest import final_weights, max_difference, run_command, run_train
from killpoints import launch, metric_rows, same_weights, weights

QUICK = ("plot=false", "trainer.progress=epoch", "model.hidden=[16]")


def csv_file(path: Path, n: int = 300, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "c", "label"])
        for row in x:
            w.writerow([f"{v:.5f}" for v in row] + [int(row[0] + row[1] > 0)])
    return path


COMMON = ("data=csv", "data.path=d.csv", "data.target=label", *QUICK)


@pytest.mark.timeout(900)
def test_a_csv_that_gained_rows_is_not_resumed(tmp_path: Path) -> None:
    data = csv_file(tmp_path / "d.csv")
    common = COMMON
    run = run_train(*common, "trainer.epochs=2", cwd=tmp_path).run_dir
    assert run_train(*common, "trainer.epochs=3", "resume=auto", cwd=tmp_path).returncode == 0
    with data.open("a") as f:  # the CSV gains rows: a resume is refused, naming what changed
        f.write("0.1,0.2,0.3,1\n")
    refused = run_train(*common, "trainer.epochs=4", "resume=auto", cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "the data changed since the checkpoint" in refused.output
    assert "rows: 300 -> 301" in refused.output and "key: resume" in refused.output
    allowed = run_train(*common, "trainer.epochs=4", "resume=auto", "resume_changed_data=true", cwd=tmp_path)
    assert "data changed since the checkpoint (resume_changed_data=true): rows: 300 -> 301" in allowed.output
    assert json.loads((run / "summary.json").read_text())["data"]["rows"] == 301


@pytest.mark.timeout(900)
def test_evaluate_elsewhere_and_columns_in_another_order(tmp_path: Path) -> None:
    data = csv_file(tmp_path / "d.csv")
    run = run_train(*COMMON, "trainer.epochs=2", cwd=tmp_path).run_dir
    # evaluate from another working folder: the stored absolute path, not a relative one resolved there
    other = tmp_path / "elsewhere"
    other.mkdir()
    csv_file(other / "d.csv", seed=9)  # a different d.csv there
    home = run_command("evaluate", f"run={run}", "out=here", cwd=tmp_path)
    away = run_command("evaluate", f"run={run}", "out=away", cwd=other)
    assert home.returncode == away.returncode == 0
    here, there = (json.loads((d / "eval.json").read_text()) for d in (tmp_path / "here", other / "away"))
    assert there["data"]["path"] == str(data) and there["loss"] == here["loss"]

    # predict with the columns in another order (the file, or data.features): the same predictions
    with data.open() as f:
        rows = list(csv.reader(f))
    with (tmp_path / "swapped.csv").open("w", newline="") as f:
        csv.writer(f).writerows([[r[2], r[0], r[3], r[1]] for r in rows])
    outputs = []
    for i, extra in enumerate([("data.path=d.csv",), ("data.path=swapped.csv",),
                               ("data.path=d.csv", "data.features=[c,a,b]")]):
        run_command("predict", f"run={run}", "data=csv", *extra, f"hydra.run.dir={tmp_path / f'p{i}'}", cwd=tmp_path)
        with (tmp_path / f"p{i}" / "predictions.csv").open() as f:
            outputs.append([(r["row"], r["prediction"], r["p_1"]) for r in csv.DictReader(f)])
    assert outputs[0] == outputs[1] == outputs[2]


@pytest.mark.timeout(900)
def test_npy_with_workers_killed_and_resumed_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(900, 6)).astype(np.float32)
    np.save(tmp_path / "X.npy", x)
    np.save(tmp_path / "y.npy", (x[:, 0] - x[:, 1] > 0).astype(np.int64))
    common = ("data=npy", "data.path=X.npy", "data.target_path=y.npy", "data.num_workers=2", "model.dropout=0.2",
              "trainer.epochs=3", "checkpoint.every_n_steps=4", *QUICK)
    reference = run_train(*common, cwd=tmp_path, run_dir=tmp_path / "reference").run_dir
    killed = launch("step:30", *common, run_dir=tmp_path / "run")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    resumed = run_train(*common, "resume=auto", cwd=tmp_path, run_dir=tmp_path / "run")  # at once: no stale lock
    assert "after batch 5 (step 28)" in resumed.output
    assert same_weights(weights(tmp_path / "run"), weights(reference))
    assert metric_rows(tmp_path / "run") == metric_rows(reference)
    alone = run_train(*common, "data.num_workers=0", cwd=tmp_path, run_dir=tmp_path / "alone").run_dir
    assert same_weights(weights(alone), weights(reference))  # workers change nothing


@pytest.mark.timeout(900)
def test_streamed_csv_and_parquet_shards(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    csv_file(tmp_path / "d.csv", n=500)
    env = {"TRAINRUN_CACHE_DIR": str(tmp_path / "cache")}
    common = ("data.target=label", "trainer.epochs=2", *QUICK)
    memory = run_train("data=csv", "data.path=d.csv", "data.stream=false", *common, cwd=tmp_path,
                       run_dir=tmp_path / "memory", env=env).run_dir
    streamed = run_train("data=csv", "data.path=d.csv", "data.stream=true", *common, cwd=tmp_path,
                         run_dir=tmp_path / "streamed", env=env).run_dir
    assert len(list((tmp_path / "cache" / "tables").iterdir())) == 1
    assert max_difference(final_weights(memory), final_weights(streamed)) < 1e-4  # statistics: rounding only
    with (tmp_path / "d.csv").open() as f:
        rows = list(csv.DictReader(f))
    (tmp_path / "shards").mkdir()
    for i in range(3):
        part = rows[i * 170:(i + 1) * 170]
        pq.write_table(pa.table({k: [float(r[k]) if k != "label" else int(r[k]) for r in part] for k in rows[0]}),
                       tmp_path / "shards" / f"part{i}.parquet")
    shards = run_train("data=parquet", "data.path=shards", *common, cwd=tmp_path, run_dir=tmp_path / "shards_run",
                       env=env).run_dir
    assert max_difference(final_weights(streamed), final_weights(shards)) < 1e-4
    run_command("predict", f"run={shards}", "data=parquet", "data.path=shards", f"hydra.run.dir={tmp_path / 'p'}",
                cwd=tmp_path, env=env)
    with (tmp_path / "p" / "predictions.csv").open() as f:
        assert sum(1 for _ in csv.DictReader(f)) == 500


@pytest.mark.timeout(900)
def test_a_csv_as_it_is(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    with (tmp_path / "people.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["customer", "age", "city", "income", "bought"])
        for i in range(300):
            city = ["Rome", "Oslo", "Lima"][i % 3]
            age = "" if i % 17 == 3 else str(int(rng.integers(18, 80)))
            w.writerow([f"c{i:04d}", age, city, f"{rng.normal(50, 10):.2f}", int(city == "Rome" or i % 5 == 0)])
    common = ("data=csv", "data.path=people.csv", "data.target=bought", "trainer.epochs=2", *QUICK)
    refused = run_train(*common, cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "key: data.features" in refused.output and "data.id=customer" in refused.output
    refused = run_train(*common, "data.id=customer", cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "key: data.missing" in refused.output and "column 'age'" in refused.output
    run = run_train(*common, "data.id=customer", "data.missing=median", cwd=tmp_path).run_dir
    with (tmp_path / "new.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["income", "city", "customer", "age"], ["51", "Paris", "x1", "40"],
                                 ["49", "Rome", "x2", ""]])
    result = run_command("predict", f"run={run}", "data=csv", "data.path=new.csv", f"hydra.run.dir={tmp_path / 'p'}",
                         cwd=tmp_path)
    assert "city 1" in result.output  # one row with a category training never saw
    with (tmp_path / "p" / "predictions.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["customer"] for r in table] == ["x1", "x2"]
    run_command("evaluate", f"run={run}", "predictions=true", "out=ev", cwd=tmp_path)
    with (tmp_path / "ev" / "predictions.csv").open() as f:
        assert next(csv.DictReader(f))["customer"].startswith("c")
    run_command("export-model", f"run={run}", "format=torchscript", "out=ex", cwd=tmp_path)
    spec = json.loads((tmp_path / "ex" / "preprocessing.json").read_text())
    assert spec["encoding"]["inputs"] == ["age", "city=Lima", "city=Oslo", "city=Rome", "income"]
    assert spec["id"] == "customer"


AUGMENTED = """
import torch


class Noisy(torch.utils.data.Dataset):
    num_classes = 2

    def __len__(self):
        return 240

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        x = torch.randn(5, generator=g)
        return x + 0.1 * torch.randn(5), int(x[0] > 0)  # an augmentation from torch's global stream
"""


@pytest.mark.timeout(900)
def test_a_user_dataset_with_augmentations_any_workers_and_processes(tmp_path: Path) -> None:
    (tmp_path / "noisy.py").write_text(AUGMENTED)
    common = ("data._target_=noisy.Noisy", "trainer.seed=1", "trainer.epochs=2", "optim=sgd", *QUICK)
    first = run_train(*common, "data.batch_size=16", cwd=tmp_path, run_dir=tmp_path / "one")
    # data.standardize (true by default) is not applied to a Dataset's samples: the header says so
    assert "data: the samples as the Dataset returns them: data.standardize applies" in first.output
    one = first.run_dir
    workers = run_train(*common, "data.batch_size=16", "data.num_workers=2", cwd=tmp_path,
                        run_dir=tmp_path / "workers").run_dir
    assert same_weights(weights(one), weights(workers))
    two = run_train(*common, "data.batch_size=8", "trainer.devices=2", cwd=tmp_path, run_dir=tmp_path / "two").run_dir
    assert max_difference(final_weights(one), final_weights(two)) < 1e-5  # issue 19: every seed, not only 0


@pytest.mark.timeout(900)
def test_an_id_column_streamed_is_never_a_feature_and_predict_writes_it(tmp_path: Path) -> None:
    """data.id with Parquet shards and a streamed CSV: the streamed copy used to keep the id as a
    feature (a batch of 4 columns instead of 3, another result, exit 0), and predict wrote no id."""
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    csv_file(tmp_path / "plain.csv")
    with (tmp_path / "plain.csv").open() as f:
        rows = list(csv.DictReader(f))
    with (tmp_path / "d.csv").open("w", newline="") as f:  # the same rows, an id column first
        w = csv.writer(f)
        w.writerow(["key", "a", "b", "c", "label"])
        w.writerows([[f"k{i:03d}", r["a"], r["b"], r["c"], r["label"]] for i, r in enumerate(rows)])
    (tmp_path / "shards").mkdir()
    for i in range(3):
        part = rows[i * 100:(i + 1) * 100]
        table = {"key": [f"k{j:03d}" for j in range(i * 100, i * 100 + len(part))],
                 **{k: [float(r[k]) for r in part] for k in "abc"}, "label": [int(r["label"]) for r in part]}
        pq.write_table(pa.table(table), tmp_path / "shards" / f"part{i}.parquet")
    env = {"TRAINRUN_CACHE_DIR": str(tmp_path / "cache")}
    common = ("data.target=label", "trainer.epochs=2", *QUICK)
    plain = run_train("data=csv", "data.path=plain.csv", *common, cwd=tmp_path, run_dir=tmp_path / "plain_run").run_dir
    for name, data in (("csv", ("data=csv", "data.path=d.csv", "data.stream=true")),
                       ("parquet", ("data=parquet", "data.path=shards"))):
        run = run_train(*data, "data.id=key", *common, cwd=tmp_path, run_dir=tmp_path / name, env=env)
        assert "batch [32,3]" in run.output, run.output
        assert max_difference(final_weights(plain), final_weights(run.run_dir)) < 1e-4
        run_command("predict", f"run={run.run_dir}", data[0], data[1], f"hydra.run.dir={tmp_path / f'p{name}'}",
                    cwd=tmp_path, env=env)
        with (tmp_path / f"p{name}" / "predictions.csv").open() as f:
            keys = [r["key"] for r in csv.DictReader(f)]
        assert keys == [f"k{i:03d}" for i in range(300)]


@pytest.mark.timeout(900)
def test_shards_holding_a_label_as_text_in_one_and_as_numbers_in_others(tmp_path: Path) -> None:
    """The label 1 as a number in one shard and as the text "1" in another is one class, not two
    ("1" and "1.0": four classes out of two, exit 0, before)."""
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    rng = np.random.default_rng(0)
    (tmp_path / "shards").mkdir()
    for i in range(3):
        x = rng.normal(size=(100, 3))
        label = (x[:, 0] > 0).astype(np.int64)
        pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2],
                                 "label": label.astype(str) if i == 1 else label}),
                       tmp_path / "shards" / f"part{i}.parquet")
    run = run_train("data=parquet", "data.path=shards", "data.target=label", "trainer.epochs=1", *QUICK,
                    cwd=tmp_path, env={"TRAINRUN_CACHE_DIR": str(tmp_path / "cache")})
    assert "output [32,2]" in run.output, run.output
    (meta,) = (tmp_path / "cache" / "tables").glob("*/meta.json")
    assert json.loads(meta.read_text())["labels"] == ["0", "1"]


def test_categorical_on_a_streamed_csv_is_refused_before_training(tmp_path: Path) -> None:
    """Adversarial pass: data.categorical=[zip] with data.stream=true trained on the codes as
    numbers and exited 0; now exit 2, one paragraph, no run trained."""
    rng = np.random.default_rng(0)
    with (tmp_path / "d.csv").open("w") as f:
        f.write("a,zip,label\n" + "".join(f"{rng.random():.3f},{rng.choice([10, 20, 30])},{rng.integers(2)}\n"
                                          for _ in range(200)))
    refused = run_train(*COMMON, "data.categorical=[zip]", "data.stream=true", "trainer.epochs=1", cwd=tmp_path,
                        check=False)
    assert refused.returncode == 2, refused.output
    assert "Traceback" not in refused.output and "key: data.categorical" in refused.output
    assert "epoch 1/1" not in refused.output
