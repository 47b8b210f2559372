"""Toy user code for the tests: models, data sources, Datasets and optimizers, each built to
be right or to break one rule. Tests copy this file into the folder ``train`` runs in, as
``usercode.py``, and name its objects the way a user would: ``model._target_=usercode.Squeezed``.
"""

import os
import signal

import numpy as np
import torch
from torch import nn

# --------------------------------------------------------------------------- models


class KillsItself(nn.Module):
    """Rank 0 alone sends SIGTERM (or KILL_SIGNAL) at training call KILL_AT (when set) to
    itself, or with KILL_PARENT=1 to its launcher (torchrun's agent, a submitit job); only
    once when KILL_ONCE names a file (made then)."""

    def __init__(self, in_features, out_features, **unused):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_features, 32), nn.ReLU(), nn.Linear(32, out_features))
        self.calls = 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == int(os.environ.get("KILL_AT", "0")) and os.environ.get("RANK", "0") == "0":
                once = os.environ.get("KILL_ONCE")
                if not once or not os.path.exists(once):
                    if once:
                        open(once, "w").close()
                    whom = os.getppid() if os.environ.get("KILL_PARENT") else os.getpid()
                    os.kill(whom, getattr(signal, os.environ.get("KILL_SIGNAL", "SIGTERM")))
        return self.body(x)


class Net(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)

    def forward(self, x):
        return self.fc(x)


class Squeezed(nn.Module):
    "Returns [N] instead of [N, 1]."
    def __init__(self, in_features, out_features):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)

    def forward(self, x):
        return self.fc(x).squeeze(-1)


class FixedWidth(nn.Module):
    "Ignores out_features: always `width` outputs."
    def __init__(self, in_features, width=5):
        super().__init__()
        self.fc = nn.Linear(in_features, width)

    def forward(self, x):
        return self.fc(x)


class EndsIn(nn.Module):
    "Linear, then a final activation named by `last` (sigmoid, softmax, log_softmax)."
    def __init__(self, in_features, out_features, last="sigmoid"):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)
        self.last = {"sigmoid": nn.Sigmoid(), "softmax": nn.Softmax(dim=1),
                     "log_softmax": nn.LogSoftmax(dim=1)}[last]

    def forward(self, x):
        return self.last(self.fc(x))


class FunctionalSigmoid(nn.Module):
    "Ends in torch.sigmoid in forward: no nn.Sigmoid module to see."
    def __init__(self, in_features, out_features):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)

    def forward(self, x):
        return torch.sigmoid(self.fc(x))


class Unused(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)
        self.extra = nn.Linear(in_features, 7)

    def forward(self, x):
        return self.fc(x)


class DetachedMiddle(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.first = nn.Linear(in_features, 8)
        self.second = nn.Linear(8, out_features)

    def forward(self, x):
        return self.second(torch.relu(self.first(x)).detach())


class DetachedOutput(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)

    def forward(self, x):
        return self.fc(x).detach()


class Frozen(nn.Module):
    "The first layer is frozen on purpose."
    def __init__(self, in_features, out_features):
        super().__init__()
        self.first = nn.Linear(in_features, 8)
        self.second = nn.Linear(8, out_features)
        self.first.requires_grad_(False)

    def forward(self, x):
        return self.second(torch.relu(self.first(x)))


class Recreates(nn.Module):
    "Re-creates its layer on the first call: the optimizer keeps the old parameters."
    def __init__(self, in_features, out_features):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)
        self.fresh = False

    def forward(self, x):
        if not self.fresh:
            self.fc = nn.Linear(self.fc.in_features, self.fc.out_features)
            self.fresh = True
        return self.fc(x)


class NaNOutput(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)

    def forward(self, x):
        return self.fc(x) * float("nan")


class Pair(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)

    def forward(self, x):
        return self.fc(x), x


class Crash(nn.Module):
    "Hard-codes 7 input features."
    def __init__(self, out_features):
        super().__init__()
        self.fc = nn.Linear(7, out_features)

    def forward(self, x):
        return self.fc(x)


class Noisy(nn.Module):
    "BatchNorm running statistics and dropout: both change with a forward pass in train mode."
    def __init__(self, in_features, out_features):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, 16), nn.BatchNorm1d(16), nn.ReLU(),
                                 nn.Dropout(0.3), nn.Linear(16, out_features))

    def forward(self, x):
        return self.net(x)


def make_list(in_features, out_features):
    return [in_features, out_features]


class Blowup(nn.Module):
    "Its output turns NaN on training call `at` (`once`: only then; else from then on)."
    def __init__(self, in_features, out_features, at=5, once=False):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)
        self.at, self.once = at, once
        # A buffer, so preflight's trial forward pass is undone like any other state.
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        out = self.fc(x)
        if self.training:
            self.calls += 1
            n = int(self.calls)
            if n == self.at or (n > self.at and not self.once):
                out = out * float("nan")
        return out


# --------------------------------------------------------------------------- more models, data sources, optimizers


