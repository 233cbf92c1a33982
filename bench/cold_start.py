"""Cold start to first answer: launch `python app.py` as a fresh process and time until a gradio_client
`/compare` call on two example people returns.

    python bench/cold_start.py [--weights weights/model.safetensors] [--repeat 3]

Prints each run's seconds to "server answers HTTP", and to the first compare result, and their medians.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from app_process import ROOT, start_app  # bench/ is the script's folder: on sys.path


def one_run(weights: str, tmp: Path) -> tuple[float, float, float]:
    from gradio_client import Client, handle_file

    t0 = time.perf_counter()
    proc, url, t_http = start_app(["--weights", weights, "--data-dir", str(tmp / f"store{time.monotonic_ns()}")])
    try:
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
