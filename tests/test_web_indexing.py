"""Adding videos through the REST API (`mvr serve --allow-indexing`): real uploads and real downloads of the fixture
videos into a copy of the real web catalog, through FastAPI's TestClient.

Each test indexes into its own copy of the catalog of :func:`test_web.web_catalog` (six of the eight fixture
videos), so that the held-out two are new to it. URLs are served by a local HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_web import assert_one_line_error, held_out, local_client, media_server, wait_for, web_catalog

from mvr.store import Catalog
from mvr.web import ServiceSettings

pytestmark = pytest.mark.slow


def wait_for_index(client: TestClient, job_id: str) -> dict:
    """Poll an index job until it is done or failed."""
    return wait_for(client, job_id, timeout_s=180.0, route="/api/index-jobs")


def wait_until_running(client: TestClient, job_id: str) -> None:
    """Wait until the writer thread has started the index job."""
    deadline = time.monotonic() + 10
    while client.get(f"/api/index-jobs/{job_id}").json()["status"] != "running":
        assert time.monotonic() < deadline, f"index job {job_id} never started"
        time.sleep(0.05)


def catalog_state(folder: Path) -> tuple:
    """What adding a video would change: the rows of every table, and the media files."""
    with sqlite3.connect(folder / "catalog.sqlite") as db:
        rows = tuple(tuple(db.execute(f"SELECT * FROM {table} ORDER BY 1")) for table in
                     ("videos", "vectors", "sources", "settings"))
    return rows, sorted(path.relative_to(folder) for path in (folder / "media").rglob("*"))


def upload(client: TestClient, path: Path, name: str | None = None, **fields: str):
    """POST a file to ``/api/videos`` as the page does."""
    with open(path, "rb") as handle:
        return client.post("/api/videos", files={"file": (name or path.name, handle, "video/mp4")}, data=fields)


# fixtures --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_catalog(tmp_path_factory: pytest.TempPathFactory, music_videos) -> Path:
    return web_catalog(tmp_path_factory, music_videos)


@pytest.fixture
def catalog_dir(shared_catalog: Path, tmp_path: Path) -> Path:
    """A copy of the web catalog that the test may add videos to."""
    copy = tmp_path / "catalog"
    shutil.copytree(shared_catalog, copy, ignore=shutil.ignore_patterns("tmp", ".ready"))
    return copy


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, music_videos):
    """The held-out videos over HTTP, and the event that releases the server's ``/slow/`` paths."""
    folder = tmp_path_factory.mktemp("served-indexing")
    for path in held_out(music_videos):
        shutil.copy(path, folder / path.name)
    with media_server(folder) as found:
        yield found


@pytest.fixture
def indexing(catalog_dir: Path) -> Iterator[TestClient]:
    """A server started with ``--allow-indexing`` and ``--allow-private-urls`` (the URLs are on 127.0.0.1)."""
    with local_client(ServiceSettings(catalog=catalog_dir, allow_indexing=True,
                                      allow_private_urls=True)) as client:
        yield client


# tests -----------------------------------------------------------------------------------------------------------


