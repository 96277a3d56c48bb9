"""The query queue's limit holds for uploads: a place is taken before a body is read, against a real uvicorn."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
from test_web import uvicorn_server

from mvr.store import Catalog
from mvr.web import ServiceSettings, create_app

BOUNDARY = "mvr-test-boundary"


def _multipart_head(filename: str) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"modality\"\r\n\r\naudio\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()


def _uploads(catalog: Path) -> list[Path]:
    return sorted((catalog / "tmp").glob("upload-*/*"))


def _wait_for(condition, what: str, timeout_s: float = 10.0) -> None:  # noqa: ANN001 (a predicate)
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_an_upload_holds_its_place_while_its_body_arrives(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    Catalog.open(catalog).close()
    settings = ServiceSettings(catalog=catalog, workers=1, queue_limit=0)
    declared = 4 << 20
    with uvicorn_server(create_app(settings)) as base:
        host, port = base.removeprefix("http://").split(":")
        slow = socket.create_connection((host, int(port)), timeout=10)
        try:
            slow.sendall((f"POST /api/queries HTTP/1.1\r\nHost: {host}:{port}\r\n"
                          f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                          f"Content-Length: {declared}\r\n\r\n").encode())
            slow.sendall(_multipart_head("slow.wav") + b"\0" * 200_000)
            # The part's bytes go straight to their one place under the catalog, as they arrive.
            _wait_for(lambda: _uploads(catalog) and _uploads(catalog)[0].stat().st_size > 0, "no upload file")
            assert [p.name for p in _uploads(catalog)] == ["slow.wav"]
            with httpx.Client(base_url=base, timeout=10) as client:
                started = time.monotonic()
                busy = client.post("/api/queries", files={"file": ("b.wav", b"\0" * 300_000)})
                assert busy.status_code == 503 and busy.json()["detail"].startswith("server busy: 1 queries")
                assert client.post("/api/queries", json={"video_id": 1}).status_code == 503
                assert time.monotonic() - started < 2.0  # refused before its body was taken in
                assert [p.name for p in _uploads(catalog)] == ["slow.wav"]
        finally:
            slow.close()
        # The slow client went away: its partial file is removed and its place given back.
        _wait_for(lambda: not list((catalog / "tmp").glob("upload-*")), "partial upload left behind")
        with httpx.Client(base_url=base, timeout=10) as client:
            _wait_for(lambda: client.post("/api/queries", json={"video_id": 1}).status_code == 404,
                      "the slow upload's place was never given back")


def test_an_upload_is_stored_once_as_sent(tmp_path: Path, music_videos) -> None:
    catalog = tmp_path / "catalog"
    Catalog.open(catalog).close()
    video = music_videos.paths[0]
    body = video.read_bytes()
    # One worker, held by nothing: the job runs at once on an empty catalog and fails there, after the upload
    # was received, hashed and probed.
    with uvicorn_server(create_app(ServiceSettings(catalog=catalog, workers=1, queue_limit=0))) as base, \
            httpx.Client(base_url=base, timeout=30) as client:
        accepted = client.post("/api/queries", files={"file": ("clip one.mp4", body)},
                               data={"k": "3", "modality": "audio"})
        assert accepted.status_code == 202, accepted.text
        _wait_for(lambda: client.get(accepted.json()["poll"]).json()["status"] == "failed", "job never ended", 60)
        status = client.get(accepted.json()["poll"]).json()
        assert status["source"] == "clip one.mp4" and status["k"] == 3
        # It failed where a query on an empty catalog fails, naming the catalog without the server's path.
        assert status["error"] == "catalog: no video in this catalog has audio vectors", status["error"]
        # A bad form is refused whole: a second file, an oversized field, no file at all.
        two = client.post("/api/queries", files=[("file", ("a.mp4", body)), ("file", ("b.mp4", body))])
        assert two.status_code == 400 and two.json()["detail"] == "upload: send one file only"
        long_field = client.post("/api/queries", files={"file": ("a.mp4", body)}, data={"modality": "x" * 5000})
        assert long_field.status_code == 413 and "form field 'modality'" in long_field.json()["detail"]
        nothing = client.post("/api/queries", files={"other": ("a.mp4", body)})
        assert nothing.status_code == 400 and "(it sends one in 'other')" in nothing.json()["detail"]
        fields_only = client.post("/api/queries", files={"modality": (None, "audio")})
        assert fields_only.status_code == 400 and "no file in the form" in fields_only.json()["detail"]
    assert not list((catalog / "tmp").glob("upload-*"))
