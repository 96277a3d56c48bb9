"""A linear map learned from a catalog's labels, under which one space's same-label videos lie close.

Linear discriminant analysis (LDA; Fisher 1936): the vectors are standardised (each column less its mean, over
its spread), then projected on the directions that spread the labels' means apart most against the spread
within each label, the generalised eigenvectors of the between-label and within-label covariances
(``S_b w = lambda S_w w``), as many as there are labels less one. With a few dozen or hundred labelled videos of
a 136- to 2,560-number vector, the within-label covariance is not invertible, so each label's covariance is
shrunk towards a multiple of the identity by the Ledoit-Wolf rule (Ledoit and Wolf 2004; the shrinkage computed
from the data, nothing to choose), as scikit-learn's ``LinearDiscriminantAnalysis(solver="eigen",
shrinkage="auto")`` does. Distances in the projection are euclidean.

A projection is fitted by :mod:`mvr.retrieval.tuning` (``mvr tune``), kept with the catalog's tuning (exact
float64 numbers in its JSON), and applied by the fusion layer (:class:`mvr.retrieval.fusion.Fusion`) to the
query and to the candidates alike, before the distance.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import linalg

LDA = "lda"
PROJECTED_METRIC = "euclidean"
"""The metric of a projected space."""


@dataclass(frozen=True)
class Projection:
    """A fitted linear map of one space: ``(x - mean) / scale @ components``.

    Attributes
    ----------
    mean : np.ndarray
        float64 ``(dims,)``: the training vectors' column means.
    scale : np.ndarray
        float64 ``(dims,)``: their columns' spreads (1 where a column is constant).
    components : np.ndarray
        float64 ``(dims, c)``: the discriminant directions, the most telling first.
    method : str
        How it was fitted (:data:`LDA`).
    """

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    method: str = LDA

    @property
    def dims(self) -> int:
        """The length of the vectors it maps."""
        return int(self.mean.size)

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """The vectors in the projection: ``(..., dims)`` -> float64 ``(..., c)``."""
        return ((np.asarray(vectors, dtype=np.float64) - self.mean) / self.scale) @ self.components

    def group_parts(self, query: np.ndarray, result: np.ndarray, columns: Sequence[np.ndarray]) -> np.ndarray:
        """Each column group's own part of the projected distance between ``query`` and ``result`` (dims,).

        The projected difference ``d`` is the sum of each group's projected difference ``d_g`` (its own columns'
        difference, projected); a group's part is ``|d_g|^2``: what the distance would be were the two videos
        alike everywhere else. The parts are never negative; their sum differs from ``|d|^2`` by the cross terms
        between groups, which belong to no group alone. Returns float64 ``(groups,)``.
        """
        difference = (np.asarray(query, dtype=np.float64) - np.asarray(result, dtype=np.float64)) / self.scale
        return np.array([float(np.square(difference[cols] @ self.components[cols]).sum()) for cols in columns])

    @property
    def digest(self) -> str:
        """The SHA-256 of its JSON, which tells two fits apart (a saved map's layout records it)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict:
        """The JSON form: the method and each array's exact float64 bytes (little-endian, base64)."""
        return {"method": self.method, "dims": self.dims, "components": int(self.components.shape[1]),
                **{name: _encoded(getattr(self, name)) for name in ("mean", "scale")},
                "matrix": _encoded(self.components)}

    @classmethod
    def from_dict(cls, found: Mapping) -> Projection:
        """The projection of :meth:`to_dict`'s JSON."""
        dims, count = int(found["dims"]), int(found["components"])
        return cls(mean=_decoded(found["mean"], (dims,)), scale=_decoded(found["scale"], (dims,)),
                   components=_decoded(found["matrix"], (dims, count)), method=str(found["method"]))


def _encoded(values: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f8").tobytes()).decode("ascii")


def _decoded(text: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f8").reshape(shape).astype(np.float64)


def fit_lda(vectors: np.ndarray, labels: np.ndarray) -> Projection | None:
    """Fit linear discriminant analysis with Ledoit-Wolf shrinkage (see the module).

    Parameters
    ----------
    vectors : np.ndarray
        ``(n, dims)``: the labelled videos' vectors.
    labels : np.ndarray
        ``(n,)``: their labels (any hashable values).

    Returns
    -------
    Projection or None
        None when it cannot be fitted: fewer than two labels, or a within-label covariance that stays singular
        (every vector alike).
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    names, codes = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    if names.size < 2 or vectors.shape[0] <= names.size:
        return None
    standard, mean, scale = _standardised(vectors)
    priors = np.bincount(codes) / codes.size
    within = sum(prior * _shrunk_covariance(standard[codes == code]) for code, prior in enumerate(priors))
    between = _shrunk_covariance(standard) - within
    try:
        values, directions = linalg.eigh(between, within)
    except (linalg.LinAlgError, ValueError):
        return None
    order = np.argsort(values)[::-1][: min(names.size - 1, vectors.shape[1])]
    return Projection(mean=mean, scale=scale, components=np.ascontiguousarray(directions[:, order]))


def _shrunk_covariance(rows: np.ndarray) -> np.ndarray:
    """The Ledoit-Wolf covariance of ``rows`` ``(n, d)``, computed on its standardised columns and scaled back."""
    standard, _, scale = _standardised(rows)
    count, dims = standard.shape
    empirical = standard.T @ standard / count
    target = np.trace(empirical) / dims
    squared = standard**2
    # Ledoit and Wolf's estimate of the shrinkage that minimises the expected squared error.
    beta = ((squared.T @ squared).sum() / count - (empirical**2).sum()) / (dims * count)
    delta = ((empirical**2).sum() - 2.0 * target * np.trace(empirical) + dims * target**2) / dims
    shrinkage = 0.0 if delta == 0 else min(beta, delta) / delta
    shrunk = (1.0 - shrinkage) * empirical
    shrunk[np.diag_indices(dims)] += shrinkage * target
    return scale[:, None] * shrunk * scale[None, :]


def _standardised(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``rows`` ``(n, d)`` less their column means over their columns' spreads, and the means and spreads used.

    A column whose variance is within the rounding error of computing it (Chan, Golub and LeVeque's bound, as
    scikit-learn's ``StandardScaler``) is constant, and keeps a spread of 1: a column of one repeated value
    otherwise gets a spread of 1e-17 from the rounding of its mean, and dominates the projection.
    """
    count = rows.shape[0]
    mean = rows.mean(axis=0)
    variance = rows.var(axis=0)
    eps = np.finfo(np.float64).eps
    constant = variance <= count * eps * variance + (count * mean * eps) ** 2
    scale = np.where(constant, 1.0, np.sqrt(variance))
    return (rows - mean) / scale, mean, scale