class NoParams(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.out_features = out_features

    def forward(self, x):
        return x.flatten(1)[:, : self.out_features]


class RaisesLater(nn.Module):
    "Raises on the training call number `at`."
    def __init__(self, in_features, out_features, at=60):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)
        self.at, self.calls = at, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                raise ValueError("boom in forward")
        return self.fc(x.flatten(1))


class Dict(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)

    def forward(self, x):
        return {"logits": self.fc(x.flatten(1))}


class InitRaises(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        raise RuntimeError("cannot build: no weights file")


def returns_none():
    return None


def returns_three():
    return np.zeros((4, 2)), np.zeros(4), np.zeros(4)


def unequal():
    return np.zeros((10, 3)), np.zeros(7)


def strings():
    return np.array([["a", "b"]] * 10), np.arange(10) % 2


def one_class():
    return np.random.default_rng(0).normal(size=(50, 3)), np.zeros(50, dtype=int)


def empty():
    return np.zeros((0, 3)), np.zeros(0)


def nan_target():
    x = np.random.default_rng(0).normal(size=(50, 3))
    y = x[:, 0].copy()
    y[3] = np.nan
    return x, y


class StrDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 20

    def __getitem__(self, i):
        return "text", i % 2


class EmptyDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 0

    def __getitem__(self, i):
        raise IndexError(i)


def source_raises():
    raise ConnectionError("database is down")


def bad_optimizer(params, lr=0.1):
    return torch.nn.Linear(2, 2)


def copy_optimizer(params, lr=0.1):
    return torch.optim.SGD([p.detach().clone().requires_grad_() for p in params], lr=lr)


def first_layer_only(params, lr=0.1):
    params = list(params)
    return torch.optim.SGD(params[:2], lr=lr)


class NaNFeatures(torch.utils.data.Dataset):
    def __len__(self):
        return 40

    def __getitem__(self, i):
        x = torch.full((3,), float(i))
        x[0] = float("nan")
        return x, i % 2


class NegativeLabels(torch.utils.data.Dataset):
    "Labels -1, 0, 1: not class indices in [0, C)."
    def __len__(self):
        return 40

    def __getitem__(self, i):
        return torch.full((3,), float(i)), i % 3 - 1


def text():
    return "not arrays"


# --------------------------------------------------------------------------- found by the adversarial pass (issue 11)


class OnMeta(Net):
    "Returns its output on the meta device (no data): torch fails reading it."
    def forward(self, x):
        return self.fc(x).to("meta")


class ExitsInForward(Net):
    "Calls sys.exit(0) in forward: without the boundary the run ended with status 0, no result."
    def forward(self, x):
        raise SystemExit(0)


class PerSampleLoss(nn.Module):
    "A loss module without an __init__ of its own, returning one loss per sample."
    def forward(self, out, y):
        return nn.functional.cross_entropy(out, y, reduction="none")


class RaisingSchedule(torch.optim.lr_scheduler.LRScheduler):
    "Raises from its second step on."
    def get_lr(self):
        if self.last_epoch >= 2:
            raise RuntimeError("schedule table exhausted")
        return [g["lr"] for g in self.optimizer.param_groups]


class NegativeSchedule(torch.optim.lr_scheduler.LRScheduler):
    "A linear decay sized for too few steps: the rate goes below 0."
    def get_lr(self):
        return [base * (1 - self.last_epoch / 2) for base in self.base_lrs]


class RaggedDataset(torch.utils.data.Dataset):
    "Samples of different lengths: the batches cannot be stacked."
    def __len__(self):
        return 40

    def __getitem__(self, i):
        return torch.zeros(1 + i % 3), i % 2


class FractionalLabels(torch.utils.data.Dataset):
    "Labels 0.25 and 1.25: a class loss would truncate them."
    def __len__(self):
        return 40

    def __getitem__(self, i):
        return torch.full((3,), float(i)), i % 2 + 0.25


def two_label_columns():
    "y with two integer columns: np.unique used to flatten it into two labels per sample."
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 3)), np.stack([np.arange(40) % 2, np.arange(40) % 3], 1)


def scalar_target():
    return np.random.default_rng(0).normal(size=(40, 3)), np.int64(1)


class FailsWhenEvaluating(nn.Module):
    "Cross-entropy while training; raises on the validation split."
    def forward(self, out, y):
        if not torch.is_grad_enabled():
            raise ValueError("no loss for validation")
        return nn.functional.cross_entropy(out, y)


class NaNEval(nn.Module):
    "Finite in training, NaN in eval mode (adversarial pass: it ended 'completed', exit 0)."
    def __init__(self, in_features, out_features):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)

    def forward(self, x):
        out = self.fc(x.flatten(1))
        return out if self.training else out * float("nan")


class NaNRow:
    "A callback that overwrites trainrun's val_loss (adversarial pass: logged as the run's)."
    def on_epoch_end(self, run, row):
        row["val_loss"] = float("nan")


class DropsLr:
    "A callback that removes one of trainrun's values from the row."
    def on_epoch_end(self, run, row):
        del row["lr"]
