"""Discovery beyond a query's first results: a *mix* (a play queue that flows from seeds) and a *path* (from one
video to another in steps), from the catalog's stored vectors alone: nothing is extracted again.

Both walk the catalog one video at a time, in any search target (a feature space, or ``fused`` with the catalog's
tuned weights, :func:`mvr.retrieval.query.catalog_fusion`). A candidate's *score* blends rows of the target's
distances from catalog videos to every video of the pool (:func:`mvr.retrieval.fusion.distances`), each row
first turned into z-scores over the pool (:func:`mvr.retrieval.fusion.row_z_scores`), so that rows from
different videos, spaces and metrics weigh alike; lower is nearer. Blending distances rather than averaging
vectors keeps every metric and every fusion meaningful: a mean of vectors is no centre for a cosine or
Bray-Curtis distance, nor for a late fusion of spaces. Ties go by video id ascending, as in every ranking of mvr.
Writing ``z(v)`` for the z-scored row of video ``v``:

Mix
    The queue starts with the first seed. Each next video is the one with the lowest score
    ``(1 - s) z(last) + s mean(z(seed) for the seeds) - a mean(z(avoided) for the avoided videos)``, where ``last``
    is the video played last, ``s`` the seeds' pull (``seed_weight``) and ``a`` the avoided videos' push
    (``avoid_weight``): a moving target between the last video and the seeds' centre, kept away from what is
    avoided. A video is eligible when it has not been played, is neither an avoided video nor of an avoided video's
    group (another excerpt of that track), and is not of the last video's group (never two excerpts of one track
    in a row). The other seeds are eligible like any video (they are near the seeds' centre, so they come early).
    When nothing is eligible any more, the queue ends there, with a note.
Path
    The path starts at A and ends at B, ``n`` videos in all. Step ``i`` (``1 <= i <= n - 2``) aims ``1 / (n - i)``
    of the way from the previous video ``p`` to B, that is one equal share of the steps left: the next video is
    the eligible one with the lowest score ``(1 - g) z(p) + g z(B)``, ``g = 1 / (n - i)``. Eligible: not used
    yet, not of A's or B's group (A's and B's near-copies add no step) nor of ``p``'s, and not farther from B than
    ``p`` by the target's distance (so the distance to B never grows along the path). When nothing is eligible,
    the path goes straight to B from there, with a note. Re-aiming from the previous video at each step keeps each
    step near the one before, and corrects a step that went too far or not far enough.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mvr import media
from mvr.errors import UnknownVideoError, UsageError
from mvr.ingest.policy import SourcePolicy
from mvr.retrieval.fusion import Fusion, distances, row_z_scores
from mvr.retrieval.query import SearchPlan, find_known, fusion_dict, plan_search
from mvr.retrieval.search import SearcherCache, check_ranking
from mvr.retrieval.targets import DEFAULT_FUSION, DEFAULT_MIX_LENGTH, DEFAULT_PATH_LENGTH
from mvr.store import Catalog, Video

SEED_WEIGHT = 0.5
"""How strongly a mix is pulled back to its seeds' centre at each step (the rest follows the last video)."""
AVOID_WEIGHT = 0.5
"""How strongly a mix is pushed away from its avoided videos."""
_LARGEST_ID = 2**63 - 1  # SQLite's largest integer


@dataclass(frozen=True)
class Step:
    """One video of a mix or a path.

    Attributes
    ----------
    position : int
        Its place, from 1.
    video : Video
        The catalog video.
    distance : float, optional
        The search target's distance from the previous video to this one (None for the first, or where the metric
        gives no finite number).
    score : float, optional
        The blended score that chose it (lower is nearer; see :mod:`mvr.retrieval.discovery`); None for a video
        the request placed (a mix's first seed, a path's two ends).
    """

    position: int
    video: Video
    distance: float | None
    score: float | None

    def to_dict(self) -> dict:
        """``{"position", "video", "distance", "score"}``, the video as :meth:`mvr.store.Video.to_dict`."""
        return {"position": self.position, "video": self.video.to_dict(), "distance": self.distance,
                "score": self.score}


