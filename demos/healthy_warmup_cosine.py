"""Healthy: Adam with a linear learning-rate warm-up from 0 over the first epoch, then cosine decay to 0, stepped per batch. No alert should fire."""

import math

from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
train, val = loaders(*blobs())
model = mlp()
optimizer = optim.Adam(model.parameters(), lr=3e-3)
warm, total = len(train), len(train) * a.epochs
schedule = optim.lr_scheduler.LambdaLR(
    optimizer, lambda s: s / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm))))
fit(model, nn.CrossEntropyLoss(), optimizer, train, val, a.epochs, scheduler=schedule)
