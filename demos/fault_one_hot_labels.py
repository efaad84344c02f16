"""Fault (label_issue): one-hot float labels given to NLLLoss-style code that expects class indices (here: class ids as floats to BCE)."""

import torch.nn.functional as F
from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
train, val = loaders(*blobs())
model = nn.Sequential(*mlp(), nn.Sigmoid())
# The bug: a multi-class problem trained as multi-label with one-hot targets and a sigmoid per class.
fit(model, nn.BCELoss(), optim.Adam(model.parameters(), lr=1e-3), train, val, a.epochs,
    target=lambda y: F.one_hot(y, 4).float())
