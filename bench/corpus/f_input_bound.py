"""Fault (input_bound): images decoded in the training loop's own process (num_workers=0), a few milliseconds
each, for a model that trains on a batch in well under that: the loop mostly waits for data."""

import time

from _kit import *
from torch.utils.data import Dataset


class Decoded(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        time.sleep(0.002)  # decode and augment one image
        return self.x[i], self.y[i]


x, y = blobs(n=2560)
k = len(x) // 5
train = DataLoader(Decoded(x[k:], y[k:]), batch_size=16, shuffle=True)
val = DataLoader(TensorDataset(x[:k], y[:k]), batch_size=256)
m = mlp()
fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 1e-3), train, val, 1)