@dataclass(frozen=True)
class PathStep(Step):
    """One video of a path, and its distance to the path's end (B).

    Attributes
    ----------
    to_end : float, optional
        The search target's distance from B to this video: it never grows along a path.
    """

    to_end: float | None

    def to_dict(self) -> dict:
        """:meth:`Step.to_dict` and ``distance_to_end``."""
        return super().to_dict() | {"distance_to_end": self.to_end}


@dataclass(kw_only=True)
class Walk:
    """What a mix and a path share: how they were measured, their videos in order, and notes.

    Attributes
    ----------
    modality, metric : str
        The search target and its metric.
    fusion : Fusion, optional
        For ``fused``: the spaces, weights and metrics.
    weights_from : str
        Where the fusion's weights come from (:data:`mvr.retrieval.query.WEIGHT_ORIGINS`).
    items : list of Step
        The videos, in order.
    notes : list of str
        Why the walk is shorter than asked, if it is.
    """

    modality: str
    metric: str
    fusion: Fusion | None
    weights_from: str
    items: list[Step]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """``{"modality", "metric", "items", "notes"}``, and ``fusion`` for a fused walk."""
        found = {"modality": self.modality, "metric": self.metric, "items": [item.to_dict() for item in self.items],
                 "notes": list(self.notes)}
        if self.fusion is not None:
            found["fusion"] = fusion_dict(self.fusion, self.metric, self.weights_from)
        return found

    def to_m3u(self) -> str:
        """An extended M3U playlist of the videos: ``#EXTINF:seconds,title`` and each media file's absolute path."""
        lines = ["#EXTM3U"]
        for item in self.items:
            title = " ".join(item.video.title.splitlines())
            lines += [f"#EXTINF:{round(item.video.duration)},{title}", str(Path(item.video.media_path).resolve())]
        return "\n".join(lines) + "\n"


@dataclass(kw_only=True)
class Mix(Walk):
    """A play queue that flows from seeds (:func:`build_mix`).

    Attributes
    ----------
    seeds, avoid : list of Video
        The videos to be more like, and those to be less like.
    """

    seeds: list[Video]
    avoid: list[Video]

    def to_dict(self) -> dict:
        """The JSON of ``mvr mix --json``: ``seeds`` and ``avoid`` (videos), then :meth:`Walk.to_dict`."""
        return {"seeds": [video.to_dict() for video in self.seeds],
                "avoid": [video.to_dict() for video in self.avoid], **super().to_dict()}


@dataclass(kw_only=True)
class VideoPath(Walk):
    """A path from one video to another (:func:`build_path`); its items are :class:`PathStep`.

    Attributes
    ----------
    start, end : Video
        A and B: the first and the last item.
    """

    start: Video
    end: Video

    def to_dict(self) -> dict:
        """The JSON of ``mvr path --json``: ``start`` and ``end`` (videos), then :meth:`Walk.to_dict`."""
        return {"start": self.start.to_dict(), "end": self.end.to_dict(), **super().to_dict()}


def find_video(catalog: Catalog, name: str, *, policy: SourcePolicy | None = None) -> Video:
    """The catalog video that ``name`` names, for the command line's seeds.

    In this order: an id (ASCII digits); a source as ``mvr list --json`` shows it, or another name the catalog
    knows the video by; a file or URL whose content the catalog holds (:func:`mvr.retrieval.query.find_known`, as
    ``mvr query`` finds a known source: a URL the catalog does not know by name is downloaded to be hashed).

    Parameters
    ----------
    catalog : Catalog
        Where to look.
    name : str
        What the user wrote.
    policy : SourcePolicy, optional
        The URL policy for a download; by default mvr's.

    Raises
    ------
    UnknownVideoError
        When the catalog holds no such video.
    MediaError
        When a file or URL cannot be read.
    """
    text = name.strip()
    if not text:
        raise UnknownVideoError(f"'{name}': an empty name names no video")
    if text.isascii() and text.isdigit():
        video = catalog.get(int(text)) if int(text) <= _LARGEST_ID else None
        if video is None:
            raise UnknownVideoError(f"{name}: no video with this id in the catalog (mvr list shows them)")
        return video
    video = catalog.find_by_source(text)
    if video is not None:
        return video
    if not media.is_url(text) and not Path(text).exists():
        raise UnknownVideoError(f"{name}: neither an id, a source nor a file of this catalog (mvr list shows them)")
    video, resolved = find_known(catalog, text, policy=policy or SourcePolicy())
    if resolved is not None:
        resolved.cleanup()
    if video is None:
        raise UnknownVideoError(f"{name}: its content is not in the catalog (add it with mvr index first)")
    return video


