"""Read and write 3DGS-layout PLY files with plyfile, the library graphdeco's 3D Gaussian Splatting uses.

This is the independent side of lrf-tests' cross-check of lrf-formats' PLY reader and writer
(tests/tests/ply_plyfile.rs). Floats travel as their IEEE-754 bit patterns (uint32), so the
comparison is bit-exact and never goes through a decimal conversion.

    python ply_dump.py read <file.ply>
        Reads the file with plyfile and prints
        {"format": "binary_little_endian" | "ascii" | ..., "elements": [names],
         "count": N, "properties": [{"name", "type"}] of the vertex element, in file order,
         "rows": [[bits of every property of vertex i, in file order]],
         "field": {"channels": C, "sh_coeffs": K, "xyz", "opacity", "scale", "rotation",
                   "features": flat [N, K, C]}}
        where "field" is rebuilt the way graphdeco's GaussianModel.load_ply does it (f_rest sorted by
        index, reshaped to [N, C, K-1] and transposed to [N, K-1, C]), generalised to C channels.

    python ply_dump.py write <file.ply> <N> <C> <K> <seed> [ascii|binary_big_endian]
        Builds a random field with features [N, K, C] and writes it the way graphdeco's
        GaussianModel.save_ply does (f_dc and f_rest flattened from features.transpose(1, 2), then
        np.concatenate((xyz, normals, f_dc, f_rest, opacities, scale, rotation), axis=1) into an
        'f4' record array, written by PlyData([el]).write). Prints what it wrote, as bits:
        {"xyz", "opacity", "scale", "rotation", "features": flat [N, K, C]}.
"""

import json
import sys

import numpy as np
from plyfile import PlyData, PlyElement


def bits(array):
    """Bit patterns of float32 values, flattened in C order, as Python ints."""
    return np.ascontiguousarray(array, dtype="<f4").view("<u4").reshape(-1).tolist()


def read(path):
    plydata = PlyData.read(path)
    vertex = plydata["vertex"]
    names = [p.name for p in vertex.properties]
    count = len(vertex.data)
    columns = [np.asarray(vertex[name]).astype("<f4") for name in names]
    rows = np.stack(columns, axis=1) if columns else np.zeros((count, 0), dtype="<f4")

    # graphdeco's load_ply, for C channels instead of 3.
    xyz = np.stack((vertex["x"], vertex["y"], vertex["z"]), axis=1).astype("<f4")
    opacities = np.asarray(vertex["opacity"]).astype("<f4")[..., np.newaxis]
    dc_names = sorted((n for n in names if n.startswith("f_dc_")), key=lambda x: int(x.split("_")[-1]))
    channels = len(dc_names)
    features_dc = np.zeros((count, channels, 1), dtype="<f4")
    for idx, name in enumerate(dc_names):
        features_dc[:, idx, 0] = np.asarray(vertex[name])
    extra_f_names = sorted((n for n in names if n.startswith("f_rest_")), key=lambda x: int(x.split("_")[-1]))
    features_extra = np.zeros((count, len(extra_f_names)), dtype="<f4")
    for idx, name in enumerate(extra_f_names):
        features_extra[:, idx] = np.asarray(vertex[name])
    rest_per_channel = len(extra_f_names) // channels
    features_extra = features_extra.reshape((count, channels, rest_per_channel))
    scale_names = sorted((n for n in names if n.startswith("scale_")), key=lambda x: int(x.split("_")[-1]))
    scales = np.stack([np.asarray(vertex[n]) for n in scale_names], axis=1).astype("<f4")
    rot_names = sorted((n for n in names if n.startswith("rot")), key=lambda x: int(x.split("_")[-1]))
    rots = np.stack([np.asarray(vertex[n]) for n in rot_names], axis=1).astype("<f4")
    # _features_dc = features_dc.transpose(1, 2): [N, 1, C]; _features_rest: [N, K-1, C].
    features = np.concatenate((features_dc.transpose(0, 2, 1), features_extra.transpose(0, 2, 1)), axis=1)

    return {
        "format": plydata.header.split("\n")[1].split()[1],
        "elements": [e.name for e in plydata.elements],
        "count": count,
        "properties": [{"name": p.name, "type": str(np.dtype(p.val_dtype).name)} for p in vertex.properties],
        "rows": [row.view("<u4").tolist() for row in np.ascontiguousarray(rows)],
        "field": {
            "channels": channels,
            "sh_coeffs": rest_per_channel + 1,
            "xyz": bits(xyz),
            "opacity": bits(opacities),
            "scale": bits(scales),
            "rotation": bits(rots),
            "features": bits(features),
        },
    }


