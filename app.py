"""Gradio app entry point (``python app.py``; a Hugging Face Space's ``app_file``).

Thin: everything lives in ``sega.app``; importing this file starts nothing and loads no model.
``python app.py [--host 127.0.0.1] [--port 7860] [--concurrency 1] ...`` (``--help`` lists all).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no usage reporting (no outbound traffic)


def main(argv: list[str] | None = None) -> int:
    from sega.app import main as app_main

    return app_main(argv)


if __name__ == "__main__":
    sys.exit(main())
