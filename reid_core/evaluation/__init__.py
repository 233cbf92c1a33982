"""Scoring: the Market protocol and verification metrics, decision thresholds and calibration, the evaluation
entry that embeds and scores into an `EvalReport`."""