def build_mix(
    catalog: Catalog,
    *,
    seeds: Sequence[int],
    avoid: Sequence[int] = (),
    n: int = DEFAULT_MIX_LENGTH,
    modality: str = "audio",
    metric: str | None = None,
    fusion: str = DEFAULT_FUSION,
    weights: Mapping[str, float] | None = None,
    seed_weight: float = SEED_WEIGHT,
    avoid_weight: float = AVOID_WEIGHT,
    searchers: SearcherCache | None = None,
) -> Mix:
    """A play queue of ``n`` catalog videos that flows from ``seeds`` and away from ``avoid``.

    The rule (:mod:`mvr.retrieval.discovery`, "Mix"): the first seed first; then each time the eligible video
    nearest to a blend of the last video and the seeds' centre, pushed away from the avoided videos; never a video
    twice, never an avoided video or one of its group, never two videos of one group in a row.

    Parameters
    ----------
    catalog : Catalog
        The videos to choose from.
    seeds : sequence of int
        Video ids, at least one: the queue starts with the first, and stays near all of them.
    avoid : sequence of int
        Video ids to stay away from ("less like that"); never played, nor their groups.
    n : int
        How many videos the queue holds, the first seed included (fewer when the catalog runs out).
    modality : str
        One of :func:`mvr.retrieval.search_targets`: a feature space, or ``fused``.
    metric : str, optional
        By default the target's own (for a tuned fused search, each space's tuned metric).
    fusion : str
        For ``fused``: ``late``, ``adaptive`` or ``concat``.
    weights : mapping, optional
        For ``fused``: space -> weight; by default the catalog's tuned weights, else equal ones.
    seed_weight : float
        ``s`` in the rule, 0-1: 0 follows the last video alone, 1 stays at the seeds' centre.
    avoid_weight : float
        ``a`` in the rule, at least 0: how hard the avoided videos push.
    searchers : SearcherCache, optional
        The catalog's pools (a service keeps one); made afresh when not given.

    Returns
    -------
    Mix
        ``items``: ``m <= n`` steps, ``notes`` saying why when ``m < n``.

    Raises
    ------
    UnknownVideoError
        For a seed or avoided id the catalog does not hold.
    UsageError
        For bad options, a video both a seed and avoided, or a seed without the target's vectors.
    CatalogError
        When no video has the target's vectors.
    DegenerateMetricError
        When the metric ties every video.
    """
    _check_length(n, 1, "mix")
    if not seeds:
        raise UsageError("mix: give at least one seed video")
    if not 0.0 <= seed_weight <= 1.0:
        raise UsageError(f"seed_weight: {seed_weight} is not between 0 and 1")
    if not avoid_weight >= 0.0:
        raise UsageError(f"avoid_weight: {avoid_weight} is below 0")
    seeds, avoid = list(dict.fromkeys(seeds)), list(dict.fromkeys(avoid))
    both = [video_id for video_id in seeds if video_id in avoid]
    if both:
        raise UsageError(f"video {both[0]}: both a seed and avoided")
    walker = _Walker(catalog, _plan(catalog, modality, metric, fusion, weights, searchers))
    seed_rows, avoid_rows = walker.positions(seeds), walker.positions(avoid)
    walker.fetch([*seed_rows, *avoid_rows])
    pull = seed_weight * walker.mean_z(seed_rows)
    if avoid_rows:
        pull = pull - avoid_weight * walker.mean_z(avoid_rows)
    allowed = ~walker.with_groups(avoid_rows)
    walker.place(seed_rows[0])
    notes = []
    while len(walker.order) < n:
        if not walker.advance((1.0 - seed_weight) * walker.z(walker.order[-1]) + pull, allowed):
            notes.append(f"the mix holds {len(walker.order)} of the {n} videos asked for: every other video with"
                         f" {modality} vectors is played, avoided or of the last one's group")
            break
    return Mix(**walker.measure(), items=walker.steps(), notes=notes,
               seeds=[walker.video(row) for row in seed_rows], avoid=[walker.video(row) for row in avoid_rows])


