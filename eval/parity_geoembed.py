"""Parity of our PyTorch GeoEmbed V3 port (``rsvlm.geoembed``) with the ``geoembed`` package's own forward.

The package runs through netcl/OpenCL, which the project does not depend on. Give it a throwaway environment:

    python -m venv /tmp/geoembed-parity
    /tmp/geoembed-parity/bin/pip install netcl pyopencl pocl-binary-distribution numpy pillow
    .venv/bin/python -m eval.parity_geoembed --package-python /tmp/geoembed-parity/bin/python

The package's code and ``weights/v3.npz`` are taken from the project venv (via a symlink, nothing is copied or
installed); only netcl + an OpenCL CPU driver (pocl) live in the throwaway venv. Tiles: crops of the LoveDA images
in ``../shared/data`` (academic licence, read only) and the bundled NAIP sample. Both sides get the same
normalised float32 arrays; the script prints the max abs difference of the stride-8 feature map (128 and 256 px
tiles) and of the 256-d tile embedding (128 px, the package's native input), and exits 1 above ``--tolerance``.

Recorded result (geoembed 1.1.2, netcl 0.4.4, pocl 3.0, 8 tiles: 4 at 128 px and 4 at 256 px, features up to 13.9):
    netcl "auto" = OpenCL on pocl's CPU device: feature map max abs diff 1.7e-05, embedding 4.0e-07
        (the package's default path; ~10 min here, mostly pocl compiling kernels on a busy 2-core box);
    netcl "cpu" = its NumPy backend: feature map max abs diff 3.8e-06, embedding 2.5e-07 (~30 s).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rsvlm.backbones import load_vision_model, package_dir

ROOT = Path(__file__).resolve().parents[1]
LOVEDA = ROOT / "../shared/data/landcover_seg/loveda/img"
NAIP = ROOT / "rsvlm/samples/naip_2020_256.tif"

# Runs in the throwaway venv: the package's own TileEncoderV3, on the arrays we saved.
_PACKAGE_SIDE = """
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
from geoembed.arch import load_v3_netcl
from netcl import autograd as ag
from netcl.core.tensor import Tensor
from netcl.core.device import manager
dev = manager.default(sys.argv[5])
model = load_v3_netcl(sys.argv[2], queue=dev.queue)
data = np.load(sys.argv[3])
out = {}
for key in data.files:
    x = np.ascontiguousarray(data[key], dtype=np.float32)
    with ag.no_grad():
        out["feat_" + key] = model.backbone.forward(ag.tensor(Tensor.from_host(dev.queue, x))).value.to_host()
    if x.shape[-1] == 128:
        out["embed_" + key] = model.forward(x)
np.savez(sys.argv[4], **out)
print(f"{dev.device_name} ({type(dev.queue).__name__})")
"""


def load_tiles(size: int) -> dict[str, np.ndarray]:
    """A few real RGB tiles as uint8 ``[H, W, 3]``: LoveDA crops (if the data folder is there) and NAIP."""
    from PIL import Image

    tiles: dict[str, np.ndarray] = {}
    for path in sorted(LOVEDA.glob("*.png"))[:3]:
        image = np.asarray(Image.open(path).convert("RGB"))
        tiles[f"loveda{path.stem}_{size}"] = image[256 : 256 + size, 384 : 384 + size]
    import rasterio

    with rasterio.open(NAIP) as src:
        naip = src.read([1, 2, 3]).transpose(1, 2, 0)  # [H, W, 3] uint8, band 4 is near infrared
    tiles[f"naip_{size}"] = naip[:size, :size]
    return tiles


def normalise(tile: np.ndarray, mean: tuple, std: tuple) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> float32 ``[3, H, W]`` as the package's ``preprocess`` does it."""
    x = tile.astype(np.float32) / 255.0
    return ((x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(2, 0, 1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--package-python", required=True, help="python of a venv with netcl + pyopencl + pocl"
    )
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument(
        "--devices",
        nargs="+",
        default=["auto", "cpu"],
        help="netcl devices: auto = OpenCL (pocl), cpu = NumPy",
    )
    args = parser.parse_args()
    torch.set_num_threads(2)

    ours = load_vision_model("geoembed-v3")
    batch = {}
    for size in (128, 256):
        for name, tile in load_tiles(size).items():
            batch[name] = normalise(tile, ours.image_mean, ours.image_std)[None]  # [1, 3, S, S]

    worst = 0.0
    for device in args.devices:
        theirs = package_forward(args.package_python, batch, device)
        worst = max(worst, compare(ours, batch, theirs, device))
    return 0 if worst <= args.tolerance else 1


def package_forward(python: str, batch: dict[str, np.ndarray], device: str) -> dict[str, np.ndarray]:
    """Run the package's own network in the throwaway venv on ``batch``; returns its maps and embeddings."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "pkg").mkdir()
        (tmp / "pkg/geoembed").symlink_to(package_dir("geoembed-v3"))
        np.savez(tmp / "in.npz", **batch)
        weights = package_dir("geoembed-v3") / "weights/v3.npz"
        cmd = [
            python,
            "-c",
            _PACKAGE_SIDE,
            str(tmp / "pkg"),
            str(weights),
            str(tmp / "in.npz"),
            str(tmp / "out.npz"),
        ]
        start = time.perf_counter()
        run = subprocess.run([*cmd, device], capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"package forward failed on device {device!r}:\n{run.stderr[-3000:]}")
        print(
            f"package forward, netcl device {device!r} = {run.stdout.strip()}: {time.perf_counter() - start:.1f} s"
        )
        with np.load(tmp / "out.npz") as data:
            return {key: data[key] for key in data.files}


def compare(ours, batch: dict[str, np.ndarray], theirs: dict[str, np.ndarray], device: str) -> float:
    """Print per-tile max abs differences and a JSON summary; return the worst difference."""
    report = {
        "device": device,
        "feature_max_abs_diff": 0.0,
        "embed_max_abs_diff": 0.0,
        "feature_max_abs": 0.0,
    }
    with torch.no_grad():
        for name, x in batch.items():
            pixels = torch.from_numpy(x)
            feat = ours(pixels).numpy()  # [1, 512, S/8, S/8]
            diff = float(np.abs(feat - theirs["feat_" + name]).max())
            report["feature_max_abs_diff"] = max(report["feature_max_abs_diff"], diff)
            report["feature_max_abs"] = max(report["feature_max_abs"], float(np.abs(feat).max()))
            line = f"{name:>16}  features {tuple(feat.shape)}  max abs diff {diff:.2e}"
            if "embed_" + name in theirs:
                embed_diff = float(np.abs(ours.embed(pixels).numpy() - theirs["embed_" + name]).max())
                report["embed_max_abs_diff"] = max(report["embed_max_abs_diff"], embed_diff)
                line += f"  embedding max abs diff {embed_diff:.2e}"
            print(line)
    print(json.dumps(report | {"tiles": len(batch)}))
    return max(report["feature_max_abs_diff"], report["embed_max_abs_diff"])


if __name__ == "__main__":
    sys.exit(main())
