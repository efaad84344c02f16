"""Fault (output_activation_mismatch): a ReLU after the last layer clips the logits."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = nn.Sequential(mlp(), nn.ReLU())
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 1e-3), tr, va, 4)
