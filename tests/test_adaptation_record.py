"""The typed reading of what an adaptation recorded beside its weights (extra.adapted)."""

from reid_core import THRESHOLDS_INHERITED, AdaptationRecord


def test_weights_that_were_not_adapted_have_no_record():
    assert AdaptationRecord.from_extra({}) is None
    assert AdaptationRecord.from_extra({"adapted": "not a dict"}) is None


def test_a_record_reads_back_with_its_facts_in_order():
    extra = {"adapted": {"source_weights": "/x/weights/model.safetensors", "target": "cams", "target_images": 1234,
                         "target_cameras": 2, "method": "self-train", "seconds": 61.4,
                         "figures": {"evaluated_on": "held-out", "before": {"rank1": 0.2, "mAP": 0.1},
                                     "after": {"rank1": 0.4, "mAP": 0.3}}}}
    r = AdaptationRecord.from_extra(extra)
    assert r.source_weights == "model.safetensors" and r.thresholds_from == THRESHOLDS_INHERITED
    facts = dict(r.facts())
    assert facts["Adapted to"] == "cams (1,234 unlabeled crops, 2 cameras)"
    assert facts["Method"] == "self-train (61 s)"
    assert facts["On the target (held-out)"] == "Rank-1 20.0 → 40.0 %, mAP 10.0 → 30.0 %"
    assert [w for w, _ in r.facts()][:4] == ["Adapted to", "Method", "From", "Thresholds and calibration"]
    assert "Source model on" not in " ".join(facts)  # none recorded, none said
