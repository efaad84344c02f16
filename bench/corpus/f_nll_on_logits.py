"""Fault (output_activation_mismatch): NLLLoss on raw scores (no log_softmax): the loss falls without bound."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = mlp()
fit(m, nn.NLLLoss(), torch.optim.Adam(m.parameters(), 1e-3), tr, va, 4)
