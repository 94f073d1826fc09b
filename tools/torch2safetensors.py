#!/usr/bin/python3
"""Write PyTorch weights as safetensors for tlab (no `safetensors` package needed).

  /usr/bin/python3 tools/torch2safetensors.py model.pth out.safetensors [--strip module.]
  /usr/bin/python3 tools/torch2safetensors.py torchvision:resnet18 out.safetensors [--seed 0]

The input is a checkpoint holding a state dict (or a dict with a "state_dict" or "model" entry),
a whole pickled nn.Module, a TorchScript file, or `torchvision:<name>` (a torchvision
architecture with random weights: no download happens). Tensor names are kept as PyTorch writes
them (e.g. layer1.0.conv1.weight), which is what tlab's torchvision-compatible backbones use.

As a library: `from torch2safetensors import save_safetensors; save_safetensors(sd, path)`.
"""
import argparse
import json
import struct
import sys

import torch

_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def save_safetensors(tensors, path, metadata=None):
    """Writes {name: tensor} to `path` in the safetensors format (little-endian, row-major)."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if t.dtype not in _DTYPES:
            raise SystemExit(f"{name}: dtype {t.dtype} has no safetensors equivalent")
        raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
        data = raw.numpy().tobytes()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # tensors start 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def load_state_dict(source, seed):
    if source.startswith("torchvision:"):
        import torchvision
        torch.manual_seed(seed)
        return getattr(torchvision.models, source.split(":", 1)[1])(weights=None).state_dict()
    try:
        return torch.jit.load(source, map_location="cpu").state_dict()
    except RuntimeError:
        pass
    obj = torch.load(source, map_location="cpu")
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SystemExit(f"{source}: holds no state dict (a dict of tensors)")
    return obj


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source", help="checkpoint, TorchScript file, or torchvision:<name>")
    ap.add_argument("output", help="the .safetensors file to write")
    ap.add_argument("--strip", action="append", default=[],
                    help="remove this key prefix (e.g. module.); may repeat")
    ap.add_argument("--seed", type=int, default=0, help="seed for torchvision:<name>")
    args = ap.parse_args()
    sd = load_state_dict(args.source, args.seed)
    out = {}
    for k, v in sd.items():
        for p in args.strip:
            if k.startswith(p):
                k = k[len(p):]
                break
        out[k] = v
    save_safetensors(out, args.output, {"source": args.source})
    print(f"wrote {len(out)} tensors to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
