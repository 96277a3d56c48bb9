"""The REST API of `mvr serve`, through FastAPI's TestClient, on a real catalog of real music videos.

The catalog holds six of the eight fixture videos; the other two are new to it, so querying them by URL or upload
runs the real download and feature extraction. URLs are served by a local HTTP server on 127.0.0.1, which is why
most apps here are made with ``allow_private_urls``.
"""

from __future__ import annotations

import base64
import csv
import functools
import http.server
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mvr.cli import main
from mvr.errors import MediaError
from mvr.features import build_extractors
from mvr.ingest.pipeline import index_sources
from mvr.retrieval.keyframe_match import matching_keyframes
from mvr.retrieval.targets import default_metrics
from mvr.store import Catalog, catalog_options
from mvr.web import ServiceSettings, create_app

DEFAULT_METRICS = default_metrics()


def local_client(settings: ServiceSettings) -> TestClient:
    """A client of the app as the page on this machine talks to it (the server refuses other Host names)."""
    return TestClient(create_app(settings), base_url="http://127.0.0.1")

pytestmark = pytest.mark.slow


# shared with test_browser.py ------------------------------------------------------------------------------------


def held_out(music_videos) -> list[Path]:
    """One video per label that the web catalog does not hold: the last of each label, in manifest order."""
    last = {label: path for path, label in music_videos.labels.items()}
    return list(last.values())


def web_catalog(tmp_path_factory: pytest.TempPathFactory, music_videos) -> Path:
    """Index every fixture video but :func:`held_out` ones, once per test session (and per xdist worker)."""
    folder = tmp_path_factory.getbasetemp() / "web-catalog"
    ready = folder / ".ready"
    if ready.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    keep = set(music_videos.paths) - set(held_out(music_videos))
    manifest = folder.parent / "web-catalog.csv"
    with open(music_videos.manifest, newline="", encoding="utf-8") as source, \
            open(manifest, "w", newline="", encoding="utf-8") as target:
        rows = [row for row in csv.DictReader(source) if music_videos.folder / row["source"] in keep]
        writer = csv.DictWriter(target, fieldnames=["source", "label", "group", "title"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**row, "source": str(music_videos.folder / row["source"])} for row in rows)
    with Catalog.open(folder) as catalog:
        report = index_sources(catalog, [str(manifest)], progress=False)
    assert report.count("indexed") == len(keep), report.outcomes
    ready.touch()
    return folder


@contextmanager
def uvicorn_server(app) -> Iterator[str]:  # noqa: ANN001 (any ASGI app)
    """``app`` under a real uvicorn on a free port of 127.0.0.1, in a background thread; yields its base URL."""
    import uvicorn

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()


class MediaHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder quietly; a path under ``/slow/`` hangs until the server's ``release`` event is set."""

    def send_head(self):  # noqa: ANN201 (the base class's own signature)
        if self.path.startswith("/slow/"):
            self.server.release.wait(30)
            self.send_error(404, "released")
            return None
        return super().send_head()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def media_server(folder: Path) -> Iterator[tuple[str, threading.Event]]:
    """Serve ``folder`` over HTTP on 127.0.0.1; yields the base URL and the event that releases ``/slow/``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(MediaHandler, directory=str(folder)))
    server.release = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", server.release
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


def wait_for(client: TestClient, query_id: str, timeout_s: float = 90.0, route: str = "/api/queries") -> dict:
    """Poll a query (or, with ``route="/api/index-jobs"``, an index job) until it is done or failed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get(f"{route}/{query_id}").json()
        if status["status"] in ("done", "failed"):
            return status
        time.sleep(0.1)
    raise AssertionError(f"{route}/{query_id} still {status['status']} after {timeout_s} s")


