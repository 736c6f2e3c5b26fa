"""Seed the fuzz corpora (formats/fuzz/corpus/<target>/, git-ignored) from real COLMAP models.

Also one small valid input each for the shard, PLY and views.json targets.

Usage: python3 formats/fuzz/seed_corpus.py [DATA_DIR]   (default: $LRF_DATA or ../shared/data)

For every <scene>/sparse/0 under DATA_DIR: the real cameras/images/points3D .bin files, plus small
valid models cut from them (the first few records, each with a few keypoints or track elements),
which libFuzzer mutates far faster than megabyte files. The text target gets the small models in
COLMAP's text format, behind its selector byte (0 cameras, 1 images, 2 points3D). Standard library
only; existing corpus files are kept.
"""

import hashlib
import os
import struct
import sys
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
NUM_PARAMS = [3, 4, 4, 5, 8, 8, 12, 5, 4, 5, 12, 16, 4, 5, 3, 4, 6, 2]
MODEL_NAMES = [
    "SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "OPENCV_FISHEYE", "FULL_OPENCV", "FOV",
    "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE", "THIN_PRISM_FISHEYE", "RAD_TAN_THIN_PRISM_FISHEYE",
    "SIMPLE_DIVISION", "DIVISION", "SIMPLE_FISHEYE", "FISHEYE", "EUCM", "EQUIRECTANGULAR",
]


def read_cameras(data):
    (count,), pos, cameras = struct.unpack_from("<Q", data), 8, []
    for _ in range(count):
        cid, model, w, h = struct.unpack_from("<iiQQ", data, pos)
        pos += 24
        params = struct.unpack_from(f"<{NUM_PARAMS[model]}d", data, pos)
        pos += 8 * NUM_PARAMS[model]
        cameras.append((cid, model, w, h, params))
    return cameras


def write_cameras(cameras):
    out = struct.pack("<Q", len(cameras))
    for cid, model, w, h, params in cameras:
        out += struct.pack(f"<iiQQ{len(params)}d", cid, model, w, h, *params)
    return out


def read_images(data):
    (count,), pos, images = struct.unpack_from("<Q", data), 8, []
    for _ in range(count):
        iid, *pose = struct.unpack_from("<i7d", data, pos)
        pos += 60
        (cam,) = struct.unpack_from("<i", data, pos)
        pos += 4
        end = data.index(b"\0", pos)
        name, pos = data[pos:end], end + 1
        (n,) = struct.unpack_from("<Q", data, pos)
        pos += 8
        points = [struct.unpack_from("<ddq", data, pos + 24 * k) for k in range(n)]
        pos += 24 * n
        images.append((iid, pose, cam, name, points))
    return images


def write_images(images):
    out = struct.pack("<Q", len(images))
    for iid, pose, cam, name, points in images:
        out += struct.pack("<i7di", iid, *pose, cam) + name + b"\0" + struct.pack("<Q", len(points))
        out += b"".join(struct.pack("<ddq", *p) for p in points)
    return out


def read_points(data):
    (count,), pos, points = struct.unpack_from("<Q", data), 8, []
    for _ in range(count):
        pid, x, y, z, r, g, b, err, n = struct.unpack_from("<Q3d3BdQ", data, pos)
        pos += 51
        track = [struct.unpack_from("<ii", data, pos + 8 * k) for k in range(n)]
        pos += 8 * n
        points.append((pid, (x, y, z), (r, g, b), err, track))
    return points


def write_points(points):
    out = struct.pack("<Q", len(points))
    for pid, xyz, rgb, err, track in points:
        out += struct.pack("<Q3d3BdQ", pid, *xyz, *rgb, err, len(track))
        out += b"".join(struct.pack("<ii", *e) for e in track)
    return out


def text_cameras(cameras):
    return "".join(f"{c} {MODEL_NAMES[m]} {w} {h} " + " ".join(repr(p) for p in ps) + "\n" for c, m, w, h, ps in cameras)


