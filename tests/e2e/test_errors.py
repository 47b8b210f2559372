"""Bad inputs of every kind, through the real ``train`` command: each one must exit with the
right status, name the offending key or value, and print no traceback."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import env_for_tests

QUIET = ("print_config=false", "trainer.epochs=1")
CSV = ("data=csv", "data.path=m.csv", "data.target=y", "data.batch_size=16")

@pytest.fixture
def folder(usercode: Path) -> Path:
    """The run's folder: the toy user code (tests/toys.py as usercode.py) and data files."""
    tmp_path = usercode
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)
    rows = [",".join(f"{v:.5f}" for v in r) + f",{t}" for r, t in zip(x, y, strict=True)]
    (tmp_path / "m.csv").write_text("a,b,c,d,y\n" + "\n".join(rows) + "\n")
    yr = x @ np.array([1.0, -2.0, 0.5, 0.0])
    rows = [",".join(f"{v:.5f}" for v in r) + f",{t:.5f}" for r, t in zip(x, yr, strict=True)]
    (tmp_path / "r.csv").write_text("a,b,c,d,y\n" + "\n".join(rows) + "\n")
    (tmp_path / "text.csv").write_text("a,colour,y\n1.0,2.0,0\n2.0,red,1\n3.0,blue,0\n")
    (tmp_path / "nan.csv").write_text("a,b,y\n1.0,2.0,0\n2.0,nan,1\n3.0,1.0,0\n4.0,0.5,1\n")
    (tmp_path / "bad.npz").write_bytes(b"this is not a zip archive")
    np.savez(tmp_path / "ok.npz", X=x, y=y)
    np.savez(tmp_path / "xonly.npz", X=x)
    (tmp_path / "dé.csv").write_text((tmp_path / "m.csv").read_text())
    (tmp_path / "one.csv").write_text("a,b,y\n" + "".join(f"{i},{i * 2},1\n" for i in range(20)))
    torch.save({"weight": torch.zeros(3)}, tmp_path / "weights.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(1).bytes(4096))
    # A checkpoint with every part but a config that is text (it resumed with exit 0 before)
    state = {"epoch": 1, "step": 1, "batch": 0, "best": None, "best_epoch": None, "history": [], "stop_reason": None}
    torch.save({"format": 1, "model": {"w": torch.zeros(1)}, "optimizer": {}, "scheduler": None, "scaler": None,
                "state": state, "step_losses": None, "rng": {"torch": torch.zeros(1), "cuda": [], "numpy": [],
                                                             "python": []}, "config": "a string"},
               tmp_path / "config_text.pt")
    return tmp_path


no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
no_mps = pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")

# (id, overrides, exit status, what the output must say). Paths are relative to the folder the
# command runs in (tmp_path).
CASES = [
    # -- composition: typos, types, options (Hydra's errors, made short)
    ("typo_in_key", ["optim.lrr=0.1"], 2, ["optim.lrr is not a key", "did you mean optim.lr?"]),
    ("key_in_wrong_place", ["epochs=3"], 2, ["epochs is not a key", "did you mean trainer.epochs?"]),
    ("typo_in_group", ["optimizer=sgd"], 2, ["optimizer is not a key", "did you mean optim?"]),
    ("wrong_type_int", ["trainer.epochs=ten"], 2, ["trainer.epochs=ten is not a whole number"]),
    ("wrong_type_float", ["optim.lr=fast"], 2, ["optim.lr=fast is not a number"]),
    ("unknown_option", ["model=transformer"], 2,
     ["model=transformer is not an option", "cnn, linear, mlp", "model._target_"]),
    ("unknown_option_typo", ["optim=adamm"], 2, ["optim=adamm", "did you mean optim=adam?"]),
    ("invalid_choice", ["trainer.on_nonfinite=stp"], 2,
     ["trainer.on_nonfinite=stp is not a valid choice", "stop, skip", "did you mean trainer.on_nonfinite=stop?"]),
    ("null_for_required_number", ["optim.lr=null"], 2, ["optim.lr cannot be null"]),
    ("unparsable_override", ["data.image_shape=[1,8"], 2, ["cannot read a command-line override"]),
    ("append_existing_key", ["+optim.lr=3"], 2, ["+optim.lr adds a key, but optim.lr already exists"]),
    ("list_expected", ["data.image_shape=5"], 2, ["data.image_shape must be a list"]),
    ("list_expected_shows_the_value", ["model.hidden=64"], 2, ["model.hidden must be a list", "model.hidden=[64]"]),
    ("val_split_smaller_than_the_processes", ["data=synthetic", "data.n_samples=20", "data.val_fraction=0.05",
                                              "data.batch_size=4", "trainer.devices=2"], 2,
     ["a held-out split has 1 sample(s), fewer than the 2 processes", "key: data.val_fraction"]),
    ("recipe_key_missing_in_option", ["experiment=regression_diabetes", "model=linear"], 2,
     ["model.hidden is not a key of LinearConfig", "experiment/regression_diabetes"]),
    # -- values
    ("lr_negative", ["optim.lr=-1"], 2, ["optim.lr=-1.0 is not allowed", "greater than 0"]),
    ("lr_zero", ["optim=sgd", "optim.lr=0"], 2, ["optim.lr=0.0 is not allowed"]),
    ("batch_size_zero", ["data.batch_size=0"], 2, ["data.batch_size=0 is not allowed", "at least 1"]),
    ("epochs_negative", ["trainer.epochs=-2"], 2, ["trainer.epochs=-2 is not allowed"]),
    ("fraction_is_one", ["data.val_fraction=1.0"], 2, ["data.val_fraction=1.0 is not allowed", "[0, 1)"]),
    ("fractions_leave_no_train", ["data.val_fraction=0.5", "data.test_fraction=0.5"], 2,
     ["add up to 1", "no samples to train on", "data.val_fraction"]),
    ("accumulate_zero", ["trainer.accumulate_grad_batches=0"], 2,
     ["trainer.accumulate_grad_batches=0 is not allowed"]),
    ("dropout_above_one", ["model.dropout=1.5"], 2, ["model.dropout=1.5 is not allowed"]),
    ("hidden_size_zero", ["model.hidden=[64,0]"], 2, ["model.hidden=[64,0] is not allowed"]),
    # torch's own checks, passed on with the key they are about (the boundary names it)
    ("nesterov_without_momentum", ["optim=sgd", "optim.nesterov=true", "optim.momentum=0"], 2,
     ["building the optimizer", "Nesterov momentum requires a momentum", "key: optim.nesterov"]),
    ("betas_out_of_range", ["optim.betas=[0.9,1.5]"], 2,
     ["Invalid beta parameter at index 1: 1.5", "key: optim.betas"]),
    ("broken_interpolation", ["scheduler=cosine", "scheduler.T_max=${trainer.epoch}"], 2,
     ["scheduler.T_max refers to a value that cannot be found", "trainer.epoch"]),
    ("unknown_precision", ["trainer.precision=16"], 2, ["trainer.precision=16", "32, bf16, fp16"]),
    ("objective_not_logged", [*CSV, "data.val_fraction=0", "objective=val_loss"], 2,
     ["objective=val_loss is not a value this run logs", "no validation split"]),
    # -- devices
    pytest.param(["device=cuda"], 2, ["device=cuda", "available here: cpu"], id="cuda_absent", marks=no_cuda),
    pytest.param(["device=mps"], 2, ["device=mps", "available here: cpu"], id="mps_absent", marks=no_mps),
    # -- files and data
    ("csv_without_path", ["data=csv"], 2, ["data.path and data.target are required", "data=csv"]),
    ("csv_missing_file", ["data=csv", "data.path=nope.csv", "data.target=y"], 2,
     ["file not found", "nope.csv", "data.path"]),
    ("csv_empty_path", ["data=csv", "data.path=''", "data.target=y"], 2,
     ["data.path is empty", "data.path=my_data.csv"]),
    ("csv_missing_column", ["data=csv", "data.path=m.csv", "data.target=label"], 2,
     ["no column 'label'", "'a', 'b', 'c', 'd', 'y'", "data.target"]),
    ("csv_text_feature", ["data=csv", "data.path=text.csv", "data.target=y"], 2,
     ["column 'colour' mixes numbers and text (value 'red' in data row 2, line 3", "data.categorical=[colour]"]),
    ("csv_nan_feature", ["data=csv", "data.path=nan.csv", "data.target=y"], 2,
     ["NaN or infinite values", "rows [1]"]),
    ("npz_unreadable", ["data=npz", "data.path=bad.npz"], 2, ["cannot read NPZ file", "bad.npz"]),
    ("data_source_returns_text", ["data._target_=usercode.text"], 2,
     ["data._target_=usercode.text returned a str", "key: data._target_"]),
    ("loss_does_not_fit_task", [*CSV, "loss=bce"], 2,
     ["the loss (BCELoss) fits a probability in [0, 1] per output", "multiclass task", "loss=cross_entropy"]),
    ("cnn_without_image_shape", [*CSV, "model=cnn"], 2, ["model=cnn needs image-shaped samples", "data.image_shape"]),
    ("mse_on_binary_labels", ["data=breast_cancer", "loss=mse"], 2,  # values from -0.49 to 1.49 under p_1
     ["the loss (MSELoss) fits real values (regression), but data.task=auto took the targets for a binary task",
      "key: data.task"]),
    # -- found by the adversarial pass of issue 17 (inputs no rule was written for)
    ("csv_features_empty_list", [*CSV, "data.features=[]"], 2,
     ["data.features=[] names no feature column", "key: data.features", "data.features=null"]),
    ("image_shape_mismatch", [*CSV, "data.image_shape=[2,3]"], 2,
     ["data.image_shape=[2, 3] holds 6 values, but each sample has 4 features", "fix: give [channels"]),
    ("npz_without_y", ["data=npz", "data.path=xonly.npz"], 2,
     ["has no array 'y'; it holds ['X']", "key: data.y_key", "fix: set data.y_key"]),
    ("logger_list_unknown_option", ["logger=[csv,neptune]"], 2,
     ["neptune is not an option of the 'logger' group; its options are csv, mlflow", "key: logger"]),
    ("override_unclosed_list", ["model.hidden=[64"], 2,
     ["cannot read a command-line override", "key: model.hidden", "fix: write overrides as key=value"]),
    ("path_not_ascii_unquoted", ["data=csv", "data.path=dé.csv", "data.target=y"], 2,
     ["cannot read a command-line override", "key: data.path", "'data.path=\"my file.csv\"'"]),
    ("model_nan_in_eval_mode", [*CSV, "model._target_=usercode.NaNEval"], 1,
     ["validation in epoch 1 gave val_loss=nan while the training losses were finite", "key: model._target_"]),
    ("callback_overwrites_val_loss", [*CSV, "callbacks=[usercode.NaNRow]"], 1,
     ["a callback's on_epoch_end changed trainrun's own value val_loss", "key: callbacks"]),
    ("callback_removes_lr", [*CSV, "callbacks=[usercode.DropsLr]"], 1,
     ["a callback's on_epoch_end changed trainrun's own value lr", "key: callbacks"]),
    ("model_nan_in_eval_inside_an_epoch", [*CSV, "model._target_=usercode.NaNEval", "trainer.val_every_n_steps=2"], 1,
     ["validation in epoch 1 gave val_loss=nan", "key: model._target_"]),
    # -- user _target_ modules
    ("target_not_importable", ["model._target_=nosuchmod.Net"], 2,
     ["cannot import model._target_='nosuchmod.Net'", "No module named 'nosuchmod'",
      "('nosuchmod') must be importable from"]),
    ("target_rejects_argument", [*CSV, "model._target_=usercode.Net", "+model.width=3"], 2,
     ["model.width=3 is not an argument of usercode.Net", "in_features, out_features"]),
    ("target_not_a_module", [*CSV, "model._target_=usercode.make_list"], 2, ["built a list, not a torch.nn.Module"]),
    ("optimizer_rejects_value", ["optim=sgd", "+optim.momentum_decay=0.1"], 2,
     ["optim.momentum_decay=0.1 is not an argument of torch.optim.SGD"]),
    # -- preflight, end to end
    ("model_forward_fails", [*CSV, "model._target_=usercode.Crash"], 2,
     ["preflight: the model failed on a batch x of shape [16,4]", "mat1 and mat2", "model._target_"]),
    ("output_would_broadcast", ["data=csv", "data.path=r.csv", "data.target=y", "data.batch_size=16",
                                "loss=mse", "model._target_=usercode.Squeezed"], 2,
     ["output has shape [16]", "broadcast them to [16,16]"]),
    ("unused_layer", [*CSV, "model._target_=usercode.Unused"], 2,
     ["extra.weight [7,4]", "unused layer"]),
    # -- composition (more)
    ("typo_in_nested_key", ["trainer.grad_clip.maxnorm=1"], 2,
     ["trainer.grad_clip.maxnorm is not a key", "did you mean trainer.grad_clip.max_norm?"]),
    ("wrong_type_bool", ["trainer.deterministic=maybe"], 2, ["trainer.deterministic=maybe is not true or false"]),
    ("unknown_compile_mode", ["trainer.compile=maybe"], 2,
     ["trainer.compile=maybe is not allowed", "false, true, default, reduce-overhead", "key: trainer.compile"]),
    ("reduce_overhead_on_cpu", ["device=cpu", "trainer.compile=reduce-overhead"], 2,
     ["replays the training step as a CUDA graph, which exists only on CUDA devices", "trainer.compile=false"]),
    ("unknown_device_option", ["device=tpu"], 2, ["device=tpu is not an option", "did you mean device=cpu?"]),
    ("unknown_logger_option", ["logger=tensorboardd"], 2, ["did you mean logger=tensorboard?"]),
    ("wrong_type_in_list", ["model.hidden=[a]"], 2, ["model.hidden[0]=a is not a whole number"]),
    # -- closed sections: a +key nothing reads is refused like a typo
    ("plus_key_trainer", ["+trainer.max_epochs=3"], 2,
     ["trainer.max_epochs is not a key trainrun", "did you mean trainer.epochs?"]),
    ("plus_key_top_level", ["+seed=1"], 2, ["seed is not a key trainrun", "did you mean trainer.seed?"]),
    ("plus_key_top_level_list", ["+notes=[a,b]"], 2, ["notes is not a key trainrun", "key: notes"]),
    ("plus_key_nested", ["+trainer.grad_clip.maxnorm=1"], 2,
     ["trainer.grad_clip.maxnorm is not a key trainrun", "did you mean trainer.grad_clip.max_norm?"]),
    ("plus_key_without_scheduler", ["+scheduler.foo=1"], 2, ["scheduler.foo is not a key trainrun"]),
    ("plus_key_checkpoint", ["+checkpoint.keep_last=3"], 2, ["checkpoint.keep_last is not a key trainrun"]),
    ("plus_key_device", ["+device.index=1"], 2, ["device.index is not a key trainrun"]),
    ("plus_key_data_source", ["+data.foo=1"], 2,
     ["data.foo=1 is not an argument of trainrun.data.sources.load_sklearn"]),
    # -- values (more)
    ("lr_infinite", ["optim.lr=inf"], 2, ["optim.lr=inf is not a finite number"]),
    ("clip_nan", ["trainer.grad_clip.max_norm=nan"], 2, ["trainer.grad_clip.max_norm=nan is not a finite number"]),
    ("momentum_above_one", ["optim=sgd", "optim.momentum=1.5"], 2,
     ["optim.momentum=1.5 is not allowed", "in [0, 1)"]),
    ("seed_too_big", ["trainer.seed=99999999999999999999"], 2,
     ["trainer.seed=99999999999999999999 is not allowed", "2**32"]),
    ("seed_negative", ["data.seed=-3"], 2, ["data.seed=-3 is not allowed"]),
    ("limit_val_batches_zero", ["trainer.limit_val_batches=0"], 2,
     ["trainer.limit_val_batches=0 is not allowed", "key: trainer.limit_val_batches"]),
    ("limit_train_batches_zero", ["trainer.limit_train_batches=0"], 2,
     ["trainer.limit_train_batches=0 is not allowed"]),
    ("devices_zero", ["trainer.devices=0"], 2, ["trainer.devices=0 is not allowed"]),
    ("clip_negative", ["trainer.grad_clip.max_norm=-1"], 2, ["trainer.grad_clip.max_norm=-1.0 is not allowed"]),
    ("patience_negative", ["trainer.early_stopping.patience=-1"], 2,
     ["trainer.early_stopping.patience=-1 is not allowed"]),
    ("every_n_epochs_zero", ["checkpoint.every_n_epochs=0"], 2, ["checkpoint.every_n_epochs=0 is not allowed"]),
    ("step_size_zero", ["scheduler=step", "scheduler.step_size=0"], 2, ["scheduler.step_size=0 is not allowed"]),
    ("t_max_zero", ["scheduler=cosine", "scheduler.T_max=0"], 2, ["scheduler.T_max=0 is not allowed"]),
    ("precision_word", ["trainer.precision=fp32"], 2, ["trainer.precision=fp32", "did you mean 32?"]),
    ("dropout_negative", ["model.dropout=-0.5"], 2, ["model.dropout=-0.5 is not allowed"]),
    # -- watched names, their directions, scheduler cadence
    ("monitor_mode_contradicts", ["checkpoint.monitor=val_acc", "checkpoint.mode=min"], 2,
     ["checkpoint.mode=min contradicts val_acc", "best.pt would keep the worst epoch"]),
    ("monitor_typo", ["checkpoint.monitor=valloss"], 2,
     ["checkpoint.monitor=valloss is not a value this run logs", "val_loss"]),
    ("early_stopping_mode_contradicts", ["trainer.early_stopping.patience=2", "trainer.early_stopping.mode=max"], 2,
     ["trainer.early_stopping.mode=max contradicts val_loss"]),
    ("early_stopping_monitor_not_logged", ["trainer.early_stopping.patience=2", "trainer.early_stopping.monitor=acc"],
     2, ["trainer.early_stopping.monitor=acc is not a value this run logs"]),
    ("scheduler_monitor_typo_named_before_its_mode", ["scheduler=plateau", "scheduler.monitor=val_accc"], 2,
     ["scheduler.monitor=val_accc is not a value this run logs", "key: scheduler.monitor"]),
    ("objective_needs_its_metric", ["objective=val_auroc"], 2, ["objective=val_auroc", "add metrics=[auroc]"]),
    ("scheduler_monitor_on_steplr", ["scheduler=step", "scheduler.monitor=val_loss"], 2,
     ["StepLR steps on its own", "key: scheduler.monitor"]),
    ("plateau_without_monitor", ["scheduler=plateau", "scheduler.monitor=null"], 2,
     ["ReduceLROnPlateau steps on a monitored value, but scheduler.monitor is null"]),
    ("plateau_stepped_per_step", ["scheduler=plateau", "scheduler.interval=step"], 2,
     ["key: scheduler.interval", "known once per epoch"]),
    ("plateau_mode_contradicts", ["scheduler=plateau", "scheduler.mode=max"], 2,
     ["scheduler.mode=max contradicts val_loss"]),
    ("metric_unknown", ["metrics=[f11]"], 2, ["'f11' is not a known metric", "key: metrics"]),
    ("metric_wrong_task", ["metrics=[rmse]"], 2, ["'rmse' does not apply to this run's task (multiclass)"]),
    # -- torch's own checks, worded by the boundary with the key they are about
    ("weight_decay_negative", ["optim.weight_decay=-1"], 2,
     ["building the optimizer", "Invalid weight_decay value", "key: optim.weight_decay"]),
    ("label_smoothing_above_one", ["loss.label_smoothing=1.5"], 2,
     ["label_smoothing", "key: loss.label_smoothing"]),
    ("pct_start_above_one", ["scheduler=onecycle", "scheduler.pct_start=1.5"], 2,
     ["building the scheduler", "pct_start", "key: scheduler.pct_start"]),
    # -- targets that are not what they claim
    ("optimizer_class_is_a_layer", ["optim._target_=torch.nn.Linear"], 2,
     ["optim._target_=torch.nn.Linear is the class Linear, not a torch.optim.Optimizer"]),
    ("optimizer_factory_returns_a_layer", ["optim._target_=usercode.bad_optimizer"], 2,
     ["built a Linear, not a torch.optim.Optimizer"]),
    ("optimizer_over_copies", ["optim._target_=usercode.copy_optimizer"], 2,
     ["not parameters of the model", "key: optim._target_"]),
    ("scheduler_class_is_an_optimizer", ["scheduler._target_=torch.optim.SGD"], 2,
     ["is the class SGD, not a learning-rate scheduler"]),
    ("loss_is_a_function", ["loss._target_=builtins.len"], 2,
     ["building the loss (loss._target_=builtins.len) failed"]),
    ("loss_is_not_a_loss", ["loss._target_=torch.nn.ReLU"], 2, ["ReLU failed on output", "key: loss"]),
    ("logger_without_methods", ["logger.csv._target_=builtins.dict"], 2,
     ["has no log_params, log_epoch, log_summary, close method(s)"]),
    ("model_without_parameters", ["model._target_=usercode.NoParams"], 2, ["has no trainable parameters"]),
    ("model_init_raises", ["model._target_=usercode.InitRaises"], 2,
     ["building the model (model._target_=usercode.InitRaises) failed", "cannot build: no weights file",
      "raised in usercode.py:"]),
    ("model_returns_a_dict", ["model._target_=usercode.Dict"], 2, ["the model returned a dict, not a tensor"]),
    ("target_attribute_missing", ["model._target_=usercode.Nope"], 2,
     ["cannot import model._target_='usercode.Nope'", "has no attribute 'Nope'"]),
    # -- data sources of the user's
    ("source_returns_none", ["data._target_=usercode.returns_none"], 2, ["returned a NoneType"]),
    ("source_returns_three_arrays", ["data._target_=usercode.returns_three"], 2, ["returned a tuple of 3 items"]),
    ("source_unequal_lengths", ["data._target_=usercode.unequal"], 2, ["X of shape [10, 3] and y of shape [7]"]),
    ("source_text_features", ["data._target_=usercode.strings"], 2, ["the features must be numbers"]),
    ("source_single_class", ["data._target_=usercode.one_class"], 2, ["the targets hold a single class (0"]),
    ("source_no_samples", ["data._target_=usercode.empty"], 2, ["the data source returned no samples"]),
    ("source_nan_target", ["data._target_=usercode.nan_target", "data.task=regression", "loss=mse"], 2,
     ["the targets hold NaN or infinite values (rows [3]"]),
    ("source_raises", ["data._target_=usercode.source_raises"], 2,
     ["reading the data (data._target_=usercode.source_raises) failed", "ConnectionError: database is down",
      "raised in usercode.py:"]),
    ("dataset_of_strings", ["data._target_=usercode.StrDataset"], 2, ["sample 0 is (str, int)"]),
    ("dataset_empty", ["data._target_=usercode.EmptyDataset"], 2, ["is empty (len 0)"]),
    ("split_rounds_to_nothing", ["data=iris", "data.val_fraction=0.001"], 2,
     ["data.val_fraction=0.001 of 150 samples", "rounds to none"]),
    ("npz_missing_array", ["data=npz", "data.path=ok.npz", "data.y_key=target"], 2,
     ["has no array 'target'", "key: data.y_key"]),
    ("single_class_csv", ["data=csv", "data.path=one.csv", "data.target=y"], 2, ["single class"]),
    # -- resume
    ("resume_missing_file", ["resume=nope.pt"], 2, ["resume='nope.pt': no checkpoint at", "key: resume"]),
    ("resume_folder_without_checkpoint", ["resume=."], 2, ["no checkpoint at", "key: resume"]),
    ("resume_bare_state_dict", ["resume=weights.pt"], 2, ["is not a trainrun checkpoint", "key: resume"]),
    ("resume_zero_byte_file", ["resume=empty.pt"], 2, ["empty.pt", "the file is empty (0 bytes", "key: resume"]),
    ("resume_random_bytes", ["resume=random.pt"], 2,
     ["random.pt", "is not a trainrun checkpoint: it is not a torch.save archive", "key: resume",
      "fix: resume from a run's checkpoints/last.pt"]),
    # -- found by the adversarial pass (issue 11): each was a traceback, a wrong key, or exit 0
    ("remove_required_key", ["~trainer.epochs"], 2,
     ["~trainer.epochs removes a key that every run reads", "fix: give it a value instead"]),
    ("key_of_another_option", ["data=csv", "data.path=m.csv", "data.target=y", "data.n_samples=3"], 2,
     ["data.n_samples is not a key of 'data' as chosen (only data=synthetic has it)"]),
    ("group_set_to_null", ["logger=null"], 2,
     ["logger=null: a group's choice cannot be null", "key: logger", "logger=[] turns every logger off"]),
    ("plateau_threshold_negative", ["scheduler=plateau", "scheduler.threshold=-1"], 2,
     ["scheduler.threshold=-1.0 is not allowed: it must be 0 or more"]),
    ("profiler_active_zero", ["profiler.active=0"], 2, ["profiler.active=0 is not allowed"]),
    ("threads_beyond_cpus", ["trainer.threads=100000"], 2,
     ["trainer.threads=100000 is not allowed: it must be between 1 and this machine's"]),
    ("run_dir_empty", ["hydra.run.dir="], 2, ["hydra.run.dir is empty", "key: hydra.run.dir"]),
    ("job_chdir", ["hydra.job.chdir=true"], 2, ["hydra.job.chdir=true would run the task inside the run folder"]),
    ("target_takes_the_key", ["scheduler=plateau", "scheduler.min_lr=0.001"], 2,
     ["scheduler.min_lr is not a key", "ReduceLROnPlateau takes min_lr: add it with +scheduler.min_lr=0.001"]),
    ("model_exits_in_forward", ["model._target_=usercode.ExitsInForward"], 2,
     ["preflight", "SystemExit: the code called sys.exit(0)", "raised in usercode.py:", "key: model._target_"]),
    ("model_output_without_data", ["model._target_=usercode.OnMeta"], 2,
     ["preflight", "cannot be called on meta tensors", "key: model._target_"]),
    ("dataset_ragged_samples", ["data._target_=usercode.RaggedDataset"], 2,
     ["preflight", "stack expects each tensor to be equal size", "key: data._target_"]),
    ("optimizer_step_needs_closure", ["optim._target_=torch.optim.LBFGS"], 2,
     ["its step() needs a closure", "key: optim._target_"]),
    ("scheduler_raises_while_training", [*CSV, "scheduler._target_=usercode.RaisingSchedule",
                                         "scheduler.interval=step"], 1,
     ["training (epoch 1, batch 2) failed: RuntimeError: schedule table exhausted", "key: scheduler._target_"]),
    ("scheduler_makes_lr_negative", [*CSV, "scheduler._target_=usercode.NegativeSchedule",
                                     "scheduler.interval=step"], 1,
     ["NegativeSchedule set the learning rate of parameter group 0 to -", "key: scheduler._target_"]),
    ("loss_fails_in_validation", [*CSV, "loss._target_=usercode.FailsWhenEvaluating"], 1,
     ["validating after epoch 1 failed: ValueError: no loss for validation", "key: loss._target_"]),
    ("user_loss_without_init", [*CSV, "loss._target_=usercode.PerSampleLoss"], 2,
     ["PerSampleLoss returned [16], not a single number"]),
    ("provided_key_would_be_ignored", [*CSV, "+model.in_features=5"], 2,
     ["model.in_features=5 would be ignored: trainrun passes in_features=4", "key: model.in_features"]),
    ("source_two_label_columns", ["data._target_=usercode.two_label_columns", "data.task=multiclass"], 2,
     ["needs one label per sample, but y has shape [40, 2]", "key: data.task"]),
    ("source_scalar_target", ["data._target_=usercode.scalar_target"], 2, ["y of shape []"]),
    ("dataset_fractional_labels", ["data._target_=usercode.FractionalLabels", "data.task=multiclass"], 2,
     ["labels must be class ids", "0.25", "key: data.task"]),
    ("betas_too_short", ["optim.betas=[0.9]"], 2, ["IndexError: list index out of range", "key: optim.betas"]),
    ("resume_config_not_a_dict", ["resume=config_text.pt"], 2,
     ["is not a whole trainrun checkpoint: its 'config' entry is a str", "key: resume"]),
    ("hydra_callback_in_the_working_folder", [*CSV, "+hydra.callbacks.mine._target_=usercode.Net"], 2,
     ["hydra.callbacks.mine._target_=usercode.Net: Hydra cannot import it (ModuleNotFoundError",
      "the working folder is not searched", "key: hydra.callbacks.mine._target_", "callbacks=[...]"]),
    ("hydra_callback_class_missing", [*CSV, "+hydra.callbacks.mine._target_=trainrun.cli.sweep.NoSuch"], 2,
     ["module 'trainrun.cli.sweep' has no 'NoSuch'", "key: hydra.callbacks.mine._target_"]),
    ("hydra_callback_constructor_raises", [*CSV, "+hydra.callbacks.mine._target_=trainrun.cli.sweep.SweepSummary",
                                           "+hydra.callbacks.mine.colour=red"], 2,
     ["hydra.callbacks.mine: building trainrun.cli.sweep.SweepSummary raised TypeError", "colour",
      "key: hydra.callbacks.mine"]),
    ("hydra_callback_not_a_class", [*CSV, "+hydra.callbacks.mine._target_=os.sep"], 2,
     ["hydra.callbacks.mine._target_ names a str ('/'), not a class", "key: hydra.callbacks.mine._target_"]),
    ("hydra_callback_empty_target", [*CSV, "+hydra.callbacks.mine._target_=''"], 2,
     ["hydra.callbacks.mine._target_ is empty", "key: hydra.callbacks.mine._target_"]),
    ("forward_raises_in_epoch_2", [*CSV, "model._target_=usercode.RaisesLater", "+model.at=7", "trainer.epochs=2"],
     1, ["training (epoch 2, batch ", ") failed: ValueError: boom in forward", "raised in usercode.py:",
         "key: model._target_"]),
]

PARAMS = [c if hasattr(c, "marks") else pytest.param(*c[1:], id=c[0]) for c in CASES]


@pytest.mark.parametrize("overrides, status, needles", PARAMS)
def test_bad_input(train, folder: Path, overrides, status, needles) -> None:
    result = train(*QUIET, *overrides, check=False)
    out = result.output
    assert result.returncode == status, out
    assert "Traceback" not in out, out
    assert "Error: " in out, out
    for needle in needles:
        assert needle in out, f"{needle!r} not in:\n{out}"
    assert_nothing_half_written(result.run_dir)


def assert_nothing_half_written(run_dir: Path) -> None:
    """Whatever a failed run left is whole: no temporary file of a write, every JSON parses and
    every checkpoint loads."""
    if not run_dir.exists():
        return
    leftovers = [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == [], leftovers
    for path in run_dir.rglob("*.json"):
        json.loads(path.read_text())
    for path in run_dir.rglob("*.pt"):
        torch.load(path, map_location="cpu", weights_only=True)


def test_error_is_recorded_in_run_log(train, folder: Path) -> None:
    result = train(*QUIET, *CSV, "model._target_=usercode.Crash", check=False)
    assert result.returncode == 2
    logs = list(result.run_dir.glob("*.log"))
    assert logs and "mat1 and mat2" in logs[0].read_text()


def test_an_error_while_training_is_recorded_in_run_log(train, folder: Path) -> None:
    """A user model's forward raising in epoch 2: one paragraph on the console and the same in
    train.log, with the epoch, the batch and the line of the user's code."""
    result = train("print_config=false", "trainer.epochs=2", *CSV, "model._target_=usercode.RaisesLater",
                   "+model.at=7", check=False)
    assert result.returncode == 1 and "Traceback" not in result.output
    log = (result.run_dir / "train.log").read_text()
    assert "training (epoch 2, batch " in log and ") failed: ValueError: boom in forward" in log
    assert "raised in usercode.py:" in log


def test_resume_from_a_checkpoint_of_other_shapes(train, folder: Path) -> None:
    """A trainrun checkpoint whose stored config matches but whose weights have other shapes
    (copied from another run, edited): the resume phase names resume=, exit 2, no traceback."""
    first = train("print_config=false", *CSV, run_dir=folder / "a")
    saved = torch.load(first.run_dir / "checkpoints" / "last.pt", weights_only=True)
    saved["model"] = {k: torch.zeros(*(s + 1 for s in v.shape)) for k, v in saved["model"].items()}
    torch.save(saved, folder / "other.pt")
    result = train("print_config=false", *CSV, "resume=other.pt", run_dir=folder / "b", check=False)
    assert result.returncode == 2, result.output
    assert "Traceback" not in result.output
    assert "resuming from resume=other.pt failed" in result.output and "size mismatch" in result.output
    assert "key: resume" in result.output


def test_full_error_shows_traceback(train, folder: Path) -> None:
    """HYDRA_FULL_ERROR=1 is the way to see where an error came from."""
    result = train(*QUIET, "optim.lrr=0.1", check=False, env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0
    assert "Traceback" in result.output


def test_importing_trainrun_leaves_the_environment_alone() -> None:
    """Importing the CLI changes no environment variable: a process that imports trainrun (a test
    runner, a notebook) and then starts `HYDRA_FULL_ERROR=1 train ...` must not hand it a stale
    record of its own choice (CI once lost the traceback that way)."""
    code = ("import os; before = dict(os.environ); import trainrun.cli.main, trainrun.cli.hydra_errors; "
            "print(sorted(set(os.environ.items()) ^ set(before.items())))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=env_for_tests())
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_nonfinite_loss_stops(train, folder: Path) -> None:
    """The loss turns NaN in epoch 2, batch 2: exit 1, the message says where, and what epoch 1
    wrote is intact and readable."""
    result = train("print_config=false", "trainer.epochs=3", *CSV, "data.val_fraction=0.25",
                   "model._target_=usercode.Blowup", "+model.at=5", check=False)
    out = result.output
    assert result.returncode == 1, out
    assert "Traceback" not in out
    assert "non-finite in epoch 2, batch 2" in out, out
    assert "last finite loss:" in out and "optim.lr" in out
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    saved = torch.load(result.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert saved["state"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    assert "non-finite" in next(result.run_dir.glob("*.log")).read_text()


def test_nonfinite_loss_skipped(train, folder: Path) -> None:
    """With on_nonfinite=skip the NaN batch adds no gradient and the run completes."""
    result = train("print_config=false", "trainer.epochs=2", *CSV, "data.val_fraction=0.25",
                   "model._target_=usercode.Blowup", "+model.at=5", "+model.once=true",
                   "trainer.on_nonfinite=skip")
    rows = result.metrics
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in rows)
    saved = torch.load(result.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert int(saved["model"]["calls"]) == 6  # 3 batches x 2 epochs; preflight's call undone
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def test_no_checkpoint_holds_weights_trained_on_a_nan(train, folder: Path) -> None:
    """Step checkpoints every step, and the loss turns NaN at step 6: the run stops there
    without saving the NaN-trained weights, last.pt is the step before, and the run resumes
    from it (here with on_nonfinite=skip, which passes the one bad batch)."""
    common = ("print_config=false", "trainer.epochs=3", *CSV, "data.val_fraction=0.25",
              "model._target_=usercode.Blowup", "+model.at=6", "+model.once=true",
              "checkpoint.every_n_steps=1")
    result = train(*common, check=False)
    assert result.returncode == 1, result.output
    assert "non-finite in epoch 2, batch 3" in result.output  # 3 batches per epoch: step 6
    saved = torch.load(result.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert saved["state"]["step"] == 5
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    resumed = train(*common, "resume=auto", "trainer.on_nonfinite=skip")
    assert "resumed from" in resumed.output and "epoch 2, after batch 2 (step 5)" in resumed.output
    assert resumed.summary["status"] == "completed"


# --------------------------------------------------------------------------- the boundary itself


def test_table_is_big_enough() -> None:
    """The table covers every phase with many cases (plus the environment and crafted-file
    tests below): a mechanism is tested by the cases no rule was written for."""
    assert len(CASES) >= 100