def test_without_the_flag_the_server_adds_nothing(catalog_dir: Path, music_videos) -> None:
    before = catalog_state(catalog_dir)
    with local_client(ServiceSettings(catalog=catalog_dir, allow_private_urls=True)) as client:
        assert client.get("/api/info").json()["allow_indexing"] is False
        for response in (upload(client, held_out(music_videos)[0]),
                         client.post("/api/videos", json={"url": "http://127.0.0.1:9/a.mp4"})):
            assert_one_line_error(response, 403, "indexing", "does not add videos", "--allow-indexing")
        schema = client.get("/openapi.json").json()["paths"]
        body = schema["/api/videos"]["post"]["requestBody"]["content"]
        assert set(body) == {"application/json", "multipart/form-data"}
        assert body["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
        assert "/api/index-jobs/{job_id}" in schema
    assert catalog_state(catalog_dir) == before
    assert not list((catalog_dir / "tmp").glob("upload-*"))  # the refused upload was never stored


def test_an_uploaded_video_is_indexed_and_then_found(indexing: TestClient, catalog_dir: Path, music_videos) -> None:
    client = indexing
    new = held_out(music_videos)[0]
    assert client.get("/api/info").json()["allow_indexing"] is True
    # Before: a query of its content finds it nowhere, and the searchers of the six videos are built and cached.
    with open(new, "rb") as handle:
        before = wait_for(client, client.post("/api/queries", files={"file": ("clip.mp4", handle)},
                                               data={"modality": "audio"}).json()["id"])
    assert before["status"] == "done" and before["result"]["query"]["id"] is None
    assert len(wait_for(client, client.post("/api/queries", json={"video_id": 1, "k": 50}).json()["id"])
               ["result"]["results"]) == 5

    accepted = upload(client, new, "My new clip.mp4", label="  industrial ", title="A  new clip")
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    assert job["status"] == "queued" and job["poll"] == f"/api/index-jobs/{job['id']}"
    status = wait_for_index(client, job["id"])
    assert status["status"] == "done", status["error"]
    assert status["progress"] == 1.0 and status["existing"] is False and status["error"] is None
    assert (status["source"], status["label"], status["title"]) == ("My new clip.mp4", "industrial", "A new clip")
    video = status["video"]
    assert video["id"] == 7 and video["title"] == "A new clip" and video["label"] == "industrial"
    assert video["source"] == "My new clip.mp4"  # the client's name, not the server's temporary path
    assert set(video["modalities"]) == set(client.get("/api/videos/1").json()["modalities"])
    assert client.get("/api/videos").json()["total"] == 7
    assert client.get(video["thumbnail_url"]).content[:2] == b"\xff\xd8"
    assert client.get(video["media_url"]).content == new.read_bytes()
    assert not list((catalog_dir / "tmp").glob("upload-*"))  # the upload is gone once it is indexed

    # After: the cached searchers see the new generation, and the same content is now the catalog's video.
    found = wait_for(client, client.post("/api/queries", json={"video_id": 1, "k": 50}).json()["id"])
    assert 7 in [match["id"] for match in found["result"]["results"]]
    with open(new, "rb") as handle:
        after = wait_for(client, client.post("/api/queries", files={"file": ("clip.mp4", handle)},
                                              data={"modality": "audio"}).json()["id"])
    assert after["result"]["query"]["id"] == 7 and 7 not in [m["id"] for m in after["result"]["results"]]


def test_content_already_in_the_catalog_is_reported_not_added(indexing: TestClient, catalog_dir: Path,
                                                              music_videos) -> None:
    known = next(video for video in indexing.get("/api/videos").json()["items"]
                 if video["source"] == str(music_videos.paths[0]))
    before = catalog_state(catalog_dir)[0][:2]  # videos and vectors
    status = wait_for_index(indexing, upload(indexing, music_videos.paths[0], "again.mp4", label="other").json()["id"])
    assert status["status"] == "done" and status["existing"] is True and status["stage"] == "already in the catalog"
    assert status["video"]["id"] == known["id"] and status["video"]["label"] == known["label"]
    assert catalog_state(catalog_dir)[0][:2] == before
    assert indexing.get("/api/videos").json()["total"] == 6


def test_a_url_is_indexed_once(indexing: TestClient, served, music_videos) -> None:
    base, _ = served
    new = held_out(music_videos)[1]
    url = f"{base}/{new.name}"
    status = wait_for_index(indexing, indexing.post("/api/videos", json={"url": url}).json()["id"])
    assert status["status"] == "done", status["error"]
    assert status["video"]["source"] == url and status["video"]["title"] == new.stem and not status["existing"]
    again = wait_for_index(indexing, indexing.post("/api/videos", json={"url": url, "label": "x"}).json()["id"])
    assert again["existing"] and again["video"]["id"] == status["video"]["id"]
    # The same content under another name: the same video, found by its hash after the upload.
    by_file = wait_for_index(indexing, upload(indexing, new, "copy.mp4").json()["id"])
    assert by_file["existing"] and by_file["video"]["id"] == status["video"]["id"]
    assert indexing.get("/api/videos").json()["total"] == 7
    failed = wait_for_index(indexing, indexing.post("/api/videos", json={"url": f"{base}/nothing.mp4"}).json()["id"])
    assert failed["status"] == "failed" and failed["video"] is None
    assert failed["error"].startswith(f"{base}/nothing.mp4: download failed") and "404" in failed["error"]


def test_bad_input_is_refused_and_leaves_the_catalog_unchanged(indexing: TestClient, catalog_dir: Path,
                                                               bad_media, music_videos) -> None:
    before = catalog_state(catalog_dir)
    response = upload(indexing, bad_media["not_media"], "notes.mp4")
    assert_one_line_error(response, 415, "notes.mp4: not a media file")
    assert "upload-" not in response.json()["detail"]
    assert_one_line_error(upload(indexing, bad_media["empty"], "../../empty.mp4"), 415, "empty.mp4: empty file")
    assert_one_line_error(indexing.post("/api/videos", data={"label": "x"}, files={"other": ("a", b"x")}), 400,
                          "no file")
    assert_one_line_error(upload(indexing, held_out(music_videos)[0], label="x" * 101), 422, "label")
    assert_one_line_error(upload(indexing, held_out(music_videos)[0], genre="pop"), 422, "genre")
    assert_one_line_error(indexing.post("/api/videos", json={"label": "pop"}), 422, "url")
    assert_one_line_error(indexing.post("/api/videos", json={"url": "https://example.com/a.mp4", "k": 5}), 422, "k")
    assert_one_line_error(indexing.post("/api/videos", content=b"url=x",
                                        headers={"content-type": "application/x-www-form-urlencoded"}),
                          415, "video: send JSON or a multipart/form-data upload")
    assert_one_line_error(indexing.get("/api/index-jobs/nope"), 404, "index job nope", "unknown")
    assert catalog_state(catalog_dir) == before
    assert not list((catalog_dir / "tmp").glob("upload-*"))


@pytest.mark.parametrize("url,status,words", [
    ("http://127.0.0.1:9/a.mp4", 403, ("127.0.0.1", "loopback", "--allow-private-urls")),
    ("http://10.1.2.3/a.mp4", 403, ("private",)),
    ("http://169.254.169.254/latest/meta-data", 403, ("link-local",)),
    ("ftp://example.com/a.mp4", 400, ("only http and https",)),
    ("http://host.invalid/a.mp4", 400, ("host.invalid", "not found")),
])
def test_a_url_outside_the_policy_is_refused_as_a_query_would_be(catalog_dir: Path, url: str, status: int,
                                                                  words: tuple[str, ...]) -> None:
    before = catalog_state(catalog_dir)
    with local_client(ServiceSettings(catalog=catalog_dir, allow_indexing=True)) as strict:
        refused = strict.post("/api/videos", json={"url": url})
        assert_one_line_error(refused, status, *words)
        assert refused.json() == strict.post("/api/queries", json={"url": url}).json()
    assert catalog_state(catalog_dir) == before


def test_another_site_cannot_add_videos_through_the_browser(indexing: TestClient, music_videos) -> None:
    with open(held_out(music_videos)[0], "rb") as handle:
        response = indexing.post("/api/videos", files={"file": ("a.mp4", handle)},
                                 headers={"Origin": "https://evil.example"})
    assert_one_line_error(response, 403, "origin https://evil.example", "own page")
    assert_one_line_error(indexing.post("/api/videos", json={"url": "https://example.com/a.mp4"},
                                        headers={"Host": "evil.example"}), 403, "host evil.example")


def test_the_catalog_keeps_one_writer(indexing: TestClient, catalog_dir: Path, music_videos) -> None:
    new = held_out(music_videos)[0]
    before = catalog_state(catalog_dir)
    with Catalog.open(catalog_dir, create=False) as other, other.writing():  # as an `mvr index` beside the server
        refused = wait_for_index(indexing, upload(indexing, new).json()["id"])
    assert refused["status"] == "failed" and refused["video"] is None
    assert refused["error"].startswith("catalog: another mvr is adding videos to this catalog"), refused["error"]
    assert str(catalog_dir) not in refused["error"]  # the client knows the catalog by its name only
    assert catalog_state(catalog_dir) == before
    assert wait_for_index(indexing, upload(indexing, new).json()["id"])["status"] == "done"  # once it is done


def test_one_writer_the_queue_limit_and_queries_meanwhile(catalog_dir: Path, served) -> None:
    base, release = served
    settings = ServiceSettings(catalog=catalog_dir, allow_indexing=True, allow_private_urls=True, workers=1,
                               queue_limit=2)
    with local_client(settings) as busy:
        try:
            first = busy.post("/api/videos", json={"url": f"{base}/slow/a.mp4"}).json()["id"]
            wait_until_running(busy, first)
            # One writer: the second video waits for the first, while a query runs and ends beside them.
            second = busy.post("/api/videos", json={"url": f"{base}/slow/b.mp4"}).json()["id"]
            query = wait_for(busy, busy.post("/api/queries", json={"video_id": 1}).json()["id"])
            assert query["status"] == "done" and len(query["result"]["results"]) == 5
            assert busy.get(f"/api/index-jobs/{first}").json()["status"] == "running"
            assert busy.get(f"/api/index-jobs/{second}").json()["status"] == "queued"
            # Index jobs and queries share one queue: workers + queue_limit = 3 pending at most.
            third = busy.post("/api/videos", json={"url": f"{base}/slow/c.mp4"}).json()["id"]
            assert_one_line_error(busy.post("/api/queries", json={"video_id": 2}), 503, "server busy", "3 queries")
            assert_one_line_error(busy.post("/api/videos", json={"url": f"{base}/d.mp4"}), 503, "server busy")
            assert_one_line_error(upload(busy, Path(__file__)), 503, "server busy")
            assert busy.get(f"/api/queries/{second}").status_code == 404  # an index job is not a query
        finally:
            release.set()
        for job in (first, second, third):
            status = wait_for_index(busy, job)
            assert status["status"] == "failed" and "download failed" in status["error"]
    release.clear()
