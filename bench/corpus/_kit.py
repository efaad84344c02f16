"""Synthetic data, models and the ordinary PyTorch training loop the corpus scripts share.

Nothing here knows about accmon: these are plain training scripts (run them with `python`), watched by
`accmon run` in bench/detect.py. Each script states in its docstring whether it is healthy or which fault it
carries ("Fault (alert_id, ...)"). Data are synthetic (scikit-learn is not installed here), seeded, small:
each script trains in a few seconds on a CPU.
"""

from __future__ import annotations

import math
import os
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(int(os.environ.get("SEED", "0")))
torch.set_num_threads(1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def blobs(n: int = 1536, dim: int = 16, classes: int = 4, spread: float = 1.6, probs: list[float] | None = None,
          seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian class clusters (learnable to ~90-98%); `probs` skews the class shares."""
    g = gen(seed)
    centres = torch.randn(classes, dim, generator=g) * 1.5
    if probs is None:
        y = torch.randint(0, classes, (n,), generator=g)
    else:
        y = torch.multinomial(torch.tensor(probs), n, replacement=True, generator=g)
    x = centres[y] + torch.randn(n, dim, generator=g) * spread
    return x, y


def regression(n: int = 1536, dim: int = 12, noise: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(seed)
    x = torch.randn(n, dim, generator=g)
    w = torch.randn(dim, 1, generator=g)
    y = x @ w + 0.5 * torch.sin(2 * x[:, :1]) + noise * torch.randn(n, 1, generator=g)
    return x, y


def lowrank(n: int = 1536, dim: int = 32, rank: int = 4, seed: int = 0) -> torch.Tensor:
    g = gen(seed)
    z = torch.randn(n, rank, generator=g)
    return torch.tanh(z @ torch.randn(rank, dim, generator=g)) + 0.05 * torch.randn(n, dim, generator=g)


def sequences(n: int = 1536, length: int = 20, classes: int = 3, feat: int = 4, seed: int = 0,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences whose class sets a sinusoid's frequency, buried in noise: a recurrent model reads it over time."""
    g = gen(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    t = torch.arange(length).float()
    phase = torch.rand(n, 1, generator=g) * 6.28
    base = torch.sin((y[:, None].float() + 1) * 0.6 * t[None] + phase)
    x = base[:, :, None] + 0.6 * torch.randn(n, length, feat, generator=g)
    return x, y


def tokens(n: int = 1536, length: int = 16, vocab: int = 40, classes: int = 3, seed: int = 0,
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token sequences: each class has its own favourite tokens."""
    g = gen(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    fav = torch.randint(0, vocab, (classes, 6), generator=g)
    noise = torch.randint(0, vocab, (n, length), generator=g)
    pick = fav[y][:, torch.randint(0, 6, (length,), generator=g)]
    use = torch.rand(n, length, generator=g) < 0.35
    return torch.where(use, pick, noise), y


def images(n: int = 1024, classes: int = 4, size: int = 16, noise: float = 0.8, seed: int = 0,
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """1×size×size images: the class sets a stripe orientation."""
    g = gen(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    c = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    ang = y.float() * (math.pi / classes)
    ph = torch.cos(ang)[:, None, None] * xx + torch.sin(ang)[:, None, None] * yy
    return (torch.sin(5 * ph) + noise * torch.randn(n, size, size, generator=g))[:, None], y


def split(x: torch.Tensor, y: torch.Tensor, batch: int = 64, val: float = 0.2, shuffle: bool = True,
          ) -> tuple[DataLoader, DataLoader]:
    k = int(len(x) * val)
    return (DataLoader(TensorDataset(x[k:], y[k:]), batch_size=batch, shuffle=shuffle),
            DataLoader(TensorDataset(x[:k], y[:k]), batch_size=256))


def mlp(dim: int = 16, hidden: int = 64, out: int = 4, act: type[nn.Module] = nn.ReLU, depth: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = []
    w = dim
    for _ in range(depth):
        layers += [nn.Linear(w, hidden), act()]
        w = hidden
    layers.append(nn.Linear(w, out))
    return nn.Sequential(*layers)


class SeqClassifier(nn.Module):
    def __init__(self, cell: str = "gru", feat: int = 4, hidden: int = 32, classes: int = 3, **kw: object) -> None:
        super().__init__()
        rnn = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.rnn = rnn(feat, hidden, batch_first=True, **kw)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class TokenTransformer(nn.Module):
    def __init__(self, vocab: int = 40, d: int = 32, classes: int = 3, layers: int = 2, length: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(1, length, d))
        enc = nn.TransformerEncoderLayer(d, 4, 64, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(enc, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.emb(x) + self.pos).mean(1))


def evaluate(model: nn.Module, loss_fn: nn.Module, loader: DataLoader, target=lambda y: y, binary: bool = False,
             classify: bool = True) -> tuple[float, float]:
    model.eval()
    tot = correct = n = 0.0
    with torch.no_grad():
        for x, y in loader:
            out = model(x)
            tot += float(loss_fn(out, target(y))) * len(y)
            if classify:
                if binary or out.shape[-1] == 1:
                    pred = (out.reshape(-1) > (0.5 if binary == "prob" else 0)).long()
                    correct += float((pred == y.reshape(-1).long()).sum())
                else:
                    correct += float((out.argmax(-1) == y).sum())
            n += len(y)
    model.train()
    return tot / n, correct / n


def fit(model: nn.Module, loss_fn: nn.Module, opt: torch.optim.Optimizer, train: DataLoader, val: DataLoader,
        epochs: int = 6, *, target=lambda y: y, clip: float | None = None, accum: int = 1, sched=None,
        sched_epoch=None, amp: bool = False, step: bool = True, zero_grad: bool = True, binary: bool | str = False,
        classify: bool = True, eval_train: bool = False, label: str = "") -> float:
    """The usual loop: train an epoch, evaluate under no_grad, print. Returns the last validation accuracy."""
    acc = float("nan")
    for epoch in range(epochs):
        model.train()
        for i, (x, y) in enumerate(train):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(model(x), target(y)) / accum
            loss.backward()
            if (i + 1) % accum:
                continue
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            if step:
                opt.step()
            if sched is not None:
                sched.step()
            if zero_grad:
                opt.zero_grad()
        if sched_epoch is not None:
            sched_epoch.step()
        if eval_train:
            tl, ta = evaluate(model, loss_fn, DataLoader(train.dataset, batch_size=256), target, binary, classify)
        vl, acc = evaluate(model, loss_fn, val, target, binary, classify)
        extra = f"  train_eval {tl:.4f}/{ta:.3f}" if eval_train else ""
        print(f"{label}epoch {epoch}: loss {float(loss) * accum:.4f}  val_loss {vl:.4f}"
              + (f"  val_acc {acc:.3f}" if classify else "") + extra, flush=True)
    return acc


def done() -> None:
    sys.stdout.flush()
