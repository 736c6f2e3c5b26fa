"""Dump a COLMAP sparse model, as pycolmap reads it, to JSON on stdout.

Usage: python colmap_dump.py <model folder>   (a folder holding cameras/images/points3D .bin or .txt)

This is the independent side of lrf-tests' cross-check of lrf-formats' COLMAP reader and writer
(tests/tests/colmap_pycolmap.rs). Output:

    {"cameras": [{"id", "model", "width", "height", "params": [...]}],
     "images": [{"id", "camera_id", "name", "qvec": [w, x, y, z], "tvec": [x, y, z],
                 "points2d": [[x, y, point3d_id or -1], ...]}],
     "points3d": [{"id", "xyz", "rgb", "error", "track": [[image_id, point2d_idx], ...]}]}

Records are sorted by id. Floats are Python floats, which `json` writes with repr (shortest
round-trip), so no precision is lost. Non-finite values make the dump fail rather than emit JSON
that other parsers reject.
"""

import json
import sys

import pycolmap


def floats(values):
    return [float(v) for v in values]


def dump(path):
    reconstruction = pycolmap.Reconstruction(path)

    cameras = []
    for camera_id, camera in sorted(reconstruction.cameras.items()):
        cameras.append(
            {
                "id": int(camera_id),
                "model": camera.model.name,
                "width": int(camera.width),
                "height": int(camera.height),
                "params": floats(camera.params),
            }
        )

    images = []
    for image_id, image in sorted(reconstruction.images.items()):
        # pycolmap 4 keeps poses on frames (rig_from_world) and rigs (sensor_from_rig);
        # Image.cam_from_world() composes them. Rotation.quat is Eigen's coefficient order
        # (x, y, z, w); COLMAP's files and lrf-formats use (w, x, y, z).
        if not image.has_pose:
            raise SystemExit(f"{path}: image {image_id} {image.name!r} has no pose")
        pose = image.cam_from_world()
        x, y, z, w = floats(pose.rotation.quat)
        points2d = []
        for point in image.points2D:
            point3d_id = int(point.point3D_id) if point.has_point3D() else -1
            points2d.append([float(point.xy[0]), float(point.xy[1]), point3d_id])
        images.append(
            {
                "id": int(image_id),
                "camera_id": int(image.camera_id),
                "name": image.name,
                "qvec": [w, x, y, z],
                "tvec": floats(pose.translation),
                "points2d": points2d,
            }
        )

    points3d = []
    for point_id, point in sorted(reconstruction.points3D.items()):
        points3d.append(
            {
                "id": int(point_id),
                "xyz": floats(point.xyz),
                "rgb": [int(c) for c in point.color],
                "error": float(point.error),
                "track": [[int(e.image_id), int(e.point2D_idx)] for e in point.track.elements],
            }
        )

    return {"cameras": cameras, "images": images, "points3d": points3d}


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: colmap_dump.py <COLMAP model folder>")
    json.dump(dump(sys.argv[1]), sys.stdout, allow_nan=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
