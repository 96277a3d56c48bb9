"""Which keyframe of a result looks most like which keyframe of the query: the pair a card shows.

The visual space keeps only the mean and spread of a video's keyframe embeddings, so the pair is found on demand:
both videos' keyframes are decoded and embedded again with the catalog's own visual extractor (the same keyframes,
crop and network as its vectors), and the pair with the highest cosine similarity of their embeddings is the
answer, each picture as a JPEG. It costs about what indexing the two videos' pictures costs (a second or two on
two cores for 30 s clips), so it is asked for: one result at a time by the page (``GET
/api/videos/{id}/keyframe-match/{other}``, a card's *Matching frames* button), every result of ``mvr query
--keyframes DIR`` (the query's keyframes decoded once).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mvr import media
from mvr.features.spaces import VisualExtractor


@dataclass(frozen=True)
class KeyframeMatch:
    """The nearest pair of keyframes of two videos.

    Attributes
    ----------
    query_keyframe, result_keyframe : int
        Each keyframe's place among its video's keyframes (0-based, in video order).
    query_keyframes, result_keyframes : int
        How many keyframes each video had (at most the extractor's keyframe cap).
    similarity : float
        The cosine similarity of the two keyframes' embeddings (-1 to 1).
    query_jpeg, result_jpeg : bytes
        The two pictures, as the network saw them (the centre square at its input size), as JPEG.
    """

    query_keyframe: int
    result_keyframe: int
    query_keyframes: int
    result_keyframes: int
    similarity: float
    query_jpeg: bytes
    result_jpeg: bytes

    def to_dict(self) -> dict:
        """The JSON form: the numbers, and each picture as a ``data:image/jpeg;base64,...`` address."""
        return {"query_keyframe": self.query_keyframe, "result_keyframe": self.result_keyframe,
                "query_keyframes": self.query_keyframes, "result_keyframes": self.result_keyframes,
                "similarity": self.similarity, "query_image": _data_address(self.query_jpeg),
                "result_image": _data_address(self.result_jpeg)}


def matching_keyframes(query: Path, result: Path, extractor: VisualExtractor) -> KeyframeMatch:
    """The keyframes of ``query`` and ``result`` (media files) whose embeddings are nearest.

    Ties go to the earliest keyframes (the query's first, then the result's).

    Raises
    ------
    MediaError
        When either file has no video stream or no decodable keyframe, or a picture cannot be encoded.
    """
    return _nearest(extractor.keyframes(query), extractor.keyframes(result))


def matching_keyframes_of(query: Path, results: Sequence[Path], extractor: VisualExtractor) -> list[KeyframeMatch]:
    """:func:`matching_keyframes` of one query and each of ``results``, the query's keyframes decoded once."""
    asked = extractor.keyframes(query)
    return [_nearest(asked, extractor.keyframes(result)) for result in results]


def _nearest(query: tuple[np.ndarray, np.ndarray], result: tuple[np.ndarray, np.ndarray]) -> KeyframeMatch:
    """The nearest pair of two videos' ``(frames, embeddings)``."""
    (query_frames, query_embeddings), (result_frames, result_embeddings) = query, result
    similarity = _unit_rows(query_embeddings) @ _unit_rows(result_embeddings).T
    best = np.unravel_index(int(np.argmax(similarity)), similarity.shape)
    i, j = int(best[0]), int(best[1])
    return KeyframeMatch(query_keyframe=i, result_keyframe=j, query_keyframes=len(query_frames),
                         result_keyframes=len(result_frames), similarity=float(similarity[i, j]),
                         query_jpeg=media.picture_jpeg(query_frames[i]),
                         result_jpeg=media.picture_jpeg(result_frames[j]))


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


def _data_address(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
