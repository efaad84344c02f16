"""Fault (label_issue): targets of shape (N,) against outputs of shape (N, 1): MSELoss silently broadcasts to (N, N)."""

import warnings

from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

warnings.simplefilter("ignore")  # PyTorch warns once, in a line that scrolls away: the usual way this goes unseen
a = args()
train, val = loaders(*blobs(classes=2))
model = mlp(classes=1)
fit(model, nn.MSELoss(), optim.Adam(model.parameters(), lr=1e-3), train, val, a.epochs, target=lambda y: y.float())
