"""Fault (sigmoid_saturation, unnormalized_input): a tanh MLP fed raw features on a 0-500 scale."""

from _kit import *
x, y = blobs()
x = (x - x.min()) * 40
tr, va = split(x, y)
m = mlp(act=nn.Tanh)
fit(m, nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), 0.01), tr, va, 5)
