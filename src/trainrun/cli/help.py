"""``train --help``, ``evaluate --help``, ``predict --help`` and ``export --help``, built only when asked.

The console scripts answer ``--help`` / ``-h`` here, before Hydra's own app starts: Hydra's help
formats every config group it can see (most of them trainrun's ``schema/*`` registrations) and
costs several times a composition. The help composes the config once with the user's overrides
(Hydra's compose API), so the current choices are marked, and lists the option files of every
config folder in use: trainrun's ``configs/``, ``--config-dir`` and ``hydra.searchpath`` entries.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from trainrun.cli.reference import GROUPS, Key, group_options, schema_keys, top_keys
from trainrun.config import config_dir
from trainrun.config import schemas as primary
from trainrun.config.groups import DataConfig
from trainrun.errors import TrainrunError

HELP_FLAGS = ("--help", "-h")

EXAMPLES = [
    ("train", "digits, an MLP and Adam: a result in seconds"),
    ("train model=cnn optim=sgd optim.lr=0.05 trainer.epochs=30", "swap groups, set keys"),
    ("train experiment=tutorial_binary", "a recipe (configs/experiment/)"),
    ("train debug=overfit", "sanity check: train loss should reach ~0"),
    ("train -m optim.lr=0.001,0.01,0.1 model=mlp,linear", "sweep: 6 jobs, summary.csv in multirun/..."),
    ("train -m hparams_search=mlp hydra.sweeper.n_trials=30", "Optuna search"),
    ("train -m hydra/launcher=slurm hydra.launcher.partition=gpu optim.lr=0.1,0.01",
     "SLURM array job"),
    ("train hydra.run.dir=<run folder> resume=auto", "resume a run from its last.pt"),
    ("evaluate run=<run folder> split=train", "score best.pt on a split"),
    ("predict run=<run folder> data=csv data.path=new.csv", "predictions.csv for new rows"),
    ("export-model run=<run folder> format=onnx", "the network as ONNX (or safetensors, ...)"),
    ("train logger=[csv,tensorboard] metrics=[f1,auroc] data=breast_cancer loss=bce",
     "TensorBoard + extra metrics"),
]

TRAIN_HEADER = """\
train: train a PyTorch model from YAML configs composed by Hydra.

Usage
  train [GROUP=OPTION ...] [KEY=VALUE ...]      one run, into outputs/<date>/<time>/
  train -m KEY=A,B,C [GROUP=X,Y ...]            a sweep: one job per combination, under multirun/
  train --cfg job [--resolve]                   print the composed config and stop
  train --info [defaults|config|searchpath]     where each part of the config came from
  train --hydra-help                            Hydra's own options (launchers, sweepers, logging)
  train --config-dir DIR --help                 also list the groups and options of DIR"""

TRAIN_FOOTER = """\
Every key with its type, default and meaning: docs/configuration.md.
How model, loss and optimizer are bound: docs/user-guide.md. Recipes: docs/recipes.md."""

EVALUATE_HELP = """\
evaluate: score a trained run's checkpoint on one split (loss and metric, eval.json,
optionally predictions.csv). The model and data are rebuilt from the config stored in the
checkpoint, exactly as `train` built them.

Options (key=value)
{keys}

Examples
  evaluate run=outputs/2026-11-24/08-30-00-123456                # best.pt, val split
  evaluate run=<run folder> split=train predictions=true          # + predictions.csv
  evaluate run=<run folder> checkpoint=last split=train
  evaluate run=<run folder>/checkpoints/best.pt device=cpu
  evaluate run=<run folder> data=csv data.path=new.csv data.target=label
  evaluate run=<run folder> trust=[mynet]                         # a run of your own model
New data is scaled and encoded with the training split's statistics saved in the checkpoint.
Results go to <run folder>/eval/<checkpoint>_<split>/ (out=<folder> to choose).
Exit status: 0 done, 2 a wrong argument or a missing run/checkpoint/split.
Docs: docs/checkpoints.md"""

PREDICT_HELP = """\
predict: a trained run's model on new data; predictions.csv (row, prediction, p_<label> per
class, or the value in the target's units) in a run folder of its own, predictions/<date>/<time>/.
The new rows are scaled and encoded with the training split's statistics saved in the checkpoint.

