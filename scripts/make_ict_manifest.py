"""Write sega/headmodel/ict_files.json: integrity hashes of the ICT-FaceKit files SEGA reads.

Usage: python scripts/make_ict_manifest.py /path/to/FaceXModel
Whole-file hashes only for files we read whole and that are byte-identical upstream
(neutral mesh, vertex_indices.json); vertex-line hashes for every OBJ.
"""

import json
import sys
from pathlib import Path

from sega.headmodel.download import vertex_lines_sha256
from sega.headmodel.ict import (
    ICT_INDICES_JSON,
    ICT_NEUTRAL_OBJ,
    ICT_NUM_IDENTITY_SHAPES,
)
from sega.io import file_sha256


def main(src: Path) -> None:
    expressions = json.loads((src / ICT_INDICES_JSON).read_text())["expressions"]
    names = [ICT_NEUTRAL_OBJ, ICT_INDICES_JSON] + [f"{e}.obj" for e in expressions]
    names += [f"identity{i:03d}.obj" for i in range(ICT_NUM_IDENTITY_SHAPES)]
    manifest = {}
    for name in names:
        entry = {}
        if name in (ICT_NEUTRAL_OBJ, ICT_INDICES_JSON):
            entry["sha256"] = file_sha256(src / name)
        if name.endswith(".obj"):
            entry["v_sha256"] = vertex_lines_sha256(src / name)
        manifest[name] = entry
    out = Path(__file__).resolve().parents[1] / "sega" / "headmodel" / "ict_files.json"
    out.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {out} ({len(manifest)} files)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
