"""Healthy: a DataLoader with two workers that warm up (each worker's first batches wait on a slow open, as a
dataset on a network disk does), restarted every epoch, then feed the model faster than it trains."""

import time

from _kit import *
from torch.utils.data import Dataset


class WarmingUp(Dataset):
    def __init__(self, x, y):
        self.x, self.y, self.opened = x, y, False

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if not self.opened:  # once per worker process: opening the files
            time.sleep(0.3)
            self.opened = True
        return self.x[i], self.y[i]


if __name__ == "__main__":
    x, y = blobs(n=2048)
    k = len(x) // 5
    train = DataLoader(WarmingUp(x[k:], y[k:]), batch_size=32, shuffle=True, num_workers=2)
    val = DataLoader(TensorDataset(x[:k], y[:k]), batch_size=256)
    m = mlp(hidden=128)
    fit(m, nn.CrossEntropyLoss(), torch.optim.Adam(m.parameters(), 1e-3), train, val, 4)
