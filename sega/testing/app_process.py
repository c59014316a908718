"""Running the app in a child process (tests, benches, the screenshot script): ``AppProcess``."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the checkout holding app.py


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class AppProcess:
    """``python app.py`` in a child process on 127.0.0.1 and a free port; a context manager.

    ``with AppProcess(extra_env={...}, args=[...]) as proc: proc.url`` waits until ``GET /`` answers
    (raises RuntimeError with the log tail if the process exits or ``start_timeout_s`` passes) and
    stops the child (terminate, then kill) on exit. The child's stdout+stderr go to ``proc.log_path``."""

    def __init__(self, args: list[str] | None = None, extra_env: dict | None = None, start_timeout_s: float = 120.0,
                 log_path: Path | None = None, cwd: Path | None = None):  # fmt: skip
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.args = list(args or [])
        self.extra_env = dict(extra_env or {})
        self.start_timeout_s = start_timeout_s
        self.cwd = Path(cwd) if cwd else REPO
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="sega-app-", suffix=".log")[1])
        self.proc = None

    def __enter__(self) -> AppProcess:
        import subprocess
        import sys
        import urllib.request

        env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1", **self.extra_env)
        log_fh = open(self.log_path, "wb")
        cmd = [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=env, stdout=log_fh, stderr=subprocess.STDOUT)
        log_fh.close()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with opener.open(self.url, timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"app did not answer within {self.start_timeout_s:g} s:\n{self.log_tail()}")
            time.sleep(0.3)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __exit__(self, *exc) -> None:
        import subprocess

        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
