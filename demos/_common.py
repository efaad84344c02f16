"""Synthetic data and the plain PyTorch training loop the demos share.

Nothing here knows about accmon: the demos are ordinary training scripts, watched by `accmon run`.
Each demo changes one thing (the data, the model, the loss or the optimiser) to show one fault.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def args(epochs: int = 8) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    return a


def blobs(n: int = 2048, dim: int = 20, classes: int = 4, seed: int = 0, spread: float = 2.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs: one centre per class, unit-variance features. Learnable to about 90% accuracy: hard enough that curves look like real ones."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 1.5
    y = torch.randint(0, classes, (n,), generator=g)
    x = centres[y] + torch.randn(n, dim, generator=g) * spread
    return x, y


def images(n: int = 1024, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """3×32×32 images whose class sets the orientation of a stripe pattern, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    coords = torch.linspace(-1, 1, 32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    angles = y.float() * (3.14159 / classes)
    phase = torch.cos(angles)[:, None, None] * xx + torch.sin(angles)[:, None, None] * yy
    pattern = torch.sin(6 * phase)[:, None].expand(n, 3, 32, 32)
    return pattern + 8.0 * torch.randn(n, 3, 32, 32, generator=g), y


def loaders(x: torch.Tensor, y: torch.Tensor, batch: int = 64, shuffle: bool = True, val_fraction: float = 0.2,
            ) -> tuple[DataLoader, DataLoader]:
    n_val = int(len(x) * val_fraction)
    train = TensorDataset(x[n_val:], y[n_val:])
    val = TensorDataset(x[:n_val], y[:n_val])
    return DataLoader(train, batch_size=batch, shuffle=shuffle), DataLoader(val, batch_size=256)


def mlp(dim: int = 20, hidden: int = 64, classes: int = 4, act: type[nn.Module] = nn.ReLU, depth: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = dim
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), act()]
        width = hidden
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def fit(model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer, train: DataLoader, val: DataLoader,
        epochs: int, target=lambda y: y, step: bool = True, scheduler=None) -> None:
    """The usual loop: train an epoch, then evaluate under no_grad. `target` turns labels into what the loss takes;
    a `scheduler` (optional) is stepped after every optimizer step."""
    for epoch in range(epochs):
        model.train()
        for x, y in train:
            optimizer.zero_grad()
            loss = loss_fn(model(x), target(y))
            loss.backward()
            if step:
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
        model.eval()
        correct = total = 0
        val_loss = 0.0
        with torch.no_grad():
            for x, y in val:
                out = model(x)
                val_loss += loss_fn(out, target(y)).item() * len(y)
                if out.dim() > 1 and out.shape[-1] > 1:
                    correct += (out.argmax(-1) == y).sum().item()
                else:
                    correct += ((out.reshape(-1) > 0).long() == y.reshape(-1)).sum().item()
                total += len(y)
        print(f"epoch {epoch}: loss {loss.item():.4f}  val_loss {val_loss / total:.4f}  val_acc {correct / total:.3f}", flush=True)
