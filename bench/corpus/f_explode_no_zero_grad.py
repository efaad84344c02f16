"""Fault (exploding_gradients, lr_too_high): optimizer.zero_grad() is never called: gradients add up step after step."""

from _kit import *
x, y = blobs()
tr, va = split(x, y)
m = mlp()
fit(m, nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), 0.01), tr, va, 5, zero_grad=False)