def build_path(
    catalog: Catalog,
    *,
    start: int,
    end: int,
    n: int = DEFAULT_PATH_LENGTH,
    modality: str = "audio",
    metric: str | None = None,
    fusion: str = DEFAULT_FUSION,
    weights: Mapping[str, float] | None = None,
    searchers: SearcherCache | None = None,
) -> VideoPath:
    """A path of ``n`` catalog videos from ``start`` (A) to ``end`` (B), each near the one before and no farther
    from B.

    The rule (:mod:`mvr.retrieval.discovery`, "Path"): each step aims one equal share of the steps left from the
    previous video towards B, among the unused videos no farther from B than the previous one, outside A's, B's and
    the previous video's groups.

    Parameters
    ----------
    catalog : Catalog
        The videos to go through.
    start, end : int
        Video ids of A and B (two different videos).
    n : int
        How many videos the path holds, A and B included, at least 2 (fewer when no video fits between).
    modality, metric, fusion, weights, searchers
        As for :func:`build_mix`.

    Returns
    -------
    VideoPath
        ``items``: :class:`PathStep` ``(m,)``, ``m <= n``, A first and B last; ``to_end`` non-increasing.

    Raises
    ------
    UnknownVideoError
        For an id the catalog does not hold.
    UsageError
        For bad options, A equal to B, or an end without the target's vectors.
    CatalogError
        When no video has the target's vectors.
    DegenerateMetricError
        When the metric ties every video.
    """
    _check_length(n, 2, "path")
    if start == end:
        raise UsageError(f"video {start}: a path needs two different videos, not the same at both ends")
    walker = _Walker(catalog, _plan(catalog, modality, metric, fusion, weights, searchers))
    first, last = walker.positions([start, end])
    walker.fetch([first, last])
    to_end = walker.total(last)
    between = ~walker.with_groups([first, last])  # A's and B's near-copies add no step
    walker.place(first)
    notes = []
    for step in range(1, n - 1):
        share = 1.0 / (n - step)
        previous = walker.order[-1]
        score = (1.0 - share) * walker.z(previous) + share * walker.z(last)
        if not walker.advance(score, between & (to_end <= to_end[previous])):
            notes.append(f"the path holds {len(walker.order) + 1} of the {n} videos asked for: no other video is"
                         f" as near to video {end} as the last step and outside the groups of both ends and of"
                         " that step")
            break
    walker.place(last)
    return VideoPath(**walker.measure(), items=walker.steps(to_end=to_end), notes=notes, start=walker.video(first),
                     end=walker.video(last))


