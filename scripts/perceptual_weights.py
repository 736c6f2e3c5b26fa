"""Converts the perceptual metrics' weights shipped in Python wheels to safetensors for lrf-flow.

- ST-LPIPS (shift-tolerant LPIPS, BSD-2): the `stlpips_pytorch` wheel ships complete networks
  (backbone and linear heads) for VGG16 and AlexNet -> st-lpips-{vgg,alex}.safetensors.
- LPIPS: the `lpips` wheel ships only the linear heads -> lpips-heads-{vgg,alex}.safetensors; the
  backbone is the user's (torchvision's ImageNet weights cannot be shipped).

Both wheels store legacy torch.save pickles, which libtorch's C++ loader cannot read. Run by
scripts/setup.sh; the Rust side finds the output folder as lrf_vae::perceptual_weights_dir documents.

    .venv/bin/python scripts/perceptual_weights.py OUT_DIR
"""

import os
import sys

import torch
from safetensors.torch import save_file


def package_dir(name):
    # The packages' __init__ would import torchvision models and IPython just to find a path.
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None:
        sys.exit(f"missing Python package {name}: pip install -r scripts/requirements.txt")
    return os.path.dirname(spec.origin)


def convert(source, target):
    state = torch.load(source, map_location="cpu", weights_only=True)
    tensors = {k: v.contiguous() for k, v in state.items() if not k.startswith("scaling_layer.")}
    tmp = target + ".tmp"
    save_file(tensors, tmp, metadata={"source": os.path.basename(source)})
    os.replace(tmp, target)
    print(f"perceptual_weights: {target} ({len(tensors)} tensors from {source})")


if __name__ == "__main__":
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    st = os.path.join(package_dir("stlpips_pytorch"), "weights", "vST0.0")
    heads = os.path.join(package_dir("lpips"), "weights", "v0.1")
    for net in ["vgg", "alex"]:
        convert(os.path.join(st, f"{net}_shift_tolerant.pth"), os.path.join(out, f"st-lpips-{net}.safetensors"))
        convert(os.path.join(heads, f"{net}.pth"), os.path.join(out, f"lpips-heads-{net}.safetensors"))
