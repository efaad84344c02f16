"""Healthy: a tanh RNN classifying sequences, Adam with clipping."""

from _kit import *
x, y = sequences()
tr, va = split(x, y)
m = SeqClassifier("rnn")
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 3e-3), tr, va, 6, clip=1.0)
