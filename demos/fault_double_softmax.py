"""Fault (double_softmax): the model ends in nn.Softmax and feeds nn.CrossEntropyLoss, which applies log-softmax again."""

from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
train, val = loaders(*blobs())
model = nn.Sequential(*mlp(), nn.Softmax(dim=1))
fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-3), train, val, a.epochs)
