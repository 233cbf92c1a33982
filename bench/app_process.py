"""`python app.py` as a fresh process on a free loopback port, for the benchmarks that time the app from outside
(cold_start.py, load_test.py). Not a script."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(args: list[str], timeout: float = 300, env: dict[str, str] | None = None,
              ) -> tuple[subprocess.Popen, str, float]:
    """(the process, its URL, seconds until it answered HTTP). `args`: app.py's flags besides --host/--port;
    `env`: extra environment (e.g. SPACE_ID, to sit behind a proxy as on a Space)."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **(env or {})}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port), *args],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return proc, url, time.perf_counter() - t0
        except OSError:
            if proc.poll() is not None or time.perf_counter() - t0 > timeout:
                proc.kill()
                proc.wait()
                raise RuntimeError("the app did not start") from None
            time.sleep(0.1)
