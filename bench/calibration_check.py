"""Does a recorded calibration hold on people the model never saw? (BENCHMARKS.md §18)

    python bench/calibration_check.py --weights W --data ../shared/data/market1501 [--max-ids 100] [--seed 1]

Scores balanced cross-camera pairs of `--max-ids` seeded test identities (evaluate's verification pairs) with the
raw probability at the recorded thresholds and with the recorded calibration at 50 %: accuracy, log-loss, Brier.
It only measures: nothing is chosen on the test split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reid_core.data.datasets import load_dataset  # noqa: E402
from reid_core.embed import Mirrored, TorchEmbedder, flip_average  # noqa: E402
from reid_core.evaluation.evaluate import extract, pair_logits, subset_eval, verification_pairs  # noqa: E402
from reid_core.evaluation.thresholds import Thresholds, balanced_accuracy, brier, log_loss, sigmoid  # noqa: E402
from reid_core.model.network import load_model
from reid_core.model.weights import config_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="weights whose JSON records a calibration")
    ap.add_argument("--data", required=True, help="dataset root; its test split is scored")
    ap.add_argument("--max-ids", type=int, default=100, help="test identities (default: 100)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the identities (default: 1)")
    args = ap.parse_args()
    model = load_model(args.weights)
    t = Thresholds.from_extra(json.loads(config_path(args.weights).read_text())["extra"])
    if t.calibration is None:
        sys.exit(f"{args.weights}: no calibration recorded (python -m reid_core calibrate --record)")
    query, gallery = subset_eval(load_dataset(args.data), args.max_ids, args.seed)
    plain = TorchEmbedder(model)
    qf, gf = extract(plain, query, desc="query"), extract(plain, gallery, desc="gallery")
    qm = extract(Mirrored(plain), query, desc="query mirror")
    gm = extract(Mirrored(plain), gallery, desc="gallery mirror")
    pairs = verification_pairs(query, gallery)
    y = pairs[:, 2]
    for name, (q, g) in (("plain", (qf, gf)), ("flip", (flip_average(qf, qm), flip_average(gf, gm)))):
        logits = pair_logits(model, q, g, pairs)
        raw, cal, cut = sigmoid(logits), t.calibration.for_flip(name == "flip")(logits), t.pair_for(name == "flip")
        before, after = balanced_accuracy(raw, y, cut), balanced_accuracy(cal, y, 0.5)
        print(f"{name}: {len(pairs)} pairs of {len(query)} queries: accuracy {100 * before:.2f} % at {cut:.4f} -> "
              f"{100 * after:.2f} % at calibrated 0.5; log-loss {log_loss(raw, y):.4f} -> {log_loss(cal, y):.4f}; "
              f"Brier {brier(raw, y):.4f} -> {brier(cal, y):.4f}")


if __name__ == "__main__":
    main()
