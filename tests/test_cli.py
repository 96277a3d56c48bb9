"""End to end: `mvr index` then `mvr query` on real music videos, through the real command line."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mvr import progress
from mvr.cli import main

pytestmark = pytest.mark.slow


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def catalog(music_videos, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture collection indexed once through `mvr index MANIFEST`."""
    folder = tmp_path_factory.mktemp("catalog") / "cat"
    assert main(["index", str(music_videos.manifest), "--catalog", str(folder), "--quiet"]) == 0
    return folder


def test_index_stores_every_video_in_every_space(catalog: Path, music_videos, capsys) -> None:
    code, out, _ = run_cli(capsys, "list", "--catalog", catalog, "--json")
    assert code == 0
    listed = json.loads(out)
    assert len(listed) == len(music_videos.paths)
    assert {item["label"] for item in listed} == set(music_videos.labels.values())
    assert all(item["modalities"] == ["audio", "musicnn", "visual"] for item in listed)
    assert all(item["group"] for item in listed)
    media = list((catalog / "media").rglob("*.mp4"))
    assert len(media) == len(music_videos.paths)  # the catalog holds its own copy of the media


def test_reindexing_skips_what_is_there(catalog: Path, music_videos, capsys) -> None:
    code, out, err = run_cli(capsys, "index", music_videos.folder / "items", "--catalog", catalog)
    assert code == 0
    assert f"0 indexed, {len(music_videos.paths)} skipped, 0 failed" in out
    assert err.count("already indexed") == len(music_videos.paths)


def test_quiet_index_gives_count_lines_instead_of_item_lines(catalog: Path, music_videos, capsys,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)  # a count line at every item, not every 10 s
    code, out, err = run_cli(capsys, "index", music_videos.folder / "items", "--catalog", catalog, "--quiet")
    total = len(music_videos.paths)
    assert code == 0 and f"0 indexed, {total} skipped, 0 failed" in out
    assert [line.split(",")[0] for line in err.splitlines()] == [f"indexing: {n}/{total} done"
                                                                 for n in range(1, total + 1)]


def test_reindex_says_each_index_as_it_is_built(catalog: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, "reindex", "--catalog", catalog)
    assert code == 0
    # A catalog this small is scanned exactly: each space's default metric and the fused search's (cosine in
    # audio and visual), none kept on disk.
    assert [line.split(" vectors")[0] for line in out.splitlines()] == [
        "audio braycurtis: exact, 8", "audio cosine: exact, 8", "musicnn cosine: exact, 8", "visual cosine: exact, 8"]