Options (key=value; data=<option> and data.<key>=... as for train)
{keys}

Examples
  predict run=outputs/2026-11-24/08-30-00-123456 data=csv data.path=new.csv   # no target column needed
  predict run=<run folder> data=npz data.path=new.npz                          # an archive with X only
  predict run=<run folder> checkpoint=last data=csv data.path=new.csv device=cpu
  predict run=<run folder> data._target_=mydata.load_new trust=[mynet]
Exit status: 0 done, 2 a wrong argument, a missing run/checkpoint, or data that does not fit.
Docs: docs/deploy.md"""

EXPORT_HELP = """\
export-model: a trained run's whole network (with the head its loss added) as a file, checked by
loading it back, with preprocessing.json (the input statistics) beside it, in
<run folder>/export/<checkpoint>/.

Options (key=value)
{keys}

Examples
  export-model run=outputs/2026-11-24/08-30-00-123456                 # model.safetensors (the weights)
  export-model run=<run folder> format=exported                       # model.pt2, torch.export
  export-model run=<run folder> format=torchscript checkpoint=last    # model.torchscript.pt
  export-model run=<run folder> format=onnx                           # model.onnx: pip install 'trainrun[onnx]'
Exit status: 0 done, 2 a wrong argument or a missing run/checkpoint/extra, 1 an export that failed.
Docs: docs/deploy.md"""


def wants_help(argv: list[str]) -> bool:
    return any(arg in HELP_FLAGS for arg in argv[1:])


# --------------------------------------------------------------------------- the command line


def _split_args(argv: list[str]) -> tuple[list[str], list[str], str | None]:
    """``(overrides, extra config folders, config name)`` from a command line."""
    overrides, folders, name = [], [], None
    args = iter(argv[1:])
    for arg in args:
        if arg in HELP_FLAGS or arg in ("-m", "--multirun"):
            continue
        for flags, kind in ((("--config-dir", "-cd"), "dir"), (("--config-name", "-cn"), "name")):
            flag = next((f for f in flags if arg == f or arg.startswith(f + "=")), None)
            if flag is not None:
                value = arg.split("=", 1)[1] if "=" in arg else next(args, "")
                if kind == "dir":
                    folders.append(value)
                else:
                    name = value
                break
        else:
            if not arg.startswith("-"):
                overrides.append(arg)
    return overrides, folders, name


def _searchpath_override(overrides: list[str], folders: list[str]) -> list[str]:
    """``--config-dir`` folders join the search path as ``hydra.searchpath`` entries."""
    if not folders:
        return overrides
    entries = [f"file://{Path(f).expanduser().resolve()}" for f in folders]
    kept = [o for o in overrides if not o.startswith("hydra.searchpath=")]
    given = next((o.split("=", 1)[1].strip("[]") for o in overrides if o.startswith("hydra.searchpath=")), "")
    joined = ",".join([e for e in given.split(",") if e] + entries)
    return [*kept, f"hydra.searchpath=[{joined}]"]


def _roots(cfg: DictConfig) -> list[Path]:
    """The config folders in use: trainrun's, then the search path's ``file://`` entries."""
    roots = [config_dir()]
    for entry in cfg.hydra.get("searchpath") or []:
        entry = str(entry)
        path = Path(entry[len("file://"):] if entry.startswith("file://") else entry)
        local = "://" not in entry or entry.startswith("file://")  # pkg:// entries hold no files here
        if local and path.is_dir() and path.resolve() not in [r.resolve() for r in roots]:
            roots.append(path)
    return roots


def compose_for_help(argv: list[str], app: str) -> tuple[DictConfig, list[Path]]:
    overrides, folders, name = _split_args(argv)
    overrides = _searchpath_override(overrides, folders)
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None, job_name=app):
        cfg = compose(name or app, overrides=overrides, return_hydra_config=True)
    return cfg, _roots(cfg)


