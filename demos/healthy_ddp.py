"""Healthy: DistributedDataParallel on CPU (gloo); run with `torchrun --nproc_per_node=2 demos/healthy_ddp.py`."""

import torch.distributed as dist
from _common import args, blobs, mlp
from torch import nn, optim
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

a = args(epochs=3)
dist.init_process_group("gloo")
x, y = blobs()
sampler = DistributedSampler(TensorDataset(x, y), shuffle=True)
train = DataLoader(TensorDataset(x, y), batch_size=64, sampler=sampler)
model = DistributedDataParallel(mlp())
optimizer = optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
for epoch in range(a.epochs):
    sampler.set_epoch(epoch)
    for xb, yb in train:
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
    if dist.get_rank() == 0:
        print(f"epoch {epoch}: loss {loss.item():.4f}", flush=True)
dist.destroy_process_group()
