"""Mixes and paths (:mod:`mvr.retrieval.discovery`): their rules on a small catalog whose answers are known, the
command line (``mvr mix``, ``mvr path``), the REST API (``POST /api/mix``, ``POST /api/path``), and a real catalog
of real music videos.

The synthetic catalog puts twelve videos on a line: video ``x`` (id ``x + 1``) sits at audio ``(x, 1, 0)``, so that
its euclidean distance to video ``y`` is ``|x - y|``; videos ``2k`` and ``2k + 1`` share the group ``g{k}`` (two
excerpts of one track).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mvr.cli import main
from mvr.errors import MediaError, UnknownVideoError, UsageError
from mvr.retrieval import query as query_module
from mvr.retrieval.discovery import Step, build_mix, build_path, find_video
from mvr.retrieval.search import SearcherCache
from mvr.store import Catalog, NewVideo
from mvr.web import ServiceSettings
from tests.test_web import assert_one_line_error, local_client, web_catalog

LINE = 12


def line_catalog(folder: Path, count: int = LINE) -> Path:
    """The twelve videos on a line (see the module's docstring), with a visual space too, and labels by half."""
    with Catalog.open(folder) as catalog:
        for x in range(count):
            media_file = folder.parent / f"line{x}.mp4"
            media_file.write_bytes(b"x" * (x + 1))
            vectors = {"audio": np.array([float(x), 1.0, 0.0]),
                       "visual": np.array([np.cos(x / 3.0), np.sin(x / 3.0), 1.0])}
            catalog.add(NewVideo(
                content_hash=f"{x:064d}", source=str(media_file), media_file=media_file, title=f"line {x}",
                duration=30.0 + x / 10, label="low" if x < count // 2 else "high", group=f"g{x // 2}",
                vectors={space: (f"{space}-v1", vector) for space, vector in vectors.items()},
            ))
    return folder


def xs(steps: list[Step]) -> list[int]:
    """Each step's place on the line."""
    return [step.video.id - 1 for step in steps]


def assert_no_same_group_in_a_row(steps: list[Step]) -> None:
    groups = [step.video.group for step in steps]
    assert all(a != b for a, b in zip(groups, groups[1:])), groups


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return line_catalog(tmp_path_factory.mktemp("line") / "catalog")


@pytest.fixture
def catalog(line: Path) -> Iterator[Catalog]:
    with Catalog.open(line, create=False) as opened:
        yield opened


def mix_xs(catalog: Catalog, seed: int, **options) -> list[int]:
    return xs(build_mix(catalog, seeds=[seed + 1], metric="euclidean", **options).items)


def reference_mix(seeds: list[int], avoid: list[int], n: int, seed_weight: float = 0.5,
                  avoid_weight: float = 0.5) -> list[int]:
    """The mix rule of :mod:`mvr.retrieval.discovery` worked out on the line, from ``|x - y|`` alone."""
    line = np.arange(LINE, dtype=float)

    def z(x: int) -> np.ndarray:
        row = np.abs(line - x)
        return (row - row.mean()) / row.std()

    def group(x: int) -> int:
        return x // 2

    pull = seed_weight * np.mean([z(x) for x in seeds], axis=0)
    if avoid:
        pull = pull - avoid_weight * np.mean([z(x) for x in avoid], axis=0)
    order = [seeds[0]]
    while len(order) < n:
        score = (1 - seed_weight) * z(order[-1]) + pull
        eligible = [x for x in range(LINE) if x not in order and group(x) != group(order[-1])
                    and group(x) not in {group(a) for a in avoid}]
        if not eligible:
            break
        order.append(min(eligible, key=lambda x: (score[x], x)))
    return order


# mix ------------------------------------------------------------------------------------------------------------


def test_a_mix_that_stays_at_its_seed_plays_by_nearness_never_two_of_a_group_in_a_row(catalog: Catalog) -> None:
    # seed_weight 1: the score is the distance to the seed. Video 4 is as near as 6 and has the lower id, but it is
    # the seed's other excerpt, so 6 comes first; ties otherwise go to the lower id (3 before 7, 2 before 8...).
    # Video 11 would follow its own group's 10: the queue ends there instead.
    found = build_mix(catalog, seeds=[6], metric="euclidean", n=LINE, seed_weight=1.0)
    assert xs(found.items) == [5, 6, 4, 3, 7, 2, 8, 1, 9, 0, 10]
    assert found.notes == ["the mix holds 11 of the 12 videos asked for: every other video with audio vectors is"
                           " played, avoided or of the last one's group"]


def test_a_mix_that_follows_its_last_video_walks_to_the_nearest_unplayed_one(catalog: Catalog) -> None:
    # seed_weight 0: each next video is the nearest unplayed one to the last, outside the last one's group.
    assert mix_xs(catalog, 5, n=LINE, seed_weight=0.0) == [5, 6, 4, 3, 1, 2, 0, 7, 8, 10, 9, 11]


def test_a_default_mix_follows_the_rule_from_its_seed_and_repeats_nothing(catalog: Catalog) -> None:
    found = build_mix(catalog, seeds=[6], metric="euclidean", n=8)
    placed = xs(found.items)
    assert placed == reference_mix([5], [], 8) == [5, 6, 4, 3, 7, 8, 10, 9]
    assert found.items[0].score is None and found.items[0].distance is None
    assert len(set(placed)) == 8 and not found.notes
    assert_no_same_group_in_a_row(found.items)
    assert [step.distance for step in found.items[1:]] == [abs(a - b) for a, b in zip(placed, placed[1:])]
    assert [step.position for step in found.items] == list(range(1, 9))


def test_avoided_videos_push_the_mix_away_and_are_never_played_nor_their_group(catalog: Catalog) -> None:
    plain = mix_xs(catalog, 5, n=6)
    avoiding = mix_xs(catalog, 5, n=6, avoid=[9])  # video 8 (id 9), group g4 with video 9
    assert avoiding == reference_mix([5], [8], 6) == [5, 3, 4, 2, 1, 6]
    assert 8 not in avoiding and 9 not in avoiding
    assert plain[1] == 6 and avoiding[1] < 5  # the nearest step towards the avoided video is not taken first
    assert np.mean([abs(x - 8) for x in avoiding]) > np.mean([abs(x - 8) for x in plain])
    found = build_mix(catalog, seeds=[6], avoid=[9], metric="euclidean", n=3)
    assert [video.id for video in found.avoid] == [9] and [video.id for video in found.seeds] == [6]


def test_several_seeds_the_first_starts_the_mix_which_fills_the_way_between_them(catalog: Catalog) -> None:
    found = build_mix(catalog, seeds=[1, 5], metric="euclidean", n=6)
    placed = xs(found.items)
    assert placed == reference_mix([0, 4], [], 6) == [0, 2, 1, 3, 4, 6]
    assert [video.id for video in found.seeds] == [1, 5]


def test_a_mix_longer_than_the_catalog_ends_with_a_note(catalog: Catalog) -> None:
    found = build_mix(catalog, seeds=[1], metric="euclidean", n=50)
    assert sorted(xs(found.items)) == list(range(LINE))
    assert len(found.notes) == 1 and "12 of the 50" in found.notes[0]
    assert_no_same_group_in_a_row(found.items)


def test_a_fused_mix_uses_both_spaces_and_says_how(catalog: Catalog) -> None:
    found = build_mix(catalog, seeds=[3], modality="fused", n=5)
    as_json = json.loads(json.dumps(found.to_dict()))
    assert as_json["modality"] == "fused" and as_json["metric"] == "cosine"
    assert as_json["fusion"]["weights_from"] == "equal" and set(as_json["fusion"]["weights"]) == {"audio", "visual"}
    assert [item["position"] for item in as_json["items"]] == [1, 2, 3, 4, 5]
    assert as_json["items"][0]["video"]["id"] == 3 and as_json["seeds"][0]["id"] == 3 and as_json["avoid"] == []
    assert all(isinstance(item["score"], float) for item in as_json["items"][1:])


# path -----------------------------------------------------------------------------------------------------------


def test_a_path_goes_from_a_to_b_in_even_steps_nearer_to_b_each_time(catalog: Catalog) -> None:
    found = build_path(catalog, start=1, end=LINE, n=6, metric="euclidean")
    assert xs(found.items) == [0, 2, 4, 6, 8, 11]  # videos 1 and 10 are A's and B's other excerpts
    to_end = [step.to_end for step in found.items]
    assert to_end == [11.0, 9.0, 7.0, 5.0, 3.0, 0.0]
    assert found.items[0].score is None and found.items[-1].score is None and not found.notes
    assert found.start.id == 1 and found.end.id == LINE
    as_json = found.to_dict()
    assert as_json["start"]["id"] == 1 and as_json["end"]["id"] == LINE
    assert [item["distance_to_end"] for item in as_json["items"]] == to_end


@pytest.mark.parametrize("modality", ["audio", "visual", "fused"])
def test_every_path_starts_at_a_ends_at_b_and_never_moves_away_from_b(catalog: Catalog, modality: str) -> None:
    found = build_path(catalog, start=3, end=11, n=5, modality=modality)
    ids = [step.video.id for step in found.items]
    assert ids[0] == 3 and ids[-1] == 11 and len(set(ids)) == len(ids)
    to_end = [step.to_end for step in found.items]
    assert all(later <= earlier for earlier, later in zip(to_end, to_end[1:])), to_end
    assert_no_same_group_in_a_row(found.items)
    assert all(step.video.group not in ("g1", "g5") for step in found.items[1:-1])


def test_a_path_with_no_room_between_goes_straight_to_b_with_a_note(catalog: Catalog) -> None:
    found = build_path(catalog, start=1, end=LINE, n=20, metric="euclidean")
    assert xs(found.items) == [0, 2, 4, 6, 8, 11]
    assert len(found.notes) == 1 and "6 of the 20" in found.notes[0]
    assert xs(build_path(catalog, start=1, end=LINE, n=2, metric="euclidean").items) == [0, 11]


# errors and names -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("call", "error", "words"), [
    (lambda c: build_mix(c, seeds=[99]), UnknownVideoError, "video 99: not in the catalog"),
    (lambda c: build_mix(c, seeds=[]), UsageError, "at least one seed"),
    (lambda c: build_mix(c, seeds=[2], avoid=[2]), UsageError, "video 2: both a seed and avoided"),
    (lambda c: build_mix(c, seeds=[2], n=0), UsageError, "at least 1 video"),
    (lambda c: build_mix(c, seeds=[2], seed_weight=2.0), UsageError, "seed_weight"),
    (lambda c: build_mix(c, seeds=[2], modality="sound"), UsageError, "unknown modality 'sound'"),
    (lambda c: build_path(c, start=2, end=2), UsageError, "two different videos"),
    (lambda c: build_path(c, start=2, end=3, n=1), UsageError, "at least 2 videos"),
    (lambda c: build_path(c, start=2, end=100), UnknownVideoError, "video 100"),
    (lambda c: build_path(c, start=2, end=3, metric="manhattan"), UsageError, "manhattan"),
])
def test_bad_requests_name_the_item(catalog: Catalog, call, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        call(catalog)


def test_a_video_without_the_searched_space_is_refused_by_name(tmp_path: Path) -> None:
    folder = line_catalog(tmp_path / "catalog", count=4)
    with Catalog.open(folder) as catalog:
        media_file = tmp_path / "sound-only.mp4"
        media_file.write_bytes(b"sound only")
        extra = catalog.add(NewVideo(content_hash="f" * 64, source=str(media_file), media_file=media_file,
                                     title="sound only", duration=5.0,
                                     vectors={"audio": ("audio-v1", np.array([9.0, 0.0, 0.0]))}))
        with pytest.raises(UsageError, match=f"video {extra.id}: has no visual vectors"):
            build_mix(catalog, seeds=[extra.id], modality="visual")
        # In the audio space it is a video like the others, and the visual-only mix never plays it.
        assert extra.id in [step.video.id for step in build_mix(catalog, seeds=[1], n=5).items]
        assert extra.id not in [step.video.id for step in build_mix(catalog, seeds=[1], modality="visual").items]


def test_seeds_are_found_by_id_source_or_content(catalog: Catalog, line: Path, tmp_path: Path) -> None:
    listed = catalog.get(4)
    assert find_video(catalog, "4") == listed and find_video(catalog, " 4 ") == listed
    assert find_video(catalog, listed.source) == listed
    copy = tmp_path / "renamed.mp4"  # another name, the same content: found by its hash, as mvr query finds it
    shutil.copy(listed.media_path, copy)
    with pytest.raises(MediaError, match="renamed.mp4"):  # the bytes are no media: the probe names the file
        find_video(catalog, str(copy))
    for name, words in [("99", "99: no video with this id"), ("9" * 30, "no video with this id"),
                        ("nowhere.mp4", "nowhere.mp4: neither an id"), ("", "empty name")]:
        with pytest.raises(UnknownVideoError, match=words):
            find_video(catalog, name)


# command line ---------------------------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_mvr_mix_writes_an_m3u_playlist_of_the_media(line: Path, tmp_path: Path, capsys) -> None:
    playlist = tmp_path / "mix.m3u"
    code, out, err = run_cli(capsys, "mix", "6", "--avoid", "9", "-n", "4", "--catalog", line,
                             "--metric", "euclidean", "--m3u", playlist)
    assert code == 0, err
    lines = playlist.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#EXTM3U" and len(lines) == 1 + 2 * 4
    with Catalog.open(line, create=False) as catalog:
        expected = build_mix(catalog, seeds=[6], avoid=[9], n=4, metric="euclidean").items
    for step, (info, path) in zip(expected, zip(lines[1::2], lines[2::2]), strict=True):
        assert info == f"#EXTINF:{round(step.video.duration)},{step.video.title}"
        assert Path(path).is_absolute() and Path(path).is_file() and Path(path) == step.video.media_path.resolve()
    assert f"wrote {playlist} (4 videos)" in err
    assert "audio mix from #6 line 5, away from #9 line 8" in out and "line 5" in out.splitlines()[2]


def test_mvr_mix_and_path_print_json_with_seeds_named_by_source(line: Path, capsys) -> None:
    with Catalog.open(line, create=False) as catalog:
        source = catalog.get(6).source
    code, out, _ = run_cli(capsys, "mix", source, "--catalog", line, "--json", "-n", "3", "--metric", "euclidean")
    assert code == 0
    found = json.loads(out)
    assert found["seeds"][0]["id"] == 6 and [item["video"]["id"] for item in found["items"]] == [6, 7, 5]
    code, out, _ = run_cli(capsys, "path", "1", "12", "-n", "6", "--catalog", line, "--json",
                           "--metric", "euclidean")
    assert code == 0
    assert [item["video"]["id"] - 1 for item in json.loads(out)["items"]] == [0, 2, 4, 6, 8, 11]
    code, out, _ = run_cli(capsys, "path", "1", "12", "-n", "3", "--catalog", line)
    assert code == 0 and out.startswith("audio path from #1 line 0 to #12 line 11 (braycurtis distance")
    assert "to end" in out.splitlines()[1]


@pytest.mark.parametrize(("args", "words"), [
    (["mix", "77"], "77: no video with this id"),
    (["mix", "missing.mp4"], "missing.mp4: neither an id"),
    (["mix", "2", "--avoid", "2"], "video 2: both a seed and avoided"),
    (["mix", "2", "--fusion-weights", "audio=1"], "add --modality fused"),
    (["path", "3", "3"], "two different videos"),
    (["path", "3", "4", "--modality", "fused", "--fusion-weights", "sound=1"], "sound"),
])
def test_bad_cli_input_is_one_line_naming_the_item(line: Path, capsys, args: list[str], words: str) -> None:
    code, out, err = run_cli(capsys, *args, "--catalog", line)
    assert code == 1 and out == ""
    assert err.startswith("mvr: error: ") and err.count("\n") == 1 and words in err, err


def test_cli_option_errors_exit_2(line: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["path", "1", "2", "-n", "1", "--catalog", str(line)])
    assert stopped.value.code == 2 and "must be at least 2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        main(["mix", "1", "--json", "--m3u", "x.m3u", "--catalog", str(line)])
    assert stopped.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


# REST API ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(line: Path) -> Iterator[TestClient]:
    with local_client(ServiceSettings(catalog=line)) as test_client:
        yield test_client


def test_post_mix_answers_the_queue_at_once_with_each_videos_addresses(client: TestClient, line: Path) -> None:
    response = client.post("/api/mix", json={"seeds": [6], "avoid": [9], "n": 4, "metric": "euclidean"})
    assert response.status_code == 200, response.text
    found = response.json()
    with Catalog.open(line, create=False) as catalog:
        expected = build_mix(catalog, seeds=[6], avoid=[9], n=4, metric="euclidean")
    assert [item["video"]["id"] for item in found["items"]] == [step.video.id for step in expected.items]
    assert [item["score"] for item in found["items"]] == [step.score for step in expected.items]
    assert found["seeds"][0]["id"] == 6 and found["avoid"][0]["id"] == 9 and found["notes"] == []
    first = found["items"][0]
    assert first["video"]["id"] == 6 and first["distance"] is None
    assert first["video"]["media_url"] == "/api/videos/6/media"
    assert client.get(first["video"]["media_url"]).status_code == 200


def test_post_path_answers_a_to_b(client: TestClient) -> None:
    response = client.post("/api/path", json={"start": 1, "end": 12, "n": 6, "metric": "euclidean"})
    assert response.status_code == 200, response.text
    found = response.json()
    assert [item["video"]["id"] - 1 for item in found["items"]] == [0, 2, 4, 6, 8, 11]
    assert [item["distance_to_end"] for item in found["items"]] == [11.0, 9.0, 7.0, 5.0, 3.0, 0.0]
    assert found["start"]["id"] == 1 and found["end"]["thumbnail_url"] == "/api/videos/12/thumbnail"
    fused = client.post("/api/path", json={"start": 1, "end": 12, "modality": "fused", "weights": "audio=1,visual=1"})
    assert fused.status_code == 200 and fused.json()["fusion"]["weights_from"] == "explicit"


@pytest.mark.parametrize(("route", "body", "status", "words"), [
    ("/api/mix", {"seeds": [99]}, 404, "video 99: not in the catalog"),
    ("/api/path", {"start": 1, "end": 99}, 404, "video 99"),
    ("/api/mix", {"seeds": []}, 422, "seeds"),
    ("/api/mix", {"seeds": [True]}, 422, "seeds.0"),
    ("/api/mix", {"seeds": ["1"]}, 422, "seeds.0"),
    ("/api/mix", {"seeds": [1.0]}, 422, "seeds.0"),
    ("/api/mix", {"seeds": [0]}, 422, "seeds.0"),
    ("/api/mix", {"seeds": [2**63]}, 422, "seeds.0"),
    ("/api/mix", {"seeds": [1], "n": 0}, 422, "n"),
    ("/api/mix", {"seeds": [1], "n": "5"}, 422, "n"),
    ("/api/mix", {"seeds": [1], "colour": "red"}, 422, "colour"),
    ("/api/mix", {"seeds": [2], "avoid": [2]}, 422, "video 2: both a seed and avoided"),
    ("/api/mix", {"seeds": [2], "weights": "audio=1"}, 422, "weights"),
    ("/api/path", {"start": 3, "end": 3}, 422, "two different videos"),
    ("/api/path", {"start": 3}, 422, "end"),
    ("/api/path", {"start": 3, "end": 4, "n": 1}, 422, "n"),
    ("/api/path", {"start": 3, "end": 4, "modality": "smell"}, 422, "modality"),
])
def test_api_errors_are_one_line(client: TestClient, route: str, body: dict, status: int, words: str) -> None:
    assert_one_line_error(client.post(route, json=body), status, words)


def test_api_reads_json_only(client: TestClient) -> None:
    assert_one_line_error(client.post("/api/mix", content=b"seeds=1",
                                      headers={"content-type": "application/x-www-form-urlencoded"}), 415, "mix")
    assert_one_line_error(client.post("/api/path", content=b"{", headers={"content-type": "application/json"}),
                          422)
    schema = client.get("/openapi.json").json()["paths"]
    assert "seeds" in json.dumps(schema["/api/mix"]["post"]["requestBody"])


# a real catalog ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_catalog(tmp_path_factory: pytest.TempPathFactory, music_videos) -> Path:
    return web_catalog(tmp_path_factory, music_videos)


@pytest.mark.slow
@pytest.mark.parametrize("modality", ["audio", "musicnn", "visual", "fused"])
def test_a_mix_of_real_videos_plays_all_of_them_without_repeats(real_catalog: Path, modality: str) -> None:
    with Catalog.open(real_catalog, create=False) as catalog:
        videos = catalog.videos()
        seed = next(video for video in videos if video.label == "industrial")
        found = build_mix(catalog, seeds=[seed.id], n=len(videos), modality=modality, searchers=SearcherCache())
    ids = [step.video.id for step in found.items]
    assert ids[0] == seed.id and len(set(ids)) == len(ids)
    assert_no_same_group_in_a_row(found.items)
    # It plays every video, unless the only ones left are the last one's other excerpts: then it says so.
    left = [video for video in videos if video.id not in ids]
    assert all(video.group == found.items[-1].video.group for video in left)
    assert len(found.notes) == (1 if left else 0) and len(left) <= 1
    assert all(step.distance is not None and step.score is not None for step in found.items[1:])


@pytest.mark.slow
def test_a_fused_mix_of_real_videos_keeps_to_the_seeds_style_first(real_catalog: Path) -> None:
    with Catalog.open(real_catalog, create=False) as catalog:
        videos = catalog.videos()
        seed = next(video for video in videos if video.label == "industrial")
        other = next(video for video in videos if video.label != "industrial")
        found = build_mix(catalog, seeds=[seed.id], n=3, modality="fused")
        assert [step.video.label for step in found.items] == ["industrial"] * 3
        # Avoiding the style's other track leaves only the other style to go to.
        mates = [video.id for video in videos if video.label == "industrial" and video.group != seed.group]
        away = build_mix(catalog, seeds=[seed.id], avoid=mates, n=3, modality="fused")
        assert [step.video.label for step in away.items[1:]] == [other.label] * 2


@pytest.mark.slow
def test_a_real_path_crosses_from_one_style_to_the_other(real_catalog: Path) -> None:
    with Catalog.open(real_catalog, create=False) as catalog:
        videos = catalog.videos()
        start = next(video for video in videos if video.label == "orchestral")
        end = next(video for video in videos if video.label == "industrial")
        found = build_path(catalog, start=start.id, end=end.id, n=4, modality="fused")
    ids = [step.video.id for step in found.items]
    assert ids[0] == start.id and ids[-1] == end.id and len(set(ids)) == len(ids)
    to_end = [step.to_end for step in found.items]
    assert all(later <= earlier for earlier, later in zip(to_end, to_end[1:])), to_end


@pytest.mark.slow
def test_real_seeds_named_by_file_are_found_by_content_and_nothing_is_extracted(
        real_catalog: Path, music_videos, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args, **_kwargs):
        raise AssertionError("a mix must not extract features")

    monkeypatch.setattr(query_module, "extract_features", refuse)
    monkeypatch.setattr(query_module, "build_extractors", refuse)
    with Catalog.open(real_catalog, create=False) as catalog:
        seed = catalog.videos()[0]
    copy = tmp_path / "copy of the seed.mp4"  # a name the catalog does not know: found by its content
    shutil.copy(seed.media_path, copy)
    playlist = tmp_path / "real.m3u"
    code, _, err = run_cli(capsys, "mix", copy, "-n", "4", "--catalog", real_catalog, "--modality", "musicnn",
                           "--m3u", playlist)
    assert code == 0, err
    lines = playlist.read_text(encoding="utf-8").splitlines()
    assert lines[1] == f"#EXTINF:10,{seed.title}" and Path(lines[2]) == seed.media_path.resolve()
    assert all(Path(path).is_file() for path in lines[2::2]) and len(lines) == 9


@pytest.mark.slow
def test_the_api_answers_mix_and_path_on_a_real_catalog(real_catalog: Path) -> None:
    with local_client(ServiceSettings(catalog=real_catalog)) as real:
        videos = real.get("/api/videos").json()["items"]
        mixed = real.post("/api/mix", json={"seeds": [videos[0]["id"]], "n": 4, "modality": "visual"})
        assert mixed.status_code == 200, mixed.text
        assert [item["video"]["id"] for item in mixed.json()["items"]][0] == videos[0]["id"]
        path = real.post("/api/path", json={"start": videos[0]["id"], "end": videos[-1]["id"], "n": 3,
                                            "modality": "fused"})
        assert path.status_code == 200, path.text
        items = path.json()["items"]
        assert items[0]["video"]["id"] == videos[0]["id"] and items[-1]["video"]["id"] == videos[-1]["id"]
