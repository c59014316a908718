"""Export: pure functions from avatar data to downloadable files (no UI, no avatar internals).

* ``ply``: Gaussians -> standard 3DGS PLY (INRIA layout) plus ``sega_*`` extra properties.
* ``glb``: head mesh -> glTF 2.0 binary with textured base mesh and ARKit-named morph targets.
* ``clips``: procedural expression/head-pose animations ("talk", "smile", ...) as JSON.
"""

from .clips import CLIP_NAMES, ClipError, make_clip, read_clip, validate_clip, write_clip, write_clips
from .glb import GlbExportError, GlbSummary, read_accessor, read_glb, split_uv_seams, write_head_glb
from .ply import SplatPlyError, read_splat_ply, write_splat_ply

__all__ = [
    "CLIP_NAMES",
    "ClipError",
    "GlbExportError",
    "GlbSummary",
    "SplatPlyError",
    "make_clip",
    "read_accessor",
    "read_clip",
    "read_glb",
    "read_splat_ply",
    "split_uv_seams",
    "validate_clip",
    "write_clip",
    "write_clips",
    "write_head_glb",
    "write_splat_ply",
]
