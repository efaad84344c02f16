"""Fault (exploding_gradients): an identity-initialised ReLU RNN with recurrent weights 1.2x identity, no clipping: a burst in the first steps, then stuck."""

from _kit import *
x, y = sequences(length=30)
tr, va = split(x, y)
m = SeqClassifier("rnn", nonlinearity="relu", hidden=48)
with torch.no_grad():
    m.rnn.weight_hh_l0.copy_(torch.eye(48) * 1.25)
    m.rnn.weight_ih_l0.mul_(4)
fit(m, nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), 0.05), tr, va, 5)
