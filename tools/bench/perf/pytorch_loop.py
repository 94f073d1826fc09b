#!/usr/bin/python3
"""Plain PyTorch reference for tools/bench/perf/run.sh (issue 7, "Performance on CPU").

The same work as bench_bare_loop (tools/bench/perf/bare_loop.cpp) and `tlab run` with strategy
scratch: random tensors of the datasets' shapes, the backbone + linear_head model (ResNet-18 is
torchvision's, its fc replaced by Linear(512, 10)), Adam, and tlab's loop: per epoch randperm +
index_select batches; per step zero_grad, forward, cross_entropy, backward, step; the loss summed
on the device and read once per epoch. Prints one JSON line like bench_bare_loop.

Usage: pytorch_loop.py --workload mlp|cnn|resnet18 [--threads 2] [--epochs E] [--train N]
                       [--test 256] [--batch B] [--lr 1e-3] [--seed 1] [--hidden 512,256]
                       [--dim 784]
"""
import time

T_PROCESS0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

DEFAULTS = {  # batch, train, epochs: the sizes run.sh uses
    "mlp": (128, 20000, 5),
    "cnn": (64, 10000, 3),
    "resnet18": (32, 1024, 2),
}


class Mlp(nn.Module):
    """plugins/backbones/mlp: Linear + ReLU per hidden width, then linear_head."""

    def __init__(self, inputs, hidden, classes):
        super().__init__()
        widths = [inputs] + hidden
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.fc = nn.Linear(hidden[-1], classes)

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.layers:
            x = F.relu(layer(x))
        return self.fc(x)


class Cnn(nn.Module):
    """plugins/backbones/cnn defaults (channels 16, 32; batch norm; 64 features) + linear_head."""

    def __init__(self, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.feat = nn.Linear(32 * 7 * 7, 64)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.feat(x.flatten(1)))
        return self.fc(x)


def build(workload, hidden, classes, dim):
    if workload == "mlp":
        return Mlp(dim, hidden, classes), (dim,)
    if workload == "cnn":
        return Cnn(classes), (1, 28, 28)
    import torchvision

    model = torchvision.models.resnet18(num_classes=1000)
    model.fc = nn.Linear(512, classes)  # = tlab's resnet (classifier = false) + linear_head
    return model, (3, 32, 32)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", required=True, choices=sorted(DEFAULTS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=0)
    p.add_argument("--train", type=int, default=0)
    p.add_argument("--test", type=int, default=256)
    p.add_argument("--batch", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--hidden", default="512,256")
    p.add_argument("--dim", type=int, default=784, help="mlp inputs")
    a = p.parse_args()
    batch, train, epochs = DEFAULTS[a.workload]
    batch, n, epochs = a.batch or batch, a.train or train, a.epochs or epochs

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    classes = 10
    model, shape = build(a.workload, [int(h) for h in a.hidden.split(",")], classes, a.dim)

    # Random data of the datasets' shapes: the content does not change the speed.
    t = time.perf_counter()
    x, y = torch.randn(n, *shape), torch.randint(classes, (n,))
    tx, ty = torch.randn(a.test, *shape), torch.randint(classes, (a.test,))
    data_seconds = time.perf_counter() - t

    optimizer = torch.optim.Adam(model.parameters(), lr=a.lr)
    steps = (n + batch - 1) // batch
    train_seconds, last_loss, epoch_seconds = 0.0, 0.0, []
    setup_seconds = time.perf_counter() - T_PROCESS0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n)
        loss_sum = torch.zeros(())
        t0 = time.perf_counter()  # as tlab's target/train/seconds: the steps + the loss read
        for s in range(steps):
            idx = perm[s * batch : (s + 1) * batch]
            bx, by = x.index_select(0, idx), y.index_select(0, idx)
            optimizer.zero_grad(set_to_none=False)  # as LibTorch 1.13's zero_grad()
            loss = F.cross_entropy(model(bx), by)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
        last_loss = loss_sum.item() / steps
        epoch_seconds.append(time.perf_counter() - t0)
        train_seconds += epoch_seconds[-1]

    # Evaluation once at the end (tlab evaluates after each epoch): outside the timed loop.
    t = time.perf_counter()
    correct = 0
    model.eval()
    with torch.no_grad():
        for i in range(0, a.test, 256):
            scores = model(tx[i : i + 256])
            correct += int(scores.argmax(1).eq(ty[i : i + 256]).sum())
    eval_seconds = time.perf_counter() - t
    print(
        json.dumps(
            {
                "impl": "pytorch",
                "workload": a.workload,
                "threads": a.threads,
                "intra_op_threads": torch.get_num_threads(),
                "parameters": sum(t.numel() for t in model.parameters()),
                "train": n,
                "epochs": epochs,
                "batch": batch,
                "steps_per_epoch": steps,
                "train_seconds": round(train_seconds, 6),
                "samples_per_second": round(n * epochs / train_seconds, 3),
                "data_seconds": round(data_seconds, 6),
                "setup_seconds": round(setup_seconds, 6),
                "eval_seconds": round(eval_seconds, 6),
                "last_epoch_loss": round(last_loss, 6),
                "test_acc": correct / a.test if a.test else 0.0,
                "epoch_seconds": [round(e, 6) for e in epoch_seconds],
                "libtorch": torch.__version__,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
