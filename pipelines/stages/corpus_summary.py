"""An lrf-flow `kind: exec` stage (global): totals the per-scene stats of every scene.

`inputs.stats` is a map scene -> path of that scene's `stats` file; `config.largest` says how many
of the largest scenes to list.
"""
import json
import pathlib
import sys

job = json.loads(pathlib.Path(sys.argv[-1]).read_text())
scenes = {}
for scene, path in sorted(job["inputs"]["stats"].items()):
    stats = json.loads(pathlib.Path(path).read_text())
    scenes[scene] = sum(f["bytes"] for f in stats["folders"].values())
largest = sorted(scenes, key=lambda s: (-scenes[s], s))[: job["config"].get("largest", 3)]
summary = {"scenes": len(scenes), "bytes": sum(scenes.values()), "largest": largest}
out = pathlib.Path(job["out_dir"])
(out / "summary").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
