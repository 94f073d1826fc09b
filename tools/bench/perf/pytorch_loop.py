#!/usr/bin/python3
"""Plain PyTorch reference for tools/bench/perf/run.sh (issue 7, "Performance on CPU").

The same work as bench_bare_loop (tools/bench/perf/bare_loop.cpp) and `tlab run` with strategy
scratch: random tensors of the datasets' shapes, the backbone + linear_head model (ResNet-18 is
torchvision's, its fc replaced by Linear(512, 10)), Adam, and tlab's loop: per epoch randperm +
index_select batches; per step zero_grad, forward, cross_entropy, backward, step; the loss summed
on the device and read once per epoch. Prints one JSON line like bench_bare_loop.

Usage: pytorch_loop.py --workload mlp|cnn|resnet18|resnet50 [--threads 2] [--epochs E]
                       [--train N] [--test 256] [--batch B] [--lr 1e-3] [--seed 1]
                       [--hidden 512,256] [--dim 784] [--device cpu|cuda] [--precision
                       fp32|bf16|fp16] [--channels-last] [--image-size 32]
  --device cuda: the data resident on the GPU, as tlab keeps a resident dataset; --precision:
  torch.autocast around forward and loss (fp16 with torch.cuda.amp.GradScaler), as tlab's
  [train] precision; --channels-last: model and batches in channels-last layout; --image-size:
  the ResNets' input side (32 as CIFAR, 224 as ImageNet).
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
    "resnet50": (32, 1024, 2),
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


def build(workload, hidden, classes, dim, image_size=32):
    if workload == "mlp":
        return Mlp(dim, hidden, classes), (dim,)
    if workload == "cnn":
        return Cnn(classes), (1, 28, 28)
    import torchvision

    if workload == "resnet50":
        model = torchvision.models.resnet50(num_classes=1000)
        model.fc = nn.Linear(2048, classes)
    else:
        model = torchvision.models.resnet18(num_classes=1000)
        model.fc = nn.Linear(512, classes)  # = tlab's resnet (classifier = false) + linear_head
    return model, (3, image_size, image_size)


def read_idx(folder, prefix, limit, device):
    """The images (N x 1 x 28 x 28, / 255) and labels of an MNIST-format pair, gzip'd."""
    import gzip

    import numpy

    with gzip.open(f"{folder}/{prefix}-images-idx3-ubyte.gz") as f:
        images = numpy.frombuffer(f.read(), numpy.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(f"{folder}/{prefix}-labels-idx1-ubyte.gz") as f:
        labels = numpy.frombuffer(f.read(), numpy.uint8, offset=8)
    if limit:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.astype(numpy.float32) / 255).to(device)
    return x, torch.from_numpy(labels.astype(numpy.int64)).to(device)


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
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--image-size", type=int, default=32, help="resnet input side")
    p.add_argument("--fashion", default="",
                   help="Fashion-MNIST's folder (IDX .gz): train and test on it (cnn, mlp)")
    a = p.parse_args()
    batch, train, epochs = DEFAULTS[a.workload]
    batch, n, epochs = a.batch or batch, a.train or train, a.epochs or epochs

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    classes = 10
    model, shape = build(a.workload, [int(h) for h in a.hidden.split(",")], classes, a.dim,
                         a.image_size)
    device = torch.device(a.device)
    memory_format = torch.channels_last if a.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.precision)
    scaler = torch.cuda.amp.GradScaler() if a.precision == "fp16" else None

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    # Random data of the datasets' shapes: the content does not change the speed. --fashion:
    # Fashion-MNIST's IDX files instead (pixels / 255, as tlab's idx plugin), for accuracy too.
    t = time.perf_counter()
    if a.fashion:
        x, y = read_idx(a.fashion, "train", n, device)
        tx, ty = read_idx(a.fashion, "t10k", 0, device)
        n, a.test = x.shape[0], tx.shape[0]
    else:
        x, y = torch.randn(n, *shape, device=device), torch.randint(classes, (n,), device=device)
        tx, ty = torch.randn(a.test, *shape, device=device), torch.randint(classes, (a.test,),
                                                                           device=device)
    data_seconds = time.perf_counter() - t

    optimizer = torch.optim.Adam(model.parameters(), lr=a.lr)
    steps = (n + batch - 1) // batch
    train_seconds, last_loss, epoch_seconds = 0.0, 0.0, []
    setup_seconds = time.perf_counter() - T_PROCESS0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, device=device)
        loss_sum = torch.zeros((), device=device)
        sync()
        t0 = time.perf_counter()  # as tlab's target/train/seconds: the steps + the loss read
        for s in range(steps):
            idx = perm[s * batch : (s + 1) * batch]
            bx, by = x.index_select(0, idx), y.index_select(0, idx)
            if a.channels_last and bx.dim() == 4:
                bx = bx.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=False)  # as LibTorch 1.13's zero_grad()
            if amp_dtype is None:
                loss = F.cross_entropy(model(bx), by)
            else:
                with torch.autocast(device.type, dtype=amp_dtype):
                    loss = F.cross_entropy(model(bx), by)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            loss_sum += loss.detach().float()
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
                "device": a.device,
                "precision": a.precision,
                "channels_last": a.channels_last,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
