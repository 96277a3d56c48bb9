"""Planning a collection: which excerpt of which track goes with which pictures, deterministically for a seed."""

from __future__ import annotations

import random
from pathlib import Path

from mvr.dataset.sources import footage_clips, music_tracks, pictures
from mvr.dataset.spec import (
    MIXED_OWN_SHARE,
    SLIDE_S,
    VISUAL_STYLES,
    Asset,
    CollectionSpec,
    Item,
    Shot,
)
from mvr.errors import MvrError

_MOTIONS = ("zoom-in", "zoom-out", "pan-left", "pan-right")


# -------------------------------------------------------------------------------------------- planning ---

def plan_collection(spec: CollectionSpec, sources: Path) -> list[Item]:
    """Decide every item of a collection, deterministically for ``spec.seed``; encodes nothing.

    Fetches the sources the spec needs. Items come label by label, two excerpts of a track after each other.

    Raises
    ------
    MvrError
        For an impossible spec; MediaError when a source cannot be fetched.
    """
    spec.validate()
    excerpts = {label: _excerpts(label, spec, sources) for label in spec.audio_styles}
    styles = assign_visual_styles({label: len(chosen) for label, chosen in excerpts.items()}, spec)
    slots = [(label, track, excerpt, start, style) for label in spec.audio_styles
             for (track, excerpt, start), style in zip(excerpts[label], styles[label], strict=True)]
    # Pictures are dealt to the items in a shuffled order, not label by label: dealt label by label, the items of
    # one label would take a style's pictures in turn and share few of them, while the pictures dealt again
    # would go to other labels, so that sharing a picture would hint at a different label (measured: on the
    # factorial set visual precision fell below chance).
    pools = {style: _ShotPool(style, spec, sources) for style in set(spec.visual_styles)}
    order = list(range(len(slots)))
    random.Random(f"{spec.seed}:dealing").shuffle(order)
    shots = {}
    for position in order:
        shots[position] = pools[slots[position][4]].next_shots()
    return [Item(label, style, track, excerpt, start, spec.duration, shots[position], spec.width, spec.height)
            for position, (label, track, excerpt, start, style) in enumerate(slots)]


def _excerpts(label: str, spec: CollectionSpec, sources: Path) -> list[tuple[Asset, int, float]]:
    """Up to ``spec.per_label`` (track, excerpt number, start) triples: whole pairs from long tracks first.

    The first excerpt starts in the first half of the track and the second in the second half, so the two never
    overlap.
    """
    rng = random.Random(f"{spec.seed}:excerpts:{label}")
    tracks = [t for t in music_tracks(label, sources) if t.duration >= spec.duration + 1.0]
    rng.shuffle(tracks)
    # Tracks long enough for two excerpts come first, so that a small collection still has groups of two.
    tracks.sort(key=lambda t: t.duration < 2 * spec.duration + 2.0)
    chosen = []
    for track in tracks:
        for excerpt, (low, high) in enumerate(_excerpt_windows(track.duration, spec.duration), start=1):
            chosen.append((track, excerpt, round(rng.uniform(low, high), 2)))
    return chosen[: spec.per_label]


def _excerpt_windows(track_s: float, excerpt_s: float) -> list[tuple[float, float]]:
    """Ranges of allowed start times: one per half of the track when it holds two excerpts, else one."""
    margin = 0.5  # stay clear of the very first and last samples, often silence or a click
    if track_s >= 2 * excerpt_s + 2.0:
        half = track_s / 2
        return [(margin, half - excerpt_s), (half, track_s - excerpt_s - margin)]
    return [(margin, max(margin, track_s - excerpt_s - margin))]


def assign_visual_styles(counts: dict[str, int], spec: CollectionSpec) -> dict[str, list[str]]:
    """The visual style of each item of each label, in item order.

    ``coupled``: label i always gets visual style i. ``mixed``: label i gets style i for ``MIXED_OWN_SHARE`` of
    its items (rounded) and the other styles in turn for the rest. ``factorial``: every label cycles through all
    visual styles, so that each (label, visual style) pair is equally frequent when the counts allow.
    The order within a label is shuffled (seeded), so that both excerpts of a track need not share a style.
    """
    assigned = {}
    for index, label in enumerate(spec.audio_styles):
        n = counts[label]
        if spec.mode == "factorial":
            styles = [spec.visual_styles[k % len(spec.visual_styles)] for k in range(n)]
        else:
            own = spec.visual_styles[index]
            n_own = n if spec.mode == "coupled" else round(n * MIXED_OWN_SHARE)
            others = [s for s in spec.visual_styles if s != own] or [own]
            styles = [own] * n_own + [others[k % len(others)] for k in range(n - n_own)]
        random.Random(f"{spec.seed}:styles:{label}").shuffle(styles)
        assigned[label] = styles
    return assigned


class _ShotPool:
    """Deals out a visual style's pictures or footage windows evenly, reshuffling after each full round."""

    def __init__(self, style: str, spec: CollectionSpec, sources: Path) -> None:
        self._rng = random.Random(f"{spec.seed}:shots:{style}")
        self._duration = spec.duration
        self._footage = not VISUAL_STYLES[style]
        if self._footage:
            self._units = [(clip, start) for clip in footage_clips(sources) for start in _windows(clip, spec.duration)]
        else:
            self._units = [(picture, 0.0) for picture in pictures(style, sources)]
        if not self._units:
            raise MvrError(f"visual style {style!r} has no usable pictures or footage")
        self._queue: list[tuple[Asset, float]] = []

    def _take(self) -> tuple[Asset, float]:
        if not self._queue:
            self._queue = list(self._units)
            self._rng.shuffle(self._queue)
        return self._queue.pop()

    def next_shots(self) -> tuple[Shot, ...]:
        """The shots of the next item: one footage window, or photographs of ``SLIDE_S`` seconds each."""
        if self._footage:
            clip, start = self._take()
            return (Shot(clip, start, self._duration, "footage"),)
        n = max(1, round(self._duration / SLIDE_S))
        lengths = [round(self._duration / n, 3)] * n
        lengths[-1] = round(self._duration - sum(lengths[:-1]), 3)
        return tuple(Shot(self._take()[0], 0.0, length, self._rng.choice(_MOTIONS)) for length in lengths)


def _windows(clip: Asset, duration: float) -> list[float]:
    """Start times of non-overlapping windows of a clip; a clip shorter than one window is looped from 0."""
    count = int(clip.duration // duration)
    return [round(k * duration, 3) for k in range(count)] or [0.0]
