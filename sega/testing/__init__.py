"""Support for tests, benches and scripts (one place; imported as ``sega.testing``, never by the product).

* ``app_process``:    ``AppProcess``, ``python app.py`` in a child process on a free port;
* ``browser``:        ``launch_chromium`` with the flags every browser test and bench uses;
* ``bundle_fixture``: a small synthetic avatar bundle written from scratch (``make_test_bundle``);
* ``arkit_names``:    the 52 ARKit blendshape names (for synthetic head models and bundles);
* ``flame_synthetic``: a synthetic FLAME-layout pickle for the FLAME loader tests;
* ``device_trap``:    ``DeviceTrap``, tensors made off the chosen device caught on a CPU (imports torch: not here).
"""

from __future__ import annotations

from .app_process import AppProcess, free_port
from .browser import CHROMIUM_ARGS, CHROMIUM_PATH, launch_chromium

__all__ = ["CHROMIUM_ARGS", "CHROMIUM_PATH", "AppProcess", "free_port", "launch_chromium"]