def construct_list_of_attributes(channels, sh_coeffs):
    # graphdeco's GaussianModel.construct_list_of_attributes, with _features_dc [N, 1, C] and
    # _features_rest [N, K-1, C].
    attributes = ["x", "y", "z", "nx", "ny", "nz"]
    for i in range(1 * channels):
        attributes.append("f_dc_{}".format(i))
    for i in range((sh_coeffs - 1) * channels):
        attributes.append("f_rest_{}".format(i))
    attributes.append("opacity")
    for i in range(3):
        attributes.append("scale_{}".format(i))
    for i in range(4):
        attributes.append("rot_{}".format(i))
    return attributes


def write(path, n, channels, sh_coeffs, seed, fmt):
    rng = np.random.default_rng(seed)
    xyz = rng.normal(size=(n, 3)).astype(np.float32)
    normals = np.zeros_like(xyz)
    # [N, K, C], all values distinct (and exact in float32), so that any other f_rest order shows.
    count = n * sh_coeffs * channels
    features = ((rng.permutation(count) - count / 2) * 0.125).astype(np.float32).reshape(n, sh_coeffs, channels)
    features_dc, features_rest = features[:, :1, :], features[:, 1:, :]
    # 3DGS: self._features_dc.detach().transpose(1, 2).flatten(start_dim=1)
    f_dc = np.ascontiguousarray(features_dc.transpose(0, 2, 1)).reshape(n, channels)
    f_rest = np.ascontiguousarray(features_rest.transpose(0, 2, 1)).reshape(n, (sh_coeffs - 1) * channels)
    opacities = rng.normal(size=(n, 1)).astype(np.float32)
    scale = rng.normal(size=(n, 3)).astype(np.float32)
    rotation = rng.normal(size=(n, 4)).astype(np.float32)

    dtype_full = [(attribute, "f4") for attribute in construct_list_of_attributes(channels, sh_coeffs)]
    elements = np.empty(n, dtype=dtype_full)
    attributes = np.concatenate((xyz, normals, f_dc, f_rest, opacities, scale, rotation), axis=1)
    elements[:] = list(map(tuple, attributes))
    el = PlyElement.describe(elements, "vertex")
    if fmt is None:
        PlyData([el]).write(path)
    elif fmt == "ascii":
        PlyData([el], text=True).write(path)
    elif fmt == "binary_big_endian":
        PlyData([el], byte_order=">").write(path)
    else:
        raise SystemExit(f"unknown format {fmt!r}")

    return {
        "xyz": bits(xyz),
        "opacity": bits(opacities),
        "scale": bits(scale),
        "rotation": bits(rotation),
        "features": bits(features),
    }


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "read":
        result = read(args[1])
    elif len(args) in (6, 7) and args[0] == "write":
        n, channels, sh_coeffs, seed = (int(a) for a in args[2:6])
        result = write(args[1], n, channels, sh_coeffs, seed, args[6] if len(args) == 7 else None)
    else:
        raise SystemExit(
            "usage: ply_dump.py read <file.ply> | ply_dump.py write <file.ply> <N> <C> <K> <seed> "
            "[ascii|binary_big_endian]"
        )
    json.dump(result, sys.stdout, allow_nan=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