# --------------------------------------------------------------------------- the text


def _wrap(head: str, text: str, width: int) -> list[str]:
    """``head`` then ``text``, wrapped under itself: descriptions are never cut."""
    indent = " " * len(head)
    return textwrap.wrap(text, width=width, initial_indent=head, subsequent_indent=indent,
                         break_on_hyphens=False) or [head.rstrip()]


def _choices(cfg: DictConfig, group: str) -> list[str]:
    if group == "logger":
        return list((cfg.get("logger") or {}).keys())
    value = cfg.hydra.runtime.choices.get(group)
    return [] if value is None else [str(value)]


def groups_section(cfg: DictConfig, roots: list[Path], width: int) -> list[str]:
    lines: list[str] = []
    for group, options in group_options(roots).items():
        current = _choices(cfg, group)
        lines += _wrap(f"  {group:<18}", GROUPS.get(group, ""), width)
        pad = max(16, max(len(o.name) for o in options) + 2)
        for option in options:
            mark = "*" if option.name in current else " "
            lines += _wrap(f"    {mark} {option.name:<{pad}}", option.doc, width)
    return lines


def keys_section(keys: list[Key], prefix: str, width: int) -> list[str]:
    lines: list[str] = []
    for key in keys:
        if key.name == "_target_":
            continue
        setting = f"{prefix}{key.name}={key.default}"
        head = f"  {setting:<42}" if len(setting) < 42 else f"  {setting}  "
        lines += _wrap(head, key.doc, width)
    return lines


def train_help(cfg: DictConfig, roots: list[Path], width: int = 118) -> str:
    examples = []
    for command, what in EXAMPLES:
        examples += [f"  {command:<62}  # {what}"] if len(command) <= 62 else [f"  # {what}:", f"  {command}"]
    parts = [
        TRAIN_HEADER,
        "Config groups (GROUP=OPTION; * marks the current choice)", *groups_section(cfg, roots, width), "",
        "Trainer keys (KEY=VALUE, shown with its default)",
        *keys_section(schema_keys(primary.TrainerConfig), "trainer.", width), "",
        "Data keys (every data option has them)",
        *keys_section(schema_keys(DataConfig), "data.", width), "",
        "Top-level keys", *keys_section(top_keys(), "", width), "",
        "Examples", *examples, "",
        TRAIN_FOOTER,
    ]
    parts.insert(1, "")
    return "\n".join(parts) + "\n"


def evaluate_help(width: int = 118) -> str:
    keys = keys_section(schema_keys(primary.EvaluateConfig), "", width)
    return EVALUATE_HELP.format(keys="\n".join(keys)) + "\n"


def command_help(app: str, width: int = 118) -> str:
    """``predict --help`` / ``export --help``: the keys of the command's schema and examples."""
    schema, text = {"predict": (primary.PredictConfig, PREDICT_HELP),
                    "export": (primary.ExportConfig, EXPORT_HELP)}[app]
    keys = [k for k in schema_keys(schema) if not k.name.startswith("data.") or k.name == "data._target_"]
    return text.format(keys="\n".join(keys_section(keys, "", width))) + "\n"


def print_help(app: str, argv: list[str]) -> None:
    """Print ``app``'s help for this command line (``train``, ``evaluate``, ``predict``, ``export``)."""
    width = min(118, max(80, shutil.get_terminal_size((118, 24)).columns - 2))
    if app == "evaluate":
        sys.stdout.write(evaluate_help(width))
        return
    if app in ("predict", "export"):
        sys.stdout.write(command_help(app, width))
        return
    try:
        cfg, roots = compose_for_help(argv, app)
    except Exception as err:  # a wrong override still gets the help, with the reason
        raise TrainrunError(f"cannot compose the config for --help: {err}") from err
    sys.stdout.write(train_help(cfg, roots, width))

