#!/usr/bin/python3
"""The peer of tools/bench/ranks.sh: PyTorch's DistributedDataParallel with Gloo on the CPU,
the same workloads (mlp: [512, 256] on 784 inputs, batch 128, 20000 x 3 epochs; resnet18:
torchvision's ResNet-18 on 3x32x32, batch 32, 1024 x 2 epochs), the same global batch cut into
one share per rank (DistributedSampler's rule: batch / world per rank), Adam lr 1e-3, 1 thread
per rank. Prints one line: workload, world size, samples/s over the training loops (rank 0's
clock, from the first step to the last epoch's loss read).

Usage: /usr/bin/python3 tools/bench/perf/pytorch_ddp.py mlp|resnet18 WORLD
"""
import os
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

WORKLOADS = {
    "mlp": dict(n=20000, epochs=3, batch=128, shape=(784,)),
    "resnet18": dict(n=1024, epochs=2, batch=32, shape=(3, 32, 32)),
}


def model(workload):
    if workload == "mlp":
        return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                             nn.Linear(256, 10))
    import torchvision
    m = torchvision.models.resnet18()
    m.fc = nn.Linear(512, 10)
    return m


def rank_main(rank, world, workload, store, out):
    torch.set_num_threads(1)
    w = WORKLOADS[workload]
    torch.manual_seed(1)
    x = torch.randn(w["n"], *w["shape"])
    y = torch.randint(0, 10, (w["n"],))
    net = model(workload)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                                world_size=world)
        net = nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    per_rank = w["batch"] // world
    start = time.perf_counter()
    for epoch in range(w["epochs"]):
        g = torch.Generator().manual_seed(epoch)
        perm = torch.randperm(w["n"], generator=g)
        loss_sum = torch.zeros(())
        for s in range(0, w["n"], w["batch"]):
            idx = perm[s:s + w["batch"]][rank * per_rank:(rank + 1) * per_rank]
            if len(idx) == 0:
                idx = perm[s:s + 1]  # DDP needs every rank in every step
            opt.zero_grad()
            loss = F.cross_entropy(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
        loss_sum.item()
    seconds = time.perf_counter() - start
    if rank == 0:
        with open(out, "w") as f:
            f.write(f"{w['n'] * w['epochs'] / seconds:.0f}\n")
    if world > 1:
        dist.destroy_process_group()


def main():
    workload, world = sys.argv[1], int(sys.argv[2])
    with tempfile.TemporaryDirectory() as tmp:
        store, out = os.path.join(tmp, "store"), os.path.join(tmp, "out")
        if world == 1:
            rank_main(0, 1, workload, store, out)
        else:
            mp.spawn(rank_main, args=(world, workload, store, out), nprocs=world)
        print(f"{workload}\t{world}\t{open(out).read().strip()}")


if __name__ == "__main__":
    main()
