"""Training SEGA's prior (``python -m sega prepare``, ``python -m sega train``, ``torchrun ... -m sega train``).

* ``sega.train.dataset``: the prepared set's on-disk layout (manifest, per-clip shards, checksums) and its checked reader;
* ``sega.train.prepare``: videos / image sequences -> that layout;
* ``sega.train.options``: ``TrainOptions``;
* ``sega.train.sampler``: the train / validation split, each step's samples, a shard cache;
* ``sega.train.scene``: one clip as a scene: base maps from an unwrap, a frame's render and loss;
* ``sega.train.distributed``: torchrun's process group (gloo on CPUs, NCCL on GPUs);
* ``sega.train.loop``: the ``Trainer`` (stages, checkpoints and exact resume, logs, validation).

The networks themselves live in ``sega.nets.prior`` and their file in ``sega.nets.prior_file``: builds use those
and never import this package.
"""
