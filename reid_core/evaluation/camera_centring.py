"""Camera centring: each camera's mean embedding removed, then every embedding L2-normalised again.

A network's cameras differ more than its people do: light, angle and the lens put a shared offset on every crop
of one camera, and on cameras a model never trained on, that offset ranks same-camera strangers above the same
person seen elsewhere. Removing each camera's mean (Song et al., "Exploring the Camera Bias of Person
Re-identification", ICLR 2025: feature normalisation per camera as a test-time step) takes the offset out
without a label: it needs only which camera took each crop, which the Market protocol reads anyway.

Self-training's clustering centres its crops this way; `evaluate` (EvalOptions.centred) reports the figures of centred
query and gallery embeddings beside the plain ones (BENCHMARKS.md section 24.7).
"""

from __future__ import annotations

import numpy as np


def centre_cameras(emb: np.ndarray, cams: np.ndarray) -> np.ndarray:
    """A copy of `emb` (n x d) with each camera's mean row removed (`cams`: a camera id per row), each row
    L2-normalised again. A camera of one crop would lose all of it (its mean is itself): the mean of every crop
    is removed from it instead."""
    emb = np.asarray(emb, dtype=np.float32)
    out = emb - emb.mean(0)
    for c in np.unique(cams):
        rows = cams == c
        if rows.sum() > 1:
            out[rows] = emb[rows] - emb[rows].mean(0)
    out /= np.linalg.norm(out, axis=1, keepdims=True).clip(1e-12)
    return out


def centre_query_gallery(qf: np.ndarray, gf: np.ndarray, q_cams: np.ndarray, g_cams: np.ndarray,
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Query and gallery centred together: a camera's mean is that of all its crops, queries and gallery."""
    both = centre_cameras(np.concatenate([qf, gf]), np.concatenate([q_cams, g_cams]))
    return both[: len(qf)], both[len(qf):]
