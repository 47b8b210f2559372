#!/usr/bin/env python
"""The digits workload written by hand, as a plain script: the baseline that
``scripts/bench_startup.py`` holds a whole ``train`` process against.

It does the work ``train data=digits model.hidden=[256,256] optim=sgd optim.lr=0.05
optim.momentum=0.9 data.batch_size=32 trainer.epochs=30`` does, without trainrun: load digits with
scikit-learn, hold out 20 % for validation, standardize with the train split's statistics, train a
64-256-256-10 MLP with SGD + momentum in batches of 32 (a new order every epoch, the best hand
loop: slices of a permuted copy, one ``.item()`` per epoch), and evaluate loss and accuracy on the
validation split after every epoch, printing one line each. It writes no files (trainrun's
checkpoints, metrics files, summary and plot are part of what the comparison charges trainrun).

    python scripts/digits_by_hand.py [--epochs 30]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    epochs = parser.parse_args().epochs
    torch.manual_seed(0)
    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    n_val = round(0.2 * len(x))
    val, train = order[:n_val], order[n_val:]
    mean, std = x[train].mean(0), x[train].std(0)
    x = (x - mean) / np.where(std > 0, std, 1.0)
    x_train, y_train = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    x_val, y_val = torch.from_numpy(x[val]), torch.from_numpy(y[val])

    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    n, batch = len(x_train), 32
    for epoch in range(epochs):
        perm = torch.randperm(n)
        xs, ys = x_train[perm], y_train[perm]
        model.train()
        total = torch.zeros(())
        for lo in range(0, n, batch):
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(xs[lo:lo + batch]), ys[lo:lo + batch])
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(xs[lo:lo + batch])
        model.eval()
        with torch.no_grad():
            out = model(x_val)
            val_loss = criterion(out, y_val).item()
            val_acc = (out.argmax(1) == y_val).float().mean().item()
        print(f"epoch {epoch + 1}: train_loss {total.item() / n:.4f} val_loss {val_loss:.4f} val_acc {val_acc:.4f}")


if __name__ == "__main__":
    main()
