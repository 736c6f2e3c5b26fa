"""An lrf-flow `kind: exec` stage (per scene): counts a scene's files and bytes per top-level folder.

Protocol: the last argument is a JSON job with `inputs` (port -> path), `config`, `out_dir` and
`outputs` (port -> type); each output port is written as `out_dir/<port>`.
"""
import json
import pathlib
import sys

job = json.loads(pathlib.Path(sys.argv[-1]).read_text())
scene = pathlib.Path(job["inputs"]["scene"])
folders = {}
for path in sorted(p for p in scene.rglob("*") if p.is_file()):
    top = path.relative_to(scene).parts[0]
    count, size = folders.get(top, (0, 0))
    folders[top] = (count + 1, size + path.stat().st_size)
stats = {"scene": job["scene"], "folders": {k: {"files": c, "bytes": b} for k, (c, b) in folders.items()}}
out = pathlib.Path(job["out_dir"])
(out / "stats").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
