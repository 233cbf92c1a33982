"""Synthetic re-id-like embeddings, for search benchmarks and tests (no data licence, any size).

Random isotropic vectors have no neighbourhoods (every point is about as far from every other), which makes
approximate-search recall meaningless; here identities are random centres in a `latent`-dim subspace (a
trained network's embeddings occupy far fewer dimensions than they have), each seen in noisy views.
"""

from __future__ import annotations

import numpy as np


def clustered(n_ids: int, views: int, dim: int = 512, latent: int = 64, seed: int = 0, view_noise: float = 0.6,
              iso_noise: float = 0.3, chunk: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors: a gallery of (n_ids * views, dim), identity-major (rows i*views .. i*views+views-1 are
    identity i), and one held-out view of each identity (n_ids, dim) to query with; built in chunks so peak
    memory stays ~1x the result."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, latent)))[0].T.astype(np.float32)  # (latent, dim) orthonormal
    gallery = np.empty((n_ids * views, dim), np.float32)
    held = np.empty((n_ids, dim), np.float32)
    for s in range(0, n_ids, chunk):
        ids = min(chunk, n_ids - s)
        centres = rng.standard_normal((ids, latent), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        z = np.repeat(centres, views + 1, axis=0)
        z += view_noise / np.sqrt(latent) * rng.standard_normal(z.shape, dtype=np.float32)
        x = z @ basis
        x += iso_noise / np.sqrt(dim) * rng.standard_normal(x.shape, dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        x = x.reshape(ids, views + 1, dim)
        gallery[s * views:(s + ids) * views] = x[:, :views].reshape(-1, dim)
        held[s:s + ids] = x[:, views]
    return gallery, held