@pytest.mark.parametrize("modality", ["audio", "visual", "fused"])
def test_query_returns_five_ranked_same_style_videos(catalog: Path, music_videos, capsys, modality: str) -> None:
    # Film footage is coherent in pictures, where each abstract wallpaper is unlike the next: query a film item.
    query = next(path for path, style in music_videos.visual_styles.items() if style == "film")
    code, out, _ = run_cli(capsys, "query", query, "--catalog", catalog, "--modality", modality, "--json")
    assert code == 0
    found = json.loads(out)
    assert found["modality"] == modality and found["metric"]
    results = found["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    distances = [r["distance"] for r in results]
    assert distances == sorted(distances)
    assert found["query"]["id"] not in [r["id"] for r in results]  # never its own result
    assert set(results[0]) == {"rank", "id", "title", "label", "source", "distance"}
    # Three same-style videos exist besides the query: they come first (coupled collection).
    label = music_videos.labels[query]
    assert [r["label"] for r in results[:3]] == [label] * 3


def test_query_table_and_every_metric(catalog: Path, music_videos, capsys) -> None:
    query = music_videos.paths[-1]
    code, out, _ = run_cli(capsys, "query", query, "--catalog", catalog, "--modality", "visual",
                           "--metric", "cosine", "-k", "3")
    assert code == 0
    lines = out.strip().splitlines()
    assert "cosine" in lines[0] and lines[1].split()[:2] == ["rank", "title"] and len(lines) == 5
    code, _, err = run_cli(capsys, "query", query, "--catalog", catalog, "--modality", "audio",
                           "--metric", "hamming")
    assert code == 1 and "hamming" in err and "same distance" in err
    assert len(err.strip().splitlines()) == 1


def test_query_names_and_writes_each_results_matching_keyframes(catalog: Path, music_videos, tmp_path: Path,
                                                                capsys) -> None:
    query, folder = music_videos.paths[0], tmp_path / "frames"
    code, out, err = run_cli(capsys, "query", query, "--catalog", catalog, "--modality", "visual", "-k", "3",
                             "--json", "--keyframes", folder)
    assert code == 0, err
    results = json.loads(out)["results"]
    for row in results:
        pair = row["keyframes"]
        assert 0 <= pair["query_keyframe"] < pair["query_keyframes"] and -1.0 <= pair["similarity"] <= 1.0
        for side in ("query", "result"):
            picture = Path(pair[f"{side}_image"])
            assert picture == folder / f"rank-{row['rank']}-{side}.jpg" and picture.read_bytes()[:2] == b"\xff\xd8"
    # A fused search's table names each result's pair in its why column; one that does not read the pictures
    # refuses --keyframes in one line.
    code, out, _ = run_cli(capsys, "query", query, "--catalog", catalog, "--modality", "fused", "-k", "3",
                           "--keyframes", folder)
    assert code == 0 and all("frames " in line and "cosine" in line for line in out.strip().splitlines()[2:])
    code, _, err = run_cli(capsys, "query", query, "--catalog", catalog, "--modality", "audio", "--keyframes",
                           folder)
    assert code == 1 and "does not read the pictures" in err and len(err.strip().splitlines()) == 1


def test_query_with_a_new_file_extracts_its_features(catalog: Path, music_videos, tmp_path: Path, capsys) -> None:
    # A re-encoded copy has other bytes, so it is not recognised: its features are extracted anew.
    copy = tmp_path / "copy.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(music_videos.paths[1]), "-c:v", "libx264", "-crf", "30",
                    "-c:a", "aac", str(copy)], check=True)
    code, out, _ = run_cli(capsys, "query", copy, "--catalog", catalog, "--modality", "audio", "--json")
    assert code == 0
    found = json.loads(out)
    assert found["query"]["id"] is None
    top = found["results"][0]
    assert Path(top["source"]).name == music_videos.paths[1].name  # the original is the nearest


def test_features_json(music_videos, capsys) -> None:
    code, out, _ = run_cli(capsys, "features", music_videos.paths[0], "--modality", "audio", "--json")
    assert code == 0
    vector = json.loads(out)
    assert vector["modality"] == "audio" and vector["dims"] == 136 == len(vector["vector"])
    code, out, _ = run_cli(capsys, "features", music_videos.paths[0], "--modality", "visual", "--json")
    vector = json.loads(out)
    assert vector["backbone"] == "efficientnet-lite0" and vector["dims"] == 2560 == len(vector["vector"])


def test_a_batch_reports_each_bad_item_and_goes_on(bad_media, music_videos, tmp_path: Path, capsys) -> None:
    catalog = tmp_path / "cat"
    good = music_videos.paths[0]
    sources = [bad_media[name] for name in ("missing", "not_media", "empty")] + [good]
    code, out, err = run_cli(capsys, "index", *sources, "--catalog", catalog)
    assert code == 1
    failed = [line for line in err.splitlines() if line.startswith("failed")]
    assert len(failed) == 3
    assert "no such file" in failed[0] and "not a media file" in failed[1] and "empty file" in failed[2]
    assert "1 indexed, 0 skipped, 3 failed" in out
    code, out, _ = run_cli(capsys, "list", "--catalog", catalog, "--json")
    assert [item["title"] for item in json.loads(out)] == [good.stem]


def test_partial_modalities_are_kept_and_said(bad_media, tmp_path: Path, capsys) -> None:
    catalog = tmp_path / "cat"
    names = ("no_audio", "audio_only", "too_short", "cover_art_mp3")
    code, out, err = run_cli(capsys, "index", *(bad_media[n] for n in names), "--catalog", catalog)
    assert code == 0, err
    assert "4 indexed" in out
    assert "audio skipped: no audio stream" in err
    assert "visual skipped: no video stream" in err
    assert "audio skipped: audio too short: 0.5" in err
    listed = {item["title"]: item["modalities"] for item in json.loads(run_cli(capsys, "list", "--catalog",
                                                                                catalog, "--json")[1])}
    assert "musicnn skipped: audio too short for musicnn" in err
    assert listed == {"no_audio": ["visual"], "audio_only": ["audio", "musicnn"], "too_short": ["visual"],
                      "cover_art": ["audio", "musicnn"]}