def _check_length(n: int, least: int, what: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < least:
        raise UsageError(f"n: a {what} holds at least {least} video{'s' if least > 1 else ''}, not {n!r}")


def _plan(catalog: Catalog, modality: str, metric: str | None, fusion: str, weights: Mapping[str, float] | None,
          searchers: SearcherCache | None) -> SearchPlan:
    return plan_search(catalog, modality, metric=metric, fusion=fusion, weights=weights,
                       searchers=searchers or SearcherCache())


class _Walker:
    """A walk's view of the pool (its videos and groups, and the target's z-scored distance rows, each computed
    once: a row costs one scan of the pool, as a query does), and the walk so far (pool rows in order)."""

    def __init__(self, catalog: Catalog, plan: SearchPlan) -> None:
        self.plan = plan
        videos = {video.id: video for video in catalog.videos()}
        self._catalog_ids = frozenset(videos)  # the pool holds only the videos with the target's spaces
        self._videos = [videos[int(video_id)] for video_id in plan.pool.ids]
        self._groups = np.array([video.group for video in self._videos], dtype=object)
        self._rows = np.arange(plan.pool.ids.size)
        self._totals: dict[int, np.ndarray] = {}
        self._z: dict[int, np.ndarray] = {}
        self.order: list[int] = []
        self._scores: list[float | None] = []
        self._used = np.zeros(plan.pool.ids.size, dtype=bool)

    def measure(self) -> dict:
        """How the walk measures, as :class:`Walk`'s fields."""
        return {"modality": self.plan.modality, "metric": self.plan.metric, "fusion": self.plan.fusion,
                "weights_from": self.plan.weights_from}

    def place(self, row: int) -> None:
        """Add the video at ``row`` as the request placed it (no score)."""
        self.order.append(row)
        self._scores.append(None)
        self._used[row] = True

    def advance(self, score: np.ndarray, eligible: np.ndarray) -> bool:
        """Add the video of the lowest finite score among the ``eligible`` (bool ``(n,)``) that are unused and not of
        the last video's group, ties to the lowest id; False when there is none."""
        allowed = eligible & ~self._used & ~self.with_groups(self.order[-1:]) & np.isfinite(score)
        if not allowed.any():
            return False
        row = int(np.argmin(np.where(allowed, score, np.inf)))  # the pool's ids ascend: the first is the lowest
        self.order.append(row)
        self._scores.append(float(score[row]))
        self._used[row] = True
        return True

    def positions(self, video_ids: Sequence[int]) -> list[int]:
        """The pool rows of catalog videos."""
        ids = self.plan.pool.ids
        found: list[int] = []
        for video_id in video_ids:
            row = int(np.searchsorted(ids, video_id))
            if row == ids.size or ids[row] != video_id:
                if video_id not in self._catalog_ids:
                    raise UnknownVideoError(f"video {video_id}: not in the catalog")
                raise UsageError(f"video {video_id}: has no {self.plan.modality} vectors in this catalog")
            found.append(row)
        return found

    def video(self, row: int) -> Video:
        return self._videos[row]

    def with_groups(self, rows: Sequence[int]) -> np.ndarray:
        """bool ``(n,)``: the videos at ``rows`` and every video that shares a group with one of them."""
        found = np.isin(self._rows, rows)
        for group in {self._groups[row] for row in rows} - {None}:
            found |= self._groups == group
        return found

    def fetch(self, rows: Sequence[int]) -> None:
        """Compute the distance rows of the videos at ``rows`` not computed yet, in one call."""
        missing = [row for row in dict.fromkeys(rows) if row not in self._totals]
        if not missing:
            return
        pool = self.plan.pool
        found = distances({space: pool.matrices[space][missing] for space in pool.spaces}, pool, self.plan.metric,
                          self.plan.fusion).total
        for row, total, z in zip(missing, found, row_z_scores(found), strict=True):
            check_ranking(total, self.plan.metric)
            self._totals[row], self._z[row] = total, z

    def total(self, row: int) -> np.ndarray:
        """float64 ``(n,)``: the target's distances from the video at ``row`` to the pool."""
        self.fetch([row])
        return self._totals[row]

    def z(self, row: int) -> np.ndarray:
        """float64 ``(n,)``: the same as z-scores over the pool (NaN where a distance is not finite)."""
        self.fetch([row])
        return self._z[row]

    def mean_z(self, rows: Sequence[int]) -> np.ndarray:
        """float64 ``(n,)``: the mean of the z-scored rows of ``rows``."""
        self.fetch(rows)
        return np.mean([self._z[row] for row in rows], axis=0)

    def steps(self, to_end: np.ndarray | None = None) -> list[Step]:
        """The walk's videos as steps, each with its distance from the one before (and to the end, for a path)."""
        found = []
        for place, (row, score) in enumerate(zip(self.order, self._scores, strict=True)):
            distance = None if place == 0 else _number(self.total(self.order[place - 1])[row])
            step = Step(position=place + 1, video=self._videos[row], distance=distance, score=score)
            if to_end is not None:
                step = PathStep(**vars(step), to_end=_number(to_end[row]))
            found.append(step)
        return found


def _number(value: float) -> float | None:
    """A distance as JSON can carry it: None where it is not finite."""
    return float(value) if np.isfinite(value) else None
