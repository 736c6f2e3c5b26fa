"""Reference lens distortion from pycolmap, for tests/tests/scenes.rs.

Reads JSON from stdin: {"cameras": [{"model", "width", "height", "params"}], "points": [[u, v], ...]}
with (u, v) normalised ideal coordinates. Prints, per camera, the distorted pixel of every point
(pycolmap's img_from_cam of (u, v, 1)) and pycolmap's inverse (cam_from_img) of those pixels.
"""
import json
import sys

import numpy as np
import pycolmap

request = json.load(sys.stdin)
points = np.array(request["points"], dtype=np.float64)
cam_points = np.concatenate([points, np.ones((len(points), 1))], axis=1)
result = []
for spec in request["cameras"]:
    camera = pycolmap.Camera(model=spec["model"], width=spec["width"], height=spec["height"], params=spec["params"])
    pixels = camera.img_from_cam(cam_points)
    ideal = camera.cam_from_img(pixels)
    result.append({"pixels": pixels.tolist(), "ideal": np.asarray(ideal)[:, :2].tolist()})
json.dump(result, sys.stdout)
