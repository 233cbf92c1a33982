"""Evaluation's typed report, the pair head's calibration, and what `record` writes beside the weights (issue #23,
#24): thresholds typed, older weights' JSON still read, and a calibrated Compare whose verdict is at 50 %."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import person

from reid_core.api import SCORE_MEANING
from reid_core.data.images import load_image
from reid_core.evaluation.thresholds import Calibration, Platt, Thresholds, check_calibration, log_loss, sigmoid

ROOT = Path(__file__).resolve().parent.parent


def synthetic_pairs(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a head that is right about the order but not the odds: the truth is sigmoid(0.5 * logit + 1.5),
    so its raw probability's balanced cut sits far below 50 % (as the shipped head's did, at 19 %)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(-3, 4, n)
    labels = rng.random(n) < sigmoid(0.5 * logits + 1.5)
    return logits, labels


def test_platt_recovers_the_true_odds_and_puts_the_verdict_at_one_half() -> None:
    logits, labels = synthetic_pairs()
    platt = Platt.fit(logits, labels)
    assert platt.a == pytest.approx(0.5, abs=0.06) and platt.b == pytest.approx(1.5, abs=0.15)
    assert platt.logit_threshold == pytest.approx(-3, abs=0.3)  # where the truth is 50 %
    assert log_loss(platt(logits), labels) < log_loss(sigmoid(logits), labels) - 0.1
    with pytest.raises(ValueError, match="both same-person and different-person"):
        Platt.fit(logits, np.ones_like(labels))
    separable = Platt.fit(np.array([-2.0, -1, 1, 2]), np.array([0, 0, 1, 1]))  # finite: Platt's smoothed targets
    assert np.isfinite([separable.a, separable.b]).all() and separable(np.array([0.0]))[0] == pytest.approx(0.5)


def test_calibration_check_is_measured_on_the_other_half() -> None:
    logits, labels = synthetic_pairs()
    half = np.arange(len(logits)) % 2 == 0
    check = check_calibration(logits, labels, half, raw_threshold=0.5)
    assert check.pairs == (~half).sum() and check.raw_threshold == 0.5
    assert check.log_loss < check.log_loss_raw and check.brier < check.brier_raw
    assert check.accuracy > check.accuracy_raw + 0.05  # the raw 50 % cut is far off; the calibrated one is not
    best = check_calibration(logits, labels, half)  # against the raw cut chosen on the first half, as evaluate does
    assert abs(best.accuracy - best.accuracy_raw) < 0.02


def test_thresholds_read_old_and_new_weights_json() -> None:
    """The shipped weights' JSON before calibration (pair_threshold, cos_threshold on top, the flip ones among its
    metrics) reads as it did; `to_extra` round-trips, with the old top-level keys kept for older readers."""
    old = json.loads((ROOT / "weights" / "model.json").read_text())["extra"]
    old.pop("thresholds", None)
    t = Thresholds.from_extra(old)
    assert (t.pair, t.cos) == (old["pair_threshold"], old["cos_threshold"]) and t.calibration is None
    assert t.flip_pair == old["metrics"]["flip_pair_threshold"] and t.pair_for(True) == t.flip_pair
    assert Thresholds.from_extra({}) == Thresholds(0.5, 0.5)
    t.calibration = Calibration(Platt(1.5, 2.0), Platt(1.4, 1.9), "somewhere", {"plain": {"pairs": 10}})
    extra = json.loads(json.dumps(t.to_extra()))
    assert extra["pair_threshold"] == t.pair and extra["cos_threshold"] == t.cos
    assert Thresholds.from_extra(extra) == t
    assert t.calibration.for_flip(True) == Platt(1.4, 1.9) and t.calibration.for_flip(False) == Platt(1.5, 2.0)


def test_record_writes_typed_thresholds_and_keeps_the_rest(tiny_weights: Path, tmp_path: Path) -> None:
    from reid_core.evaluation.evaluate import record

    w = tmp_path / "w.safetensors"
    shutil.copy(tiny_weights, w)
    cfg = json.loads(tiny_weights.with_suffix(".json").read_text())
    cfg["extra"] |= {"train_data": "synthetic", "curves": {"cmc": [0.5]}, "metrics": {"rank1": 0.5}}
    w.with_suffix(".json").write_text(json.dumps(cfg))
    t = Thresholds(0.2, 0.3, 0.25, 0.35, Calibration(Platt(2.0, 1.0)))
    assert record(w, t) == w.with_suffix(".json")
    after = json.loads(w.with_suffix(".json").read_text())
    assert {k: v for k, v in after.items() if k != "extra"} == {k: v for k, v in cfg.items() if k != "extra"}
    assert after["extra"]["curves"] == {"cmc": [0.5]} and after["extra"]["metrics"] == {"rank1": 0.5}
    assert after["extra"]["train_data"] == "synthetic" and Thresholds.from_extra(after["extra"]) == t
    record(w, t, {"rank1": 0.75}, {"cmc": [0.75]})
    extra = json.loads(w.with_suffix(".json").read_text())["extra"]
    assert extra["metrics"] == {"rank1": 0.75} and extra["curves"] == {"cmc": [0.75]}


def test_evaluate_returns_a_typed_report_and_reranking_scores_the_pairs_once(
        market: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from reid_core.data.datasets import load_dataset
    from reid_core.evaluation import evaluate as ev
    from reid_core.model.network import load_model

    data, model = load_dataset(market), load_model(tiny_weights)
    calls = []
    real = ev.pair_logits
    monkeypatch.setattr(ev, "pair_logits", lambda *a: calls.append(1) or real(*a))
    features = tmp_path / "feats.safetensors"
    report = ev.evaluate(model, data.query, data.gallery, ev.EvalOptions(flip=True, rerank=True, centred=True,
                                                                          progress=False, features=features))
    assert len(calls) == 2  # one per variant (plain, flip), re-ranked or not; none for the camera-centred ones
    assert set(report.variants()) == {"plain", "flip", "centred", "flip_centred"}
    assert report.num_query == len(data.query)
    feats = ev.read_features(features, f"{ev.weights_hash(model)} {ev.TorchEmbedder(model).name}")
    cams = [np.array([r.camid for r in part]) for part in (data.query, data.gallery)]
    centred = ev.centre_query_gallery(feats["query"], feats["gallery"], *cams)
    expected = ev.market_rank(ev.cosine_distance(*centred), np.array([r.pid for r in data.query]),
                              np.array([r.pid for r in data.gallery]), *cams)
    assert report.centred.ranking.mAP == pytest.approx(expected.mAP) and report.centred.pairs is None
    assert report.figures()["centred_rank1"] == pytest.approx(expected.cmc[0])
    assert report.figures()["flip_centred_mAP"] == report.flip_centred.ranking.mAP
    assert report.centred.reranked is not None and report.flip_centred.pairs is None
    plain = report.plain
    assert plain.reranked is not None and plain.pairs is not None and plain.pairs.calibration is not None
    assert 0 <= plain.ranking.mAP <= 1 and plain.curves["cmc"][0] == pytest.approx(plain.ranking.cmc[0], abs=1e-4)
    figures = report.figures()
    assert figures["rerank_mAP"] == plain.reranked.mAP and figures["flip_pair_auc"] == report.flip.pairs.pair.auc
    assert figures["pair_threshold"] == plain.pairs.pair.threshold
    t = report.thresholds
    assert (t.pair, t.cos, t.flip_pair) == (plain.pairs.pair.threshold, plain.pairs.cos.threshold,
                                            report.flip.pairs.pair.threshold)
    assert t.calibration.plain == plain.pairs.calibration.platt and t.calibration.flip is not None
    without = ev.evaluate(model, data.query, data.gallery, ev.EvalOptions(progress=False))
    assert without.flip is None and without.centred is None and without.plain.reranked is None
    assert without.figures()["mAP"] == figures["mAP"] and "flip_mAP" not in without.figures()


def test_compare_is_calibrated_where_the_weights_record_it(tiny_weights: Path, tmp_path: Path) -> None:
    """With a calibration recorded, Compare says p = sigmoid(a * logit + b) against 0.5; without, the raw
    probability against the recorded threshold, as before."""
    import torch

    from reid_core import ReID
    from reid_core.evaluation.evaluate import record

    w = tmp_path / "w.safetensors"
    shutil.copy(tiny_weights, w)
    shutil.copy(tiny_weights.with_suffix(".json"), w.with_suffix(".json"))
    a, b = person(1, 0, 0).resize((64, 128)), person(2, 1, 0).resize((64, 128))
    record(w, Thresholds(0.3, 0.4))
    raw = ReID.load(w, engine="fp32", flip=False)
    before = raw.compare(a, b)
    e = raw.embed([a, b])
    with torch.no_grad():
        logit = float(raw.model.pair_logit(torch.from_numpy(e[:1]), torch.from_numpy(e[1:]))[0])
    assert before.threshold == 0.3 and before.score == pytest.approx(float(sigmoid(np.array(logit))), abs=1e-6)
    cal = Platt(2.0, -2.0 * logit + 0.5)  # this pair lands just above 50 %: sigmoid(0.5)
    record(w, Thresholds(0.3, 0.4, calibration=Calibration(cal, Platt(1.0, 0.0))))
    after = ReID.load(w, engine="fp32", flip=False).compare(a, b)
    assert after.threshold == 0.5 and after.score == pytest.approx(float(sigmoid(np.array(0.5))), abs=1e-5)
    assert after.same and after.cosine == pytest.approx(before.cosine)
    assert ReID.load(w, engine="fp32", flip=False).info["pair_threshold"] == 0.3  # the raw cut, as the Model tab draws
    # one meaning, said one way: a probability only when calibrated, and the library's sentence says which
    assert (before.calibrated, after.calibrated) == (False, True)
    assert before.verdict.endswith(f"({SCORE_MEANING[False]})") and "pair score" in before.verdict
    assert after.verdict == f"Same person: probability 62.2% ≥ 50% ({SCORE_MEANING[True]})"


def test_cli_api_and_app_say_the_verdict_in_one_sentence(tiny_weights: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """For uncalibrated weights the CLI once printed "probability 0.19" while the app said "a score, not a
    probability": now both print Comparison.verdict, whose field is `score` in either case."""
    import app
    from reid_core import ReID
    from reid_core.cli import main as cli

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    person(1, 0, 0).resize((64, 128)).save(a)
    person(2, 1, 0).resize((64, 128)).save(b)
    c = ReID.load(tiny_weights, engine="fp32").compare(a, b)
    assert not c.calibrated and not hasattr(c, "probability")
    assert cli(["compare", str(a), str(b), "--weights", str(tiny_weights), "--engine", "fp32"]) == 0
    assert capsys.readouterr().out == f"{c.verdict}; cosine {c.cosine:.4f}\n"
    handlers = app.ReIDApp(app.Settings(tiny_weights, tmp_path / "store", tmp_path))
    score, verdict, cosine, _ = handlers.compare.explained(*(load_image(p) for p in (a, b)))
    assert verdict.startswith(c.verdict.split(" (")[0]) and SCORE_MEANING[False] in verdict
    assert score == pytest.approx(c.score, abs=1e-3) and "probability 0." not in verdict


