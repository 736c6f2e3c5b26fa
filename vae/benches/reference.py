"""PyTorch side of lrf-vae's benchmark (examples/bench.rs runs it in the same session).

TAEF2 as the TAESD reference code builds it (tests/fixtures/taesd_torch.py, a transcription of
madebyollin/taesd's Encoder/Decoder with TAEF2's pooled blocks), loaded from assets/taef2, and
diffusers' AutoencoderKL with SD's kl-f8 architecture and random weights. Serves timing requests so
that the Rust side can alternate with it run by run: each stdin line
"<model> <encode|decode> <image side>" runs one timed call (after a warm-up the first time) and
prints its seconds.

    .venv/bin/python vae/benches/reference.py THREADS
"""

import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
try:
    import torch
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file
except ImportError as e:
    sys.exit(f"missing Python package: {e.name} (pip install diffusers==0.42.1 safetensors==0.8.0)")

ASSETS = os.path.join(os.path.dirname(__file__), "..", "..", "assets", "taef2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
import taesd_torch  # noqa: E402


def taef2():
    encoder, decoder = taesd_torch.encoder(32, True), taesd_torch.decoder(32, True)
    encoder.load_state_dict({k: v.float() for k, v in load_file(os.path.join(ASSETS, "taef2_encoder.safetensors")).items()})
    decoder.load_state_dict({k: v.float() for k, v in load_file(os.path.join(ASSETS, "taef2_decoder.safetensors")).items()})
    return encoder.eval(), decoder.eval()


if __name__ == "__main__":
    torch.set_num_threads(int(sys.argv[1]))
    torch.manual_seed(0)
    encoder, decoder = taef2()
    kl = AutoencoderKL(block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
                       down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4).eval()
    # The same TAEF2 run channels-last (NHWC), as lrf-vae runs it: PyTorch's fastest CPU layout for it.
    nhwc = lambda module: lambda x: module(x.contiguous(memory_format=torch.channels_last)).contiguous()
    models = {
        ("taef2", "encode"): (encoder, 3),
        ("taef2", "decode"): (decoder, 32),
        ("taef2-channels-last", "encode"): (nhwc(encoder), 3),
        ("taef2-channels-last", "decode"): (nhwc(decoder), 32),
        ("sd-kl-f8", "encode"): (lambda x: kl.encode(x).latent_dist.mean, 3),
        ("sd-kl-f8", "decode"): (lambda z: kl.decode(z).sample, 4),
    }
    warm = set()
    print("ready", flush=True)
    with torch.inference_mode():
        for line in sys.stdin:
            name, op, size = line.split()
            fn, channels = models[(name, op)]
            side = int(size) if op == "encode" else int(size) // 8
            x = torch.rand(1, channels, side, side)
            if line not in warm:
                fn(x)
                warm.add(line)
            start = time.perf_counter()
            fn(x)
            print(time.perf_counter() - start, flush=True)