def assert_one_line_error(response, status: int, *words: str) -> None:
    """The error shape of every refusal: JSON ``{"detail": one line}`` naming the item and the reason."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and detail
    for word in words:
        assert word in detail, detail


# fixtures --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory: pytest.TempPathFactory, music_videos) -> Path:
    return web_catalog(tmp_path_factory, music_videos)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, music_videos) -> Iterator[tuple[str, threading.Event]]:
    """The held-out videos and a text file, over HTTP."""
    folder = tmp_path_factory.mktemp("served")
    for path in held_out(music_videos):
        shutil.copy(path, folder / path.name)
    (folder / "notes.mp4").write_text("not a video\n")
    with media_server(folder) as found:
        yield found


@pytest.fixture(scope="module")
def client(catalog_dir: Path) -> Iterator[TestClient]:
    with local_client(ServiceSettings(catalog=catalog_dir, allow_private_urls=True)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def strict_client(catalog_dir: Path) -> Iterator[TestClient]:
    """Started without ``allow_private_urls``, as `mvr serve` is by default."""
    with local_client(ServiceSettings(catalog=catalog_dir)) as test_client:
        yield test_client


@pytest.fixture
def spare_catalog(catalog_dir: Path, tmp_path: Path) -> Path:
    """A copy of the web catalog that a test may damage."""
    copy = tmp_path / "catalog"
    shutil.copytree(catalog_dir, copy)
    return copy


# queries ---------------------------------------------------------------------------------------------------------


def test_query_by_url_runs_in_the_background_then_comes_from_the_cache(client, served, music_videos) -> None:
    base, _ = served
    query = held_out(music_videos)[-1]
    url = f"{base}/{query.name}"
    started = time.monotonic()
    accepted = client.post("/api/queries", json={"url": url, "modality": "audio"})
    assert accepted.status_code == 202
    assert time.monotonic() - started < 2.0  # the answer does not wait for the extraction
    assert accepted.json()["status"] == "queued" and accepted.json()["poll"] == f"/api/queries/{accepted.json()['id']}"
    status = wait_for(client, accepted.json()["id"])
    assert status["status"] == "done", status["error"]
    assert status["progress"] == 1.0 and not status["cached"] and status["error"] is None
    found = status["result"]
    assert found["query"] == {"source": url, "title": query.stem, "id": None, "label": None, "group": None}
    assert found["modality"] == "audio" and found["metric"] == DEFAULT_METRICS["audio"]
    results = found["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    assert [r["distance"] for r in results] == sorted(r["distance"] for r in results)
    assert set(results[0]) == {"rank", "id", "title", "label", "source", "group", "distance", "similarity", "why"}
    # One space, a catalog too small for FAISS: ranked exactly, so each result has its similarity, the share of the
    # query's other candidates farther away (5 of the 6 videos are shown: 1, 0.8, ..., 0.2 without ties).
    assert [r["similarity"] for r in results] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])
    assert found["fusion"] is None and results[0]["why"] == {}  # one space: nothing to split between spaces
    assert results[0]["label"] == music_videos.labels[query]  # its sister excerpt of the same track

    again = wait_for(client, client.post("/api/queries", json={"url": url, "modality": "audio",
                                                               "metric": "cosine", "k": 3}).json()["id"])
    assert again["cached"] and again["elapsed_s"] < 1.0
    assert again["metric"] == "cosine" and len(again["result"]["results"]) == 3


def test_query_by_upload(client, catalog_dir: Path, music_videos) -> None:
    query = held_out(music_videos)[0]
    with open(query, "rb") as handle:
        accepted = client.post("/api/queries", files={"file": ("my clip.mp4", handle, "video/mp4")},
                               data={"modality": "fused", "k": "5"})
    assert accepted.status_code == 202, accepted.text
    status = wait_for(client, accepted.json()["id"])
    assert status["status"] == "done", status["error"]
    found = status["result"]
    assert found["query"] == {"source": "my clip.mp4", "title": "my clip", "id": None, "label": None, "group": None}
    assert found["metric"] == DEFAULT_METRICS["fused"] and len(found["results"]) == 5
    assert not list((catalog_dir / "tmp").glob("upload-*"))  # the upload is gone once the query ends
    with open(query, "rb") as handle:  # same content, another name: the features come from the cache
        again = client.post("/api/queries", files={"file": ("copy.mp4", handle)}, data={"modality": "fused"})
    again = wait_for(client, again.json()["id"])
    assert again["cached"] and again["result"]["query"] == {"source": "copy.mp4", "title": "copy", "id": None,
                                                            "label": None, "group": None}
    assert again["result"]["results"] == found["results"]


def test_query_by_catalog_video_leaves_it_out(client) -> None:
    status = wait_for(client, client.post("/api/queries", json={"video_id": 2, "modality": "visual"}).json()["id"])
    assert status["status"] == "done", status["error"]
    found = status["result"]
    assert found["query"]["id"] == 2 and found["query"]["label"]
    assert 2 not in [r["id"] for r in found["results"]] and len(found["results"]) == 5
    # Each video's group (its track) comes with it, so that the page can mark the query's other excerpts.
    groups = {video["id"]: video["group"] for video in client.get("/api/videos").json()["items"]}
    assert found["query"]["group"] == groups[2]
    assert [r["group"] for r in found["results"]] == [groups[r["id"]] for r in found["results"]]
    # The five other videos, nearest first: 1 for the first (the four others are farther), 0 for the last.
    assert [r["similarity"] for r in found["results"]] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])


def test_fused_results_are_explained_and_take_weights(client) -> None:
    status = wait_for(client, client.post("/api/queries", json={"video_id": 2, "modality": "fused",
                                                                "weights": {"audio": 3, "visual": 1}}).json()["id"])
    assert status["status"] == "done", status["error"]
    found = status["result"]
    assert found["fusion"] == {"method": "late", "weights": {"audio": 0.75, "visual": 0.25},
                               "metrics": {"audio": "cosine", "visual": "cosine"}, "projections": {},
                               "weights_from": "explicit"}
    assert found["tied_at_cut"] is False
    for match in found["results"]:
        assert sum(reason["score"] for reason in match["why"].values()) == pytest.approx(match["distance"])
        assert 0 <= match["similarity"] <= 1 and set(match["why"]) == {"audio", "visual"}
    status = wait_for(client, client.post("/api/queries", json={"video_id": 2, "modality": "fused",
                                                                "weights": "visual=1"}).json()["id"])
    assert status["result"]["fusion"]["weights"] == {"visual": 1.0}
    assert_one_line_error(client.post("/api/queries", json={"video_id": 2, "modality": "fused", "weights": "x=1"}),
                          422, "unknown feature space 'x'")
    assert_one_line_error(client.post("/api/queries", json={"video_id": 2, "weights": "audio=1"}), 422, "fused")


def test_a_failed_query_says_why(client, served) -> None:
    base, _ = served
    status = wait_for(client, client.post("/api/queries", json={"url": f"{base}/nothing.mp4"}).json()["id"])
    assert status["status"] == "failed" and status["result"] is None
    assert status["error"].startswith(f"{base}/nothing.mp4: download failed") and "404" in status["error"]
    status = wait_for(client, client.post("/api/queries", json={"url": f"{base}/notes.mp4"}).json()["id"])
    assert status["status"] == "failed" and status["error"].startswith(f"{base}/notes.mp4: ")
    status = wait_for(client, client.post("/api/queries", json={"video_id": 1, "metric": "hamming"}).json()["id"])
    assert status["status"] == "failed" and "hamming" in status["error"] and "same distance" in status["error"]


# refusals --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body,status,words", [
    ({"url": "ftp://example.com/a.mp4"}, 400, ("ftp://example.com/a.mp4", "only http and https")),
    ({"url": "file:///etc/passwd"}, 400, ("only http and https",)),
    ({"url": "http:///a.mp4"}, 400, ("no host name",)),
    ({"url": "http://127.0.0.1:9/a.mp4"}, 403, ("127.0.0.1", "loopback", "--allow-private-urls")),
    ({"url": "http://localhost/a.mp4"}, 403, ("localhost", "loopback")),
    ({"url": "http://[::1]/a.mp4"}, 403, ("loopback",)),
    ({"url": "http://10.1.2.3/a.mp4"}, 403, ("private",)),
    ({"url": "https://192.168.0.10/a.mp4"}, 403, ("private",)),
    ({"url": "http://169.254.169.254/latest/meta-data"}, 403, ("link-local",)),
    ({"url": "http://[::ffff:127.0.0.1]/a.mp4"}, 403, ("loopback",)),
    ({"url": "http://0.0.0.0/a.mp4"}, 403, ("unspecified",)),
    ({"url": "http://host.invalid/a.mp4"}, 400, ("host.invalid", "not found")),
    ({"url": "https://example.com/a.mp4", "modality": "smell"}, 422, ("modality",)),
    ({"url": "https://example.com/a.mp4", "k": 0}, 422, ("k",)),
    ({"url": "https://example.com/a.mp4", "metric": "manhattan"}, 422, ("metric",)),
    ({"url": "https://example.com/a.mp4", "video_id": 1}, 422, ("either url or video_id",)),
    ({"video_id": 999}, 404, ("video 999", "not in the catalog")),
])
def test_bad_queries_are_refused_with_one_line(strict_client: TestClient, body: dict, status: int, words) -> None:
    assert_one_line_error(strict_client.post("/api/queries", json=body), status, *words)


def test_bad_uploads_are_refused_with_one_line(client, bad_media, tmp_path: Path) -> None:
    with open(bad_media["not_media"], "rb") as handle:
        response = client.post("/api/queries", files={"file": ("notes.mp4", handle)})
    assert_one_line_error(response, 415, "notes.mp4: not a media file")
    assert "upload-" not in response.json()["detail"]  # the server's own paths stay out of the message
    with open(bad_media["empty"], "rb") as handle:
        assert_one_line_error(client.post("/api/queries", files={"file": ("../../empty.mp4", handle)}), 415,
                              "empty.mp4: empty file")
    assert_one_line_error(client.post("/api/queries", data={"modality": "audio"}, files={"other": ("a", b"x")}),
                          400, "no file")
    with open(bad_media["no_audio"], "rb") as handle:
        assert_one_line_error(client.post("/api/queries", files={"file": ("a.mp4", handle)}, data={"k": "-1"}),
                              422, "k")
    assert_one_line_error(client.post("/api/queries", content=b"url=x",
                                      headers={"content-type": "application/x-www-form-urlencoded"}),
                          415, "send JSON or a multipart/form-data upload")


def test_oversize_uploads_are_refused(catalog_dir: Path, music_videos, tmp_path: Path) -> None:
    limit = 32 * 1024
    with local_client(ServiceSettings(catalog=catalog_dir, max_upload_bytes=limit)) as small:
        # Far over the limit: refused from the Content-Length header, before anything is stored.
        with open(music_videos.paths[0], "rb") as handle:
            assert_one_line_error(small.post("/api/queries", files={"file": ("big.mp4", handle)}), 413,
                                  "upload", "over the limit")
        # Just over: the body fits the header check, and the copy stops at the limit.
        assert_one_line_error(small.post("/api/queries", files={"file": ("a.mp4", b"\0" * (limit + 1))}), 413,
                              "a.mp4: larger than the upload limit")
    assert not list((catalog_dir / "tmp").glob("upload-*"))  # nothing left behind


def test_downloads_over_the_size_limit_fail(catalog_dir: Path, served, music_videos) -> None:
    base, _ = served
    settings = ServiceSettings(catalog=catalog_dir, allow_private_urls=True, max_download_bytes=10_000)
    with local_client(settings) as small:
        url = f"{base}/{held_out(music_videos)[0].name}"
        status = wait_for(small, small.post("/api/queries", json={"url": url}).json()["id"])
    assert status["status"] == "failed" and status["error"].startswith(f"{url}: ")
    assert "download larger than the limit of 10000 bytes" in status["error"]
    assert not list((catalog_dir / "tmp").glob("download-*"))


def test_unknown_ids_are_404(client) -> None:
    assert_one_line_error(client.get("/api/queries/nope"), 404, "query nope", "unknown")
    assert_one_line_error(client.get("/api/videos/999"), 404, "video 999", "not in the catalog")
    assert_one_line_error(client.get("/api/videos/999/media"), 404, "video 999")
    assert_one_line_error(client.get("/api/videos/999/thumbnail"), 404, "video 999")
    assert_one_line_error(client.get("/api/videos/abc"), 422, "video_id")


def test_the_keyframe_pair_of_a_result_is_the_nearest_one(client, catalog_dir: Path, runtime,
                                                          tmp_path: Path) -> None:
    videos = client.get("/api/videos", params={"limit": 50}).json()["items"]
    query, result = videos[0]["id"], videos[1]["id"]
    response = client.get(f"/api/videos/{query}/keyframe-match/{result}")
    assert response.status_code == 200, response.text
    found = response.json()
    assert (found["query"], found["result"]) == (query, result)
    # Against the catalog's own visual extractor, run here on both media files: the pair is the argmax.
    with Catalog.open(catalog_dir, create=False) as catalog:
        extractor = build_extractors(catalog_options(catalog, ["visual"]), runtime)["visual"]
        paths = [catalog.get(video_id).media_path for video_id in (query, result)]
    (_, asked), (_, other) = (extractor.keyframes(path) for path in paths)
    similarity = (asked / np.linalg.norm(asked, axis=1, keepdims=True)) @ (
        other / np.linalg.norm(other, axis=1, keepdims=True)).T
    assert (found["query_keyframes"], found["result_keyframes"]) == similarity.shape
    assert similarity[found["query_keyframe"], found["result_keyframe"]] == pytest.approx(similarity.max())
    assert found["similarity"] == pytest.approx(similarity.max())
    for key in ("query_image", "result_image"):
        assert found[key].startswith("data:image/jpeg;base64,")
        assert base64.b64decode(found[key].split(",", 1)[1])[:2] == b"\xff\xd8"
    # A video against itself: its first keyframe matches itself.
    same = client.get(f"/api/videos/{query}/keyframe-match/{query}").json()
    assert same["similarity"] == pytest.approx(1.0) and same["query_keyframe"] == same["result_keyframe"]
    assert_one_line_error(client.get(f"/api/videos/{query}/keyframe-match/999"), 404, "video 999")
    # A file without pictures has no keyframe to match: the service's 422 says so.
    sound = tmp_path / "tone.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=2", str(sound)],
                   check=True)
    with pytest.raises(MediaError, match="no video stream"):
        matching_keyframes(sound, paths[0], extractor)


def test_a_full_queue_answers_503_and_the_server_keeps_answering(catalog_dir: Path, served) -> None:
    base, release = served
    settings = ServiceSettings(catalog=catalog_dir, allow_private_urls=True, workers=1, queue_limit=1)
    with local_client(settings) as busy:
        try:
            running = busy.post("/api/queries", json={"url": f"{base}/slow/a.mp4"}).json()["id"]
            deadline = time.monotonic() + 10
            while busy.get(f"/api/queries/{running}").json()["status"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            waiting = busy.post("/api/queries", json={"url": f"{base}/slow/b.mp4"})
            assert waiting.status_code == 202
            assert busy.get(f"/api/queries/{waiting.json()['id']}").json()["status"] == "queued"
            assert_one_line_error(busy.post("/api/queries", json={"video_id": 1}), 503, "server busy", "2 queries")
            assert_one_line_error(busy.post("/api/queries", files={"file": ("a.mp4", b"x")}), 503, "server busy")
            # While its worker is stuck on the download, the rest of the API answers at once.
            started = time.monotonic()
            assert busy.get("/api/videos").json()["total"] == 6
            assert busy.get("/api/videos/1/thumbnail").status_code == 200
            assert time.monotonic() - started < 1.0
        finally:
            release.set()
        assert wait_for(busy, running)["status"] == "failed"
        assert wait_for(busy, waiting.json()["id"])["status"] == "failed"
        assert busy.post("/api/queries", json={"video_id": 1}).status_code == 202  # room again
    release.clear()


# catalog routes --------------------------------------------------------------------------------------------------


def test_videos_paging_filter_and_thumbnails(client, music_videos) -> None:
    listing = client.get("/api/videos").json()
    assert listing["total"] == 6 and len(listing["items"]) == 6
    first = listing["items"][0]
    assert set(first) >= {"id", "title", "label", "source", "duration", "modalities", "thumbnail_url", "media_url"}
    page = client.get("/api/videos", params={"label": "industrial", "offset": 1, "limit": 1}).json()
    assert page["total"] == 3 and [v["label"] for v in page["items"]] == ["industrial"]
    assert client.get("/api/videos", params={"label": "none-such"}).json() == {
        "total": 0, "offset": 0, "limit": 48, "label": "none-such", "title": None, "items": []}
    assert client.get(f"/api/videos/{first['id']}").json() == first
    thumbnail = client.get(first["thumbnail_url"])
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    assert thumbnail.content[:2] == b"\xff\xd8"
    info = client.get("/api/info").json()
    assert info["videos"] == 6 and info["labels"] == sorted(set(music_videos.labels.values()))
    assert info["default_metrics"] == DEFAULT_METRICS and "canberra" in info["metrics"]


def test_videos_filter_by_title_ignoring_case(client) -> None:
    everything = client.get("/api/videos").json()["items"]
    title = everything[-1]["title"]
    part = title[1:-1].swapcase()  # inside the title, in the other case
    expected = [video["id"] for video in everything if part.casefold() in video["title"].casefold()]
    found = client.get("/api/videos", params={"title": part}).json()
    assert found["title"] == part and found["total"] == len(expected) >= 1
    assert [video["id"] for video in found["items"]] == expected
    label = everything[-1]["label"]
    both = client.get("/api/videos", params={"title": part, "label": label}).json()
    assert [video["id"] for video in both["items"]] == [video["id"] for video in everything
                                                        if video["id"] in expected and video["label"] == label]
    assert client.get("/api/videos", params={"title": "  "}).json()["total"] == len(everything)  # blank: no filter
    assert client.get("/api/videos", params={"title": "no such title"}).json()["total"] == 0
    assert_one_line_error(client.get("/api/videos", params={"title": "x" * 201}), 422, "title")


def test_media_is_streamed_with_range_requests(client, catalog_dir: Path) -> None:
    video = client.get("/api/videos/3").json()
    stored = next((catalog_dir / "media").rglob(f"{video['content_hash']}.*")).read_bytes()
    whole = client.get(video["media_url"])
    assert whole.status_code == 200 and whole.content == stored
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "video/mp4"
    part = client.get(video["media_url"], headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-1099/{len(stored)}"
    assert part.content == stored[100:1100]
    tail = client.get(video["media_url"], headers={"Range": "bytes=-500"})
    assert tail.status_code == 206 and tail.content == stored[-500:]
    assert client.get(video["media_url"], headers={"Range": f"bytes={len(stored) + 10}-"}).status_code == 416


def test_nothing_outside_the_catalog_is_served(spare_catalog: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"secret")
    with sqlite3.connect(spare_catalog / "catalog.sqlite") as db:
        db.execute("UPDATE videos SET media_path = '../secret.mp4' WHERE id = 1")
        db.execute("UPDATE videos SET media_path = ? WHERE id = 2", (str(secret),))
    with local_client(ServiceSettings(catalog=spare_catalog)) as app:
        for video_id in (1, 2):
            assert_one_line_error(app.get(f"/api/videos/{video_id}/media"), 403, f"video {video_id}",
                                  "outside the catalog")
            assert_one_line_error(app.post("/api/queries", json={"video_id": video_id}), 403, "outside")
        for path in ("/static/../catalog.sqlite", "/static/%2e%2e/%2e%2e/catalog.sqlite",
                     "/static/..%2f..%2fweb.py", "/api/videos/..%2f..%2fcatalog.sqlite/media"):
            response = app.get(path)
            assert response.status_code in (404, 422) and b"SQLite" not in response.content, path


def test_evaluation_results(spare_catalog: Path) -> None:
    with local_client(ServiceSettings(catalog=spare_catalog)) as app:
        assert_one_line_error(app.get("/api/evaluation"), 404, "evaluation", "mvr evaluate")
        (spare_catalog / "evaluation.json").write_text(
            '{"k": 5, "protocol": "loo", "results": ['
            '{"method": "mvr", "modality": "audio", "metric": "euclidean", "precision": 0.9, "map": 0.8,'
            ' "queries": 6, "degenerate": false, "labels": {"industrial": 1.0, "orchestral": 0.8}},'
            '{"method": "study", "modality": "audio", "metric": "hamming", "precision": null, "map": null,'
            ' "queries": 6, "degenerate": true, "labels": null}],'
            ' "created": "2025-01-31T12:00:00+00:00", "defaults": {"mvr": {"audio": "euclidean"}}}')
        found = app.get("/api/evaluation").json()
        assert found["k"] == 5 and found["protocol"] == "loo" and found["defaults"] == {"mvr": {"audio": "euclidean"}}
        assert [(row["method"], row["degenerate"]) for row in found["results"]] == [("mvr", False), ("study", True)]
        assert found["results"][0]["labels"] == {"industrial": 1.0, "orchestral": 0.8}
        (spare_catalog / "evaluation.json").write_text('{"k": 5}')
        response = app.get("/api/evaluation")
        assert response.status_code == 500 and "evaluation.json: not the format" in response.json()["detail"]


# the page, the docs and the command line -------------------------------------------------------------------------


def test_page_and_api_docs_need_no_internet(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    for asset in ("/static/app.js", "/static/indexing.js", "/static/app.css", "/static/favicon.svg"):
        assert client.get(asset).status_code == 200
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text
    scripts = [part.split('"')[0] for part in docs.text.split('src="')[1:]]
    assert scripts and all(src.startswith("/") and client.get(src).status_code == 200 for src in scripts)
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/api/queries"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert body["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
    assert "/api/videos/{video_id}/media" in schema["paths"] and "/api/evaluation" in schema["paths"]


def test_serve_refuses_a_folder_without_catalog(tmp_path: Path, capsys) -> None:
    assert main(["serve", "--catalog", str(tmp_path / "none")]) == 1
    assert "no catalog here" in capsys.readouterr().err
