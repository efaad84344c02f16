"""Fault (output_activation_mismatch): a ReLU after the last layer clips the logits that cross-entropy needs."""

from _common import args, blobs, fit, loaders, mlp
from torch import nn, optim

a = args()
train, val = loaders(*blobs())
model = nn.Sequential(*mlp(), nn.ReLU())
fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-3), train, val, a.epochs)