def text_images(images):
    lines = []
    for iid, pose, cam, name, points in images:
        lines.append(f"{iid} " + " ".join(repr(v) for v in pose) + f" {cam} {name.decode()}")
        lines.append(" ".join(f"{x!r} {y!r} {p}" for x, y, p in points))
    return "\n".join(lines) + "\n"


def text_points(points):
    return "".join(
        f"{pid} {xyz[0]!r} {xyz[1]!r} {xyz[2]!r} {rgb[0]} {rgb[1]} {rgb[2]} {err!r}"
        + "".join(f" {i} {k}" for i, k in track)
        + "\n"
        for pid, xyz, rgb, err, track in points
    )


def put(target, data):
    folder = FUZZ_DIR / "corpus" / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)


def safetensors(tensors, metadata=None):
    """A safetensors file: 8-byte header length, JSON header, data (tensors: name -> (dtype, shape, bytes))."""
    import json
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def reader_seeds():
    """Small valid inputs for the shard, PLY and views.json targets."""
    put("shard", safetensors({"0000": ("F32", [2, 3], struct.pack("<6f", *range(6)))}, {"scene": "s"}))
    put("shard", safetensors({
        "positions": ("F64", [2, 3], struct.pack("<6d", 0, 0, 1, 1, 0, 1)),
        "colors": ("U8", [2, 3], bytes([1, 2, 3, 4, 5, 6])),
        "track_point": ("I64", [3], struct.pack("<3q", 0, 1, 1)),
        "track_view": ("I64", [3], struct.pack("<3q", 0, 0, 1)),
        "track_pixel": ("F32", [3, 2], struct.pack("<6f", 1, 2, 3, 4, 5, 6)),
    }))
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
             "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    header = "ply\nformat binary_little_endian 1.0\nelement vertex 2\n"
    header += "".join(f"property float {n}\n" for n in names) + "end_header\n"
    body = struct.pack(f"<{2 * len(names)}f", *[0.1 * i for i in range(2 * len(names))])
    put("ply", header.encode() + body)
    view = {"name": "a.png", "split": "train", "camera": {"rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
            "translation": [0, 0, 1], "fx": 10, "fy": 10, "cx": 4, "cy": 3, "width": 8, "height": 6}}
    import json
    put("views_json", json.dumps({"scene": "s", "images": "images", "views": [view]}).encode())


def main():
    data_dir = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LRF_DATA") or FUZZ_DIR / "../../../shared/data")
    models = sorted(data_dir.glob("*/*/sparse/0"))
    if not models:
        raise SystemExit(f"no <group>/<scene>/sparse/0 models under {data_dir}")
    for model in models:
        files = {stem: (model / f"{stem}.bin").read_bytes() for stem in ("cameras", "images", "points3D")}
        put("colmap_cameras", files["cameras"])
        put("colmap_images", files["images"])
        put("colmap_points3d", files["points3D"])
        cameras, images, points = read_cameras(files["cameras"]), read_images(files["images"]), read_points(files["points3D"])
        for k in (1, 2, 3):
            small_cameras = cameras[:k]
            small_images = [(i, pose, cam, name, pts[: 2 * k]) for i, pose, cam, name, pts in images[:k]]
            small_points = [(p, xyz, rgb, err, track[: k + 1]) for p, xyz, rgb, err, track in points[:k]]
            for target, data in [
                ("colmap_cameras", write_cameras(small_cameras)),
                ("colmap_images", write_images(small_images)),
                ("colmap_points3d", write_points(small_points)),
            ]:
                put(target, data)
                put("colmap_roundtrip", data)
            put("colmap_text", b"\0" + text_cameras(small_cameras).encode())
            put("colmap_text", b"\1" + text_images(small_images).encode())
            put("colmap_text", b"\2" + text_points(small_points).encode())
        print(f"seeded from {model}")
    reader_seeds()
    for folder in sorted((FUZZ_DIR / "corpus").iterdir()):
        print(f"{folder.name}: {len(list(folder.iterdir()))} files")


if __name__ == "__main__":
    main()
