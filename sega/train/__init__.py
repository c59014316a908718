"""Training SEGA's prior (issue 20): data preparation today; the identity encoder, the decoders' training
loop, DDP and checkpoints come next.

* ``sega.train.dataset``: the prepared set's on-disk layout (manifest, per-clip shards, checksums) and
  its checked reader;
* ``sega.train.prepare``: videos / image sequences -> that layout (``python -m sega prepare``).
"""