@pytest.mark.parametrize("modality", ["fused", "visual"])
def test_a_search_by_pictures_of_an_audio_file_says_what_it_can_be_searched_by(
        catalog: Path, music_tracks, capsys, modality: str) -> None:
    code, out, err = run_cli(capsys, "query", music_tracks[0], "--catalog", catalog, "--modality", modality)
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"mvr: error: {music_tracks[0]}: {modality} search impossible: visual skipped: no video"
                          " stream")
    assert err.rstrip().endswith("; search what it has: --modality audio or --modality musicnn")


def test_a_held_video_without_pictures_is_searched_by_what_it_has(bad_media, music_videos, tmp_path: Path,
                                                                   capsys) -> None:
    catalog = tmp_path / "cat"
    assert run_cli(capsys, "index", music_videos.paths[0], bad_media["audio_only"], "--catalog", catalog)[0] == 0
    # Known by its content: its stored vectors are used, and the spaces it has are named.
    code, out, err = run_cli(capsys, "query", bad_media["audio_only"], "--catalog", catalog, "--modality", "fused")
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert f"{bad_media['audio_only']}: has no visual vector in the catalog" in err
    assert err.rstrip().endswith("; search what it has: --modality audio or --modality musicnn")
    code, out, _ = run_cli(capsys, "query", bad_media["audio_only"], "--catalog", catalog, "--modality", "musicnn",
                           "-k", "1", "--json")
    assert code == 0 and json.loads(out)["results"][0]["title"] == music_videos.paths[0].stem


@pytest.mark.parametrize("name,reason", [("missing", "no such file"), ("not_media", "not a media file"),
                                         ("empty", "empty file"), ("no_audio", "no audio stream")])
def test_bad_query_is_one_line_and_non_zero(catalog: Path, bad_media, capsys, name: str, reason: str) -> None:
    code, out, err = run_cli(capsys, "query", bad_media[name], "--catalog", catalog, "--modality", "audio")
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert str(bad_media[name]) in err and reason in err
    # A file that lacks the stream, not a broken one: the spaces it can be searched in are named.
    assert err.rstrip().endswith("; search what it has: --modality visual") == (name == "no_audio")


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1, and its base URL."""
    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # A downloader that closes its connection early is normal here; the server's traceback on stderr would
        # land in the CLI's captured stderr.
        pass


def test_urls_are_downloaded_indexed_and_queried(music_videos, http_root, tmp_path: Path, capsys) -> None:
    served, base = http_root
    for path in music_videos.paths[:6]:
        shutil.copy(path, served / path.name)
    catalog = tmp_path / "cat"
    urls = [f"{base}/{path.name}" for path in music_videos.paths[:6]]
    code, out, err = run_cli(capsys, "index", *urls, f"{base}/nothing-here.mp4", "--catalog", catalog)
    assert code == 1
    assert "6 indexed, 0 skipped, 1 failed" in out
    assert "nothing-here.mp4: download failed" in err and "404" in err
    assert not list((catalog / "tmp").rglob("*.*"))  # downloads are cleaned up
    code, out, _ = run_cli(capsys, "index", urls[0], "--catalog", catalog)
    assert "0 indexed, 1 skipped" in out
    # A URL the catalog knows is answered from its stored vectors; a new one is downloaded first.
    shutil.copy(music_videos.paths[7], served / "new.mp4")
    for url in (urls[0], f"{base}/new.mp4"):
        code, out, err = run_cli(capsys, "query", url, "--catalog", catalog, "--modality", "fused", "--json")
        assert code == 0
        assert len(json.loads(out)["results"]) == 5
        assert (err == f"{url}: downloading (at most 1024 MiB, 600 s)\n") == url.endswith("new.mp4")
    code, _, err = run_cli(capsys, "query", "http://127.0.0.1:9/unreachable.mp4", "--catalog", catalog)
    assert code == 1 and "unreachable.mp4: download failed" in err


def test_console_script_runs(music_videos, catalog: Path) -> None:
    script = Path(sys.executable).with_name("mvr")
    done = subprocess.run([str(script), "query", str(music_videos.paths[2]), "--catalog", str(catalog)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("audio recommendations for")
    assert len(done.stdout.strip().splitlines()) == 7


def test_exact_flag_gives_the_same_ranking_on_a_small_catalog(catalog: Path, music_videos, capsys) -> None:
    answers = []
    for extra in ([], ["--exact"]):
        code, out, _ = run_cli(capsys, "query", music_videos.paths[3], "--catalog", catalog, "--modality", "fused",
                               "--json", *extra)
        assert code == 0
        answers.append(json.loads(out)["results"])
    assert answers[0] == answers[1]
