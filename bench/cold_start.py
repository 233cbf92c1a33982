"""Cold start to first answer: launch `python app.py` as a fresh process and time until a gradio_client
`/compare` call on two example people returns.

    python bench/cold_start.py [--weights weights/model.safetensors] [--repeat 3]

Prints each run's seconds to "server answers HTTP", and to the first compare result, and their medians.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
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


def one_run(weights: str, tmp: Path) -> tuple[float, float, float]:
    from gradio_client import Client, handle_file

    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--weights", weights, "--port", str(port),
                             "--data-dir", str(tmp / f"store{port}")], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        while True:
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - t0 > 300:
                    raise RuntimeError("app did not start") from None
                time.sleep(0.1)
        t_http = time.perf_counter() - t0
        people = sorted((ROOT / "examples" / "people").glob("*.png"))
        result = Client(url, verbose=False).predict(handle_file(str(people[0])), handle_file(str(people[1])),
                                                    api_name="/compare")
        t_answer = time.perf_counter() - t0
        return t_http, t_answer, float(result[0])
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=str(ROOT / "weights" / "model.safetensors"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    http, answer = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            h, a, p = one_run(args.weights, Path(tmp))
            http.append(h)
            answer.append(a)
            print(f"run {i + 1}: HTTP up {h:.1f} s, first compare answer {a:.1f} s (probability {p:.3f})", flush=True)
    print(f"median: HTTP up {statistics.median(http):.1f} s, first answer {statistics.median(answer):.1f} s")


if __name__ == "__main__":
    main()
