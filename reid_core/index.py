"""GalleryIndex: exact cosine (inner-product) search over a persisted gallery of embeddings.

Embeddings are L2-normalised on the way in, so a score is a cosine similarity. Search is an exact
matrix product: for demo-sized galleries (up to ~10^5 images) it is fast enough and never misses a match.
On disk: `embeddings.safetensors` (float32 matrix) + `metadata.json` (one row per image, same order), both
written atomically and tied by a shared generation token so a crash between the two renames is detected.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from .files import atomic_write

EMBEDDINGS_FILE = "embeddings.safetensors"
METADATA_FILE = "metadata.json"
FORMAT_VERSION = 1


class IndexLoadError(ValueError):
    """An index folder that cannot be loaded; one line that names the folder and the reason."""


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


class GalleryIndex:
    """Embeddings plus one metadata dict per row; every row has a unique string `id`."""

    def __init__(self, dim: int | None = None):
        self.dim = dim
        self._emb = np.zeros((0, dim or 0), np.float32)
        self._meta: list[dict[str, Any]] = []
        self._row: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._meta)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._row

    @property
    def ids(self) -> list[str]:
        return [m["id"] for m in self._meta]

    @property
    def metadata(self) -> list[dict[str, Any]]:
        return [dict(m) for m in self._meta]

    @property
    def embeddings(self) -> np.ndarray:
        return self._emb.copy()

    def add(self, embeddings: np.ndarray, ids: Sequence[str], metadata: Sequence[dict[str, Any]] | None = None) -> None:
        """Append rows. Ids must be new and unique; metadata (JSON-serialisable dicts) is optional."""
        emb = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        ids = [str(i) for i in ids]
        metadata = list(metadata) if metadata is not None else [{} for _ in ids]
        if emb.ndim != 2 or len(emb) != len(ids) or len(metadata) != len(ids):
            raise ValueError(f"add: {len(emb)} embeddings, {len(ids)} ids and {len(metadata)} metadata rows differ")
        if self.dim is None:
            self.dim = emb.shape[1]
            self._emb = self._emb.reshape(0, self.dim)
        if emb.shape[1] != self.dim:
            raise ValueError(f"add: embeddings have dimension {emb.shape[1]}, the index holds {self.dim}")
        dup = [i for i in ids if i in self._row]
        if dup or len(set(ids)) != len(ids):
            raise ValueError(f"add: duplicate id {dup[0] if dup else ids}")
        self._append(_normalise(emb), [{**m, "id": i} for i, m in zip(ids, metadata, strict=True)])

    def _append(self, unit_rows: np.ndarray, rows: list[dict[str, Any]]) -> None:
        """Append already-validated, already-normalised rows (load uses it so a round trip is bit-exact)."""
        start = len(self._meta)
        self._emb = np.concatenate([self._emb, unit_rows.astype(np.float32, copy=False)])
        self._meta.extend(rows)
        self._row.update((m["id"], start + k) for k, m in enumerate(rows))

    def remove(self, ids: Iterable[str]) -> int:
        """Drop rows by id (unknown ids are ignored); returns how many were removed."""
        gone = {self._row[i] for i in map(str, ids) if i in self._row}
        if gone:
            keep = [r for r in range(len(self._meta)) if r not in gone]
            self._emb = self._emb[keep]
            self._meta = [self._meta[r] for r in keep]
            self._row = {m["id"]: r for r, m in enumerate(self._meta)}
        return len(gone)

    def clear(self) -> None:
        self.remove(self.ids)

    def search(self, query: np.ndarray, k: int = 10) -> tuple[np.ndarray, list[list[dict[str, Any]]]]:
        """Top-k rows per query by cosine similarity, best first.

        `query` is (D,) or (Q, D); returns scores (Q, min(k, len)) and a list of Q lists of metadata dicts.
        Ties keep insertion order, so results are deterministic.
        """
        q = _normalise(np.atleast_2d(query))
        if self.dim is not None and q.shape[1] != self.dim:
            raise ValueError(f"search: query has dimension {q.shape[1]}, the index holds {self.dim}")
        k = max(0, min(int(k), len(self)))
        if k == 0:
            return np.zeros((len(q), 0), np.float32), [[] for _ in q]
        sims = q @ self._emb.T
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(sims, top, axis=1)
        return scores, [[dict(self._meta[r]) for r in row] for row in top]

    # --- persistence --------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        generation = uuid.uuid4().hex
        header = {"version": str(FORMAT_VERSION), "generation": generation, "dim": str(self.dim or 0)}
        table = {"version": FORMAT_VERSION, "generation": generation, "dim": self.dim, "rows": self._meta}
        atomic_write(folder / EMBEDDINGS_FILE,
                      lambda p: save_file({"embeddings": np.ascontiguousarray(self._emb)}, str(p), metadata=header))
        atomic_write(folder / METADATA_FILE, lambda p: p.write_text(json.dumps(table, indent=1)))

    @classmethod
    def load(cls, folder: str | Path) -> GalleryIndex:
        folder = Path(folder)
        emb_path, meta_path = folder / EMBEDDINGS_FILE, folder / METADATA_FILE
        if not emb_path.exists() or not meta_path.exists():
            raise IndexLoadError(f"{folder}: no saved index ({EMBEDDINGS_FILE} + {METADATA_FILE})")
        try:
            with safe_open(str(emb_path), "np") as f:  # its header holds the generation token
                header, emb = f.metadata() or {}, f.get_tensor("embeddings")
            table = json.loads(meta_path.read_text())
            rows = table["rows"]
        except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
            raise IndexLoadError(f"{folder}: unreadable index ({type(e).__name__}: {e})") from e
        if header.get("generation") != table.get("generation") or len(rows) != len(emb):
            raise IndexLoadError(f"{folder}: {EMBEDDINGS_FILE} and {METADATA_FILE} do not belong together "
                                 "(interrupted save?); rebuild the gallery")
        index = cls(table.get("dim") or None)
        if len(rows):
            if emb.ndim != 2 or emb.shape[1] != index.dim:
                raise IndexLoadError(f"{folder}: embeddings of shape {emb.shape} do not fit dimension {index.dim}")
            index._append(emb, rows)
        return index
