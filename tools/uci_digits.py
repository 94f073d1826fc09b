#!/usr/bin/python3
"""Real handwritten digits for tlab: scikit-learn's copy of the UCI handwritten digits (1,797
8x8 images, 0-16; Debian's python3-sklearn ships them) as MNIST-format IDX files that the `idx`
dataset plugin reads (experiments/dataset/uci_digits.toml).

Each image is scaled to 0-255, resized to 20x20 (bilinear, PIL) and centred in 28x28 like MNIST
(and like tlab's rendered digits), so a model trained on the rendered digits takes them as
input. A seeded shuffle splits them into 1,297 training and 500 test images.

    /usr/bin/python3 tools/uci_digits.py [OUT_DIR]     (default results/datasets/uci_digits)
"""
import gzip
import os
import struct
import sys

import numpy
from PIL import Image
from sklearn.datasets import load_digits


def write_idx(path, array):
    """An IDX file (gzip): unsigned bytes, the dimensions big-endian."""
    kind = {3: 0x0803, 1: 0x0801}[array.ndim]
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">I", kind))
        for d in array.shape:
            f.write(struct.pack(">I", d))
        f.write(array.astype(numpy.uint8).tobytes())


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "results/datasets/uci_digits"
    os.makedirs(out, exist_ok=True)
    digits = load_digits()
    images = numpy.zeros((len(digits.images), 28, 28), numpy.uint8)
    for i, small in enumerate(digits.images):
        pixels = numpy.clip(small * (255.0 / 16.0), 0, 255).astype(numpy.uint8)
        big = Image.fromarray(pixels).resize((20, 20), Image.BILINEAR)
        images[i, 4:24, 4:24] = numpy.asarray(big)
    order = numpy.random.RandomState(0).permutation(len(images))
    train, test = order[:1297], order[1297:]
    write_idx(f"{out}/train-images-idx3-ubyte.gz", images[train])
    write_idx(f"{out}/train-labels-idx1-ubyte.gz", digits.target[train])
    write_idx(f"{out}/t10k-images-idx3-ubyte.gz", images[test])
    write_idx(f"{out}/t10k-labels-idx1-ubyte.gz", digits.target[test])
    print(f"{out}: {len(train)} training and {len(test)} test images, 28x28, labels 0-9")


main()