def test_calibrate_verb_uses_training_identities_and_records(market: Path, tiny_weights: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    from reid_core.cli import main as cli
    from reid_core.data.datasets import load_dataset
    from reid_core.evaluation.evaluate import calibration_records

    records = calibration_records(load_dataset(market).train, max_ids=5, per_id=4)
    assert len({r.pid for r in records}) == 5 and len(records) == 20
    assert all(len({r.camid for r in records if r.pid == p}) > 1 for p in {r.pid for r in records})
    w = tmp_path / "w.safetensors"
    shutil.copy(tiny_weights, w)
    shutil.copy(tiny_weights.with_suffix(".json"), w.with_suffix(".json"))
    assert cli(["calibrate", "--weights", str(w), "--data", str(market), "--threads", "1", "--record"]) == 0
    out = capsys.readouterr().out
    assert "plain: accuracy" in out and "flip: accuracy" in out and "recorded in" in out
    cal = Thresholds.from_extra(json.loads(w.with_suffix(".json").read_text())["extra"]).calibration
    assert cal is not None and cal.flip is not None and "training identities" in cal.fitted_on
    assert set(cal.checks) == {"plain", "flip"} and cal.checks["plain"]["pairs"] > 0
    # evaluate --record keeps the calibration fitted on held-out identities
    assert cli(["evaluate", "--weights", str(w), "--data", str(market), "--threads", "1", "--record"]) == 0
    kept = Thresholds.from_extra(json.loads(w.with_suffix(".json").read_text())["extra"]).calibration
    assert kept == cal


def test_calibration_records_keep_identity_0_and_drop_junk() -> None:
    """A training split is relabelled 0..N-1: identity 0 is a real person (it was skipped once); -1 is junk."""
    from reid_core.data.datasets import Record
    from reid_core.evaluation.evaluate import calibration_records

    records = [Record(f"{pid}_{cam}.jpg", pid, cam) for pid in (-1, 0, 1, 2) for cam in (0, 1)]
    got = calibration_records(records, max_ids=0, per_id=2)
    assert sorted({r.pid for r in got}) == [0, 1, 2] and len(got) == 6


def test_evaluate_record_without_flip_keeps_the_flip_thresholds(tmp_path: Path, market: Path, tiny_weights: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    """`evaluate --record` without --flip measures no flip thresholds: it keeps the recorded ones (the app
    embeds with flip by default) instead of erasing them; with --flip it replaces them. --centred adds the
    camera-centred figures, printed and in --json, and no threshold."""
    from reid_core.cli import main as cli

    w = tmp_path / "w.safetensors"
    shutil.copy(tiny_weights, w)
    cfg = json.loads(tiny_weights.with_suffix(".json").read_text())
    cfg.setdefault("extra", {}).update(Thresholds(0.3, 0.4, 0.61, 0.71).to_extra())
    w.with_suffix(".json").write_text(json.dumps(cfg))
    assert cli(["evaluate", "--weights", str(w), "--data", str(market), "--threads", "1", "--record"]) == 0
    after = Thresholds.from_extra(json.loads(w.with_suffix(".json").read_text())["extra"])
    assert (after.flip_pair, after.flip_cos) == (0.61, 0.71) and (after.pair, after.cos) != (0.3, 0.4)
    capsys.readouterr()
    assert cli(["evaluate", "--weights", str(w), "--data", str(market), "--threads", "1", "--record", "--flip",
                "--centred", "--json", str(tmp_path / "m.json")]) == 0
    flipped = Thresholds.from_extra(json.loads(w.with_suffix(".json").read_text())["extra"])
    assert (flipped.flip_pair, flipped.flip_cos) != (0.61, 0.71) and flipped.flip_pair is not None
    printed, figures = capsys.readouterr().out, json.loads((tmp_path / "m.json").read_text())
    assert "\ncentred: R1 " in printed and "\nflip + centred: R1 " in printed and "pair AUC" not in printed.split(
        "centred: ")[1]
    assert 0 <= figures["centred_mAP"] <= 1 and 0 <= figures["flip_centred_rank1"] <= 1
    assert "centred_pair_auc" not in figures and "centred_pair_threshold" not in figures


def test_camera_centring_removes_each_cameras_offset_as_a_group_mean_does() -> None:
    """People seen by two cameras, each camera adding its own offset bigger than the people differ: same-camera
    strangers outrank the same person elsewhere until each camera's mean is removed. The centring matches
    pandas' per-group mean; a camera of one crop loses the mean of all crops instead (its own mean is itself);
    query and gallery are centred together (a camera's mean is that of its queries and gallery crops)."""
    import pandas as pd

    from reid_core.evaluation.camera_centring import centre_cameras, centre_query_gallery
    from reid_core.evaluation.metrics import cosine_distance, market_rank

    rng = np.random.default_rng(0)
    people, d = 50, 32
    identity = rng.standard_normal((people, d))
    offset = 3 * rng.standard_normal((2, d))
    pids, cams = np.repeat(np.arange(people), 4), np.tile([0, 0, 1, 1], people)
    emb = identity[pids] + offset[cams] + 0.3 * rng.standard_normal((len(pids), d))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    out = centre_cameras(np.vstack([emb, emb[:1]]), np.append(cams, 7))
    ref = emb - pd.DataFrame(emb).groupby(cams).transform("mean").to_numpy()
    np.testing.assert_allclose(out[:-1], ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-5)
    alone = emb[0] - np.vstack([emb, emb[:1]]).mean(0)
    np.testing.assert_allclose(out[-1], alone / np.linalg.norm(alone), atol=1e-5)
    q, g = np.arange(len(pids)) % 4 == 0, np.arange(len(pids)) % 4 != 0
    cq, cg = centre_query_gallery(emb[q], emb[g], cams[q], cams[g])
    first = emb[q][0] - emb[cams == cams[q][0]].mean(0)  # its camera's crops, queries and gallery alike
    np.testing.assert_allclose(cq[0], first / np.linalg.norm(first), atol=1e-5)
    np.testing.assert_allclose(cg, ref[g] / np.linalg.norm(ref[g], axis=1, keepdims=True), atol=1e-5)
    plain = market_rank(cosine_distance(emb[q], emb[g]), pids[q], pids[g], cams[q], cams[g])
    centred = market_rank(cosine_distance(*centre_query_gallery(emb[q], emb[g], cams[q], cams[g])), pids[q], pids[g],
                          cams[q], cams[g])
    assert plain.cmc[0] < 0.5 and centred.cmc[0] > 0.9 and centred.mAP > plain.mAP + 0.3


def test_centring_refuses_crops_without_cameras(tiny_weights: Path) -> None:
    """A folder whose names give no camera has stand-ins (each image its own 'camera'): centring on them would
    remove the mean of every identity's i-th image, so evaluate refuses in one line, before embedding anything."""
    from reid_core.data.datasets import OWN_CAMERA, Record
    from reid_core.evaluation.evaluate import EvalOptions, evaluate
    from reid_core.model.network import load_model

    records = [Record(f"/nowhere/{pid}/{i}.jpg", pid, OWN_CAMERA + i) for pid in range(3) for i in range(2)]
    with pytest.raises(ValueError, match="^camera centring needs the camera of every crop"):
        evaluate(load_model(tiny_weights), records[::2], records[1::2], EvalOptions(centred=True, progress=False))
