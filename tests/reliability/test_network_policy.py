"""The network policy holds on every hop of a download: real servers on loopback, no internet.

A "public" site is a loopback port that the test's policy treats as public (``public_overrides``); an
"internal" site is another loopback port, which the policy refuses. Each refusal test checks that the internal
site received no connection at all, and each limit test that the download stopped in time and left no file.
"""

from __future__ import annotations

import base64
import http.server
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mvr.errors import MediaError, MvrError
from mvr.ingest.download import _Budget, _GuardProxy, download, download_to_temp
from mvr.ingest.policy import (
    AddressRefused,
    BadURL,
    SourcePolicy,
    address_kind,
    check_url,
)
from mvr.store import Catalog
from mvr.web import ServiceSettings, create_app

MB = 1 << 20
Route = Callable[[http.server.BaseHTTPRequestHandler], None]


class Site:
    """An HTTP server on 127.0.0.1 in a thread, answering from ``routes`` (path -> handler function).

    Records every connection and every request path, so that a test can say a site was never contacted.
    """

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.connections = 0
        self.paths: list[str] = []
        self.sent = 0  # body bytes written by the streaming routes
        self.stopping = threading.Event()
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def setup(self) -> None:
                site.connections += 1
                super().setup()

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                site.paths.append(self.path)
                route = site.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_error(404)
                else:
                    route(self)

            do_HEAD = do_GET

            def log_message(self, *args: object) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def sites() -> Iterator[Callable[[dict[str, Route]], Site]]:
    """Make sites; all are shut down after the test."""
    made: list[Site] = []

    def make(routes: dict[str, Route]) -> Site:
        made.append(Site(routes))
        return made[-1]

    yield make
    for site in made:
        site.close()


def public_policy(*public: Site, **limits: float) -> SourcePolicy:
    """A strict policy (no private addresses) that trusts exactly the given sites' ports."""
    return SourcePolicy(public_overrides=frozenset(("127.0.0.1", s.port) for s in public), **limits)


def serve_body(body: Callable[[], bytes], content_type: str) -> Route:
    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        data = body()
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)
    return route


def serve_file(path: Path, content_type: str) -> Route:
    return serve_body(path.read_bytes, content_type)


def serve_text(text: str, content_type: str) -> Route:
    return serve_body(text.encode, content_type)


def redirect(location: str) -> Route:
    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return route


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real 2 s video (H.264 + AAC in MP4) and the same cut into HLS segments, made with ffmpeg."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    folder = tmp_path_factory.mktemp("media")
    clip = folder / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=15",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050", "-t", "2", "-c:v", "libx264",
                    "-g", "15", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(clip)], check=True, timeout=60)
    hls = folder / "hls"
    hls.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(clip), "-c", "copy", "-f", "hls", "-hls_time",
                    "1", "-hls_list_size", "0", "-hls_segment_filename", str(hls / "seg%d.ts"),
                    str(hls / "list.m3u8")], check=True, timeout=60)
    return {"clip": clip, "playlist": hls / "list.m3u8", "hls": hls}


def hls_routes(media: dict[str, Path], segment_base: str) -> dict[str, Route]:
    """The playlist (its segments named under ``segment_base``) and the segments themselves."""
    text = media["playlist"].read_text()
    lines = [segment_base + line if line.endswith(".ts") else line for line in text.splitlines()]
    routes: dict[str, Route] = {"/list.m3u8": serve_text("\n".join(lines) + "\n", "application/vnd.apple.mpegurl")}
    for segment in sorted(media["hls"].glob("*.ts")):
        routes[f"/{segment.name}"] = serve_file(segment, "video/mp2t")
    return routes


def assert_nothing_left(parent: Path) -> None:
    assert not any(parent.iterdir()), f"left behind: {sorted(p.name for p in parent.rglob('*'))}"


# allowed downloads ------------------------------------------------------------------------------------------------


def test_ordinary_download_through_the_guard(sites, media, tmp_path):
    public = sites({"/clip.mp4": serve_file(media["clip"], "video/mp4")})
    path, title, folder = download_to_temp(public.url("/clip.mp4"), tmp_path / "tmp", policy=public_policy(public))
    assert path.read_bytes() == media["clip"].read_bytes()
    assert path.parent == folder and folder.parent == tmp_path / "tmp"
    assert title
    assert "/clip.mp4" in public.paths


def test_hls_download_fetches_every_segment_through_the_guard(sites, media, tmp_path):
    public = sites({})
    public.routes.update(hls_routes(media, public.url("/")))
    path, _title = download(public.url("/list.m3u8"), tmp_path / "out", policy=public_policy(public))
    segments = sorted(p.name for p in media["hls"].glob("*.ts"))
    assert len(segments) >= 2
    assert [p for p in public.paths if p.endswith(".ts")] == [f"/{name}" for name in segments]
    assert path.stat().st_size > 0


# every hop is checked ---------------------------------------------------------------------------------------------


def test_redirect_to_an_internal_port_is_refused(sites, media, tmp_path):
    internal = sites({"/x.mp4": serve_file(media["clip"], "video/mp4")})
    public = sites({"/r": redirect(internal.url("/x.mp4"))})
    start = time.monotonic()
    with pytest.raises(AddressRefused) as caught:
        download_to_temp(public.url("/r"), tmp_path / "tmp", policy=public_policy(public, deadline_s=20))
    assert time.monotonic() - start < 10
    message = str(caught.value)
    assert "loopback" in message and "refused by policy" in message and "\n" not in message
    assert str(internal.port) not in message and str(tmp_path) not in message
    assert internal.connections == 0 and internal.paths == []
    assert public.paths == ["/r"]
    assert_nothing_left(tmp_path / "tmp")


def test_redirect_to_the_metadata_address_is_refused(sites, tmp_path):
    public = sites({"/r": redirect("http://169.254.169.254/latest/meta-data/")})
    start = time.monotonic()
    with pytest.raises(AddressRefused, match="link-local address; address refused by policy"):
        download_to_temp(public.url("/r"), tmp_path / "tmp", policy=public_policy(public, deadline_s=20))
    assert time.monotonic() - start < 10  # refused before any connection, not timed out
    assert public.paths == ["/r"]
    assert_nothing_left(tmp_path / "tmp")


def test_redirect_to_https_inside_is_refused_at_connect(sites, media, tmp_path):
    internal = sites({"/x.mp4": serve_file(media["clip"], "video/mp4")})
    public = sites({"/r": redirect(f"https://127.0.0.1:{internal.port}/x.mp4")})
    with pytest.raises(AddressRefused, match="loopback"):
        download(public.url("/r"), tmp_path / "out", policy=public_policy(public, deadline_s=20))
    assert internal.connections == 0
    assert_nothing_left(tmp_path / "out")


def test_redirect_through_public_hops_is_followed_until_one_goes_inside(sites, media, tmp_path):
    internal = sites({"/x.mp4": serve_file(media["clip"], "video/mp4")})
    second = sites({"/r2": redirect(internal.url("/x.mp4"))})
    first = sites({"/r1": redirect(second.url("/r2"))})
    with pytest.raises(AddressRefused):
        download(first.url("/r1"), tmp_path / "out", policy=public_policy(first, second, deadline_s=20))
    assert first.paths == ["/r1"] and second.paths == ["/r2"]
    assert internal.connections == 0


def test_video_element_pointing_inside_is_refused(sites, media, tmp_path):
    internal = sites({"/x.mp4": serve_file(media["clip"], "video/mp4")})
    page = (f"<!DOCTYPE html><html><head><title>A page</title></head><body>"
            f"<video controls src=\"{internal.url('/x.mp4')}\"></video></body></html>")
    public = sites({"/page.html": serve_text(page, "text/html; charset=utf-8")})
    with pytest.raises(AddressRefused, match="loopback"):
        download_to_temp(public.url("/page.html"), tmp_path / "tmp", policy=public_policy(public, deadline_s=20))
    assert "/page.html" in public.paths
    assert internal.connections == 0 and internal.paths == []
    assert_nothing_left(tmp_path / "tmp")


def test_video_element_pointing_at_a_public_file_is_downloaded(sites, media, tmp_path):
    public = sites({"/x.mp4": serve_file(media["clip"], "video/mp4")})
    page = (f"<!DOCTYPE html><html><head><title>A page</title></head><body>"
            f"<video controls src=\"{public.url('/x.mp4')}\"></video></body></html>")
    public.routes["/page.html"] = serve_text(page, "text/html; charset=utf-8")
    path, _title = download(public.url("/page.html"), tmp_path / "out", policy=public_policy(public))
    assert path.read_bytes() == media["clip"].read_bytes()


def test_hls_segments_pointing_inside_are_refused(sites, media, tmp_path):
    internal = sites({})
    internal.routes.update(hls_routes(media, internal.url("/")))
    public = sites({"/list.m3u8": hls_routes(media, internal.url("/"))["/list.m3u8"]})
    with pytest.raises(AddressRefused, match="loopback"):
        download_to_temp(public.url("/list.m3u8"), tmp_path / "tmp", policy=public_policy(public, deadline_s=20))
    assert "/list.m3u8" in public.paths
    assert internal.connections == 0 and internal.paths == []
    assert_nothing_left(tmp_path / "tmp")


# the URL itself ---------------------------------------------------------------------------------------------------

EMBEDDED_LOOPBACK = [
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::127.0.0.1",  # IPv4-compatible
    "64:ff9b::7f00:1",  # NAT64, well-known prefix
    "64:ff9b:1::7f00:1",  # NAT64, local-use prefix (/96 placement)
    "64:ff9b:1:7f00:0:100::",  # NAT64, local-use prefix (/48 placement)
    "2002:7f00:1::",  # 6to4
    "2001:0:808:808::80ff:fffe",  # Teredo: client 127.0.0.1, stored inverted
    "2001:0:7f00:1::f7f7:f7f7",  # Teredo: server 127.0.0.1
]


@pytest.mark.parametrize("literal", EMBEDDED_LOOPBACK)
def test_ipv6_literals_embedding_loopback_are_refused(literal, tmp_path):
    assert address_kind(literal).startswith("loopback")
    policy = SourcePolicy()
    with pytest.raises(AddressRefused, match="loopback"):
        check_url(f"http://[{literal}]:8080/x.mp4", policy)
    with pytest.raises(AddressRefused):
        download_to_temp(f"http://[{literal}]/x.mp4", tmp_path / "tmp", policy=policy)
    assert_nothing_left(tmp_path / "tmp")


@pytest.mark.parametrize(("literal", "kind"), [
    ("64:ff9b::a9fe:a9fe", "link-local"), ("2002:a00:1::", "private"), ("::ffff:0.0.0.0", "unspecified"),
    ("::ffff:224.0.0.1", "multicast"), ("64:ff9b::c0a8:101", "private"), ("fe80::1%lo", "link-local"),
    ("fd00::1", "private"), ("::1", "loopback"), ("::", "unspecified"), ("100.64.0.1", "private"),
    ("240.0.0.1", None), ("169.254.169.254", "link-local"), ("10.1.2.3", "private"),
])
def test_address_kinds(literal, kind):
    found = address_kind(literal)
    if kind is None:
        assert found is not None  # some non-public kind; Python versions name the reserved block differently
    else:
        assert found is not None and found.startswith(kind)


@pytest.mark.parametrize("literal", ["8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808",
                                     "2002:808:808::", "2001:0:808:808::f7f7:f7f7"])
def test_public_addresses_and_public_embeddings_are_allowed(literal):
    assert address_kind(literal) is None


@pytest.mark.parametrize("url", ["ftp://example.com/x.mp4", "file:///etc/passwd", "http:///x", "http://[::1",
                                 "http://host.invalid/x.mp4", ""])
def test_bad_urls_are_refused_with_one_line(url):
    with pytest.raises(BadURL) as caught:
        check_url(url, SourcePolicy())
    assert isinstance(caught.value, MvrError) and "\n" not in str(caught.value)


def test_names_are_judged_by_what_they_resolve_to():
    for url in ("http://localhost:9/x.mp4", "http://2130706433/x.mp4", "http://0x7f.1/x.mp4"):
        with pytest.raises(AddressRefused, match="loopback"):
            check_url(url, SourcePolicy())


def test_an_override_trusts_one_port_only():
    policy = SourcePolicy(public_overrides=frozenset({("127.0.0.1", 8000)}))
    assert check_url("http://127.0.0.1:8000/x", policy).addresses == ("127.0.0.1",)
    with pytest.raises(AddressRefused):
        check_url("http://127.0.0.1:8001/x", policy)


def test_credentials_never_appear_in_errors():
    with pytest.raises(AddressRefused) as caught:
        check_url("http://user:secret@127.0.0.1/x", SourcePolicy())
    assert "secret" not in str(caught.value)


# limits -----------------------------------------------------------------------------------------------------------


def test_response_without_length_stops_at_the_byte_limit(sites, tmp_path):
    def endless(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "video/mp4")
        handler.end_headers()  # HTTP/1.0 without Content-Length: the body ends when the connection does
        block = b"\0" * (64 * 1024)
        try:
            for _ in range(40 * MB // len(block)):
                handler.wfile.write(block)
                handler.server.site_sent[0] += len(block)
        except OSError:
            pass

    public = sites({"/big.mp4": endless})
    public.server.site_sent = [0]
    policy = public_policy(public, max_bytes=5 * MB, deadline_s=60)
    start = time.monotonic()
    with pytest.raises(MediaError, match="larger than the limit of 5242880 bytes"):
        download_to_temp(public.url("/big.mp4"), tmp_path / "tmp", policy=policy)
    elapsed = time.monotonic() - start
    assert elapsed < 20
    # What the server managed to write is the limit plus what socket buffers hold, far from the 40 MB.
    assert public.server.site_sent[0] < 20 * MB
    assert_nothing_left(tmp_path / "tmp")
    print(f"byte limit: stopped after {elapsed:.2f} s, server wrote {public.server.site_sent[0] / MB:.1f} MB")


def test_declared_length_over_the_limit_is_refused_early(sites, tmp_path):
    def declared(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "video/mp4")
        handler.send_header("Content-Length", str(40 * MB))
        handler.end_headers()
        try:
            for _ in range(40 * MB // (64 * 1024)):
                handler.wfile.write(b"\0" * (64 * 1024))
        except OSError:
            pass

    public = sites({"/big.mp4": declared})
    with pytest.raises(MediaError, match="larger than the limit"):
        download_to_temp(public.url("/big.mp4"), tmp_path / "tmp",
                         policy=public_policy(public, max_bytes=5 * MB, deadline_s=60))
    assert_nothing_left(tmp_path / "tmp")


def test_trickling_server_stops_at_the_deadline(sites, tmp_path):
    def trickle(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "video/mp4")
        handler.end_headers()
        try:
            for _ in range(60):  # bounded: 2 minutes at most, ended early when the test is over
                handler.wfile.write(b"\0")
                handler.wfile.flush()
                if site.stopping.wait(2.0):
                    return
        except OSError:
            pass

    site = sites({"/slow.mp4": trickle})
    policy = public_policy(site, deadline_s=3.0, socket_timeout_s=10.0)
    start = time.monotonic()
    with pytest.raises(MediaError, match="longer than the limit of 3 s"):
        download_to_temp(site.url("/slow.mp4"), tmp_path / "tmp", policy=policy)
    elapsed = time.monotonic() - start
    assert elapsed < 5.0
    assert_nothing_left(tmp_path / "tmp")
    print(f"deadline 3 s: stopped after {elapsed:.2f} s")


def test_unreachable_public_port_gives_no_detail(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    policy = SourcePolicy(public_overrides=frozenset({("127.0.0.1", port)}), deadline_s=20)
    with pytest.raises(MediaError) as caught:
        download_to_temp(f"http://127.0.0.1:{port}/x.mp4", tmp_path / "tmp", policy=policy)
    assert str(caught.value) == f"http://127.0.0.1:{port}/x.mp4: download failed"
    assert_nothing_left(tmp_path / "tmp")


# the proxy itself -------------------------------------------------------------------------------------------------


def _ask_proxy(proxy: _GuardProxy, request: bytes) -> bytes:
    port = int(proxy.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while block := sock.recv(65536):
            answer += block
    return answer


def test_proxy_serves_only_its_owner(sites, media):
    public = sites({"/x.mp4": serve_file(media["clip"], "video/mp4")})
    proxy = _GuardProxy(_Budget(public_policy(public)))
    try:
        target = public.url("/x.mp4")
        answer = _ask_proxy(proxy, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 407")
        assert public.connections == 0
        auth = _proxy_auth(proxy)
        answer = _ask_proxy(proxy, f"GET {target} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic {auth}\r\n\r\n"
                            .encode())
        assert answer.startswith(b"HTTP/1.0 200") and answer.endswith(media["clip"].read_bytes())
    finally:
        proxy.close()


def _proxy_auth(proxy: _GuardProxy) -> str:
    return base64.b64encode(proxy.url.split("@", 1)[0].split("//", 1)[1].encode()).decode()


def test_proxy_tunnels_to_public_sites_only(sites, media):
    internal = sites({"/x.mp4": serve_file(media["clip"], "video/mp4")})
    public = sites({"/x.mp4": serve_file(media["clip"], "video/mp4")})
    budget = _Budget(public_policy(public))
    proxy = _GuardProxy(budget)
    try:
        auth = _proxy_auth(proxy)
        inside = "GET /x.mp4 HTTP/1.0\r\nHost: x\r\n\r\n"
        answer = _ask_proxy(proxy, (f"CONNECT 127.0.0.1:{public.port} HTTP/1.1\r\nProxy-Authorization: Basic "
                                    f"{auth}\r\n\r\n{inside}").encode())
        assert answer.startswith(b"HTTP/1.1 200 Connection established")
        assert answer.endswith(media["clip"].read_bytes())
        assert budget.received >= media["clip"].stat().st_size  # the tunnel counts what the site sends
        answer = _ask_proxy(proxy, (f"CONNECT 127.0.0.1:{internal.port} HTTP/1.1\r\nProxy-Authorization: Basic "
                                    f"{auth}\r\n\r\n{inside}").encode())
        assert answer.startswith(b"HTTP/1.1 403 address refused by policy")
        assert internal.connections == 0
        assert budget.stop == "refused"
    finally:
        proxy.close()


def test_page_without_video_says_so_without_detail(sites, tmp_path):
    public = sites({"/page.html": serve_text("<html><head><title>t</title></head><body>text</body></html>",
                                             "text/html")})
    with pytest.raises(MediaError) as caught:
        download_to_temp(public.url("/page.html"), tmp_path / "tmp", policy=public_policy(public, deadline_s=20))
    assert str(caught.value) == f"{public.url('/page.html')}: download failed (no video found at this URL)"
    assert_nothing_left(tmp_path / "tmp")


def test_site_error_status_is_reported_as_the_site_s(sites, tmp_path):
    public = sites({})  # every path answers 404
    with pytest.raises(MediaError) as caught:
        download_to_temp(public.url("/gone.mp4"), tmp_path / "tmp", policy=public_policy(public, deadline_s=20))
    assert str(caught.value).endswith("download failed (the site answered HTTP 404)")
    assert_nothing_left(tmp_path / "tmp")


# The web service's browser guard ----------------------------------------------------------------------------------


def test_the_service_answers_only_its_own_names_and_page(tmp_path: Path) -> None:
    Catalog.open(tmp_path / "catalog").close()
    for host, expected in (("127.0.0.1:8000", 200), ("localhost", 200), ("[::1]:8000", 200),
                           ("attacker.example", 403), ("127.0.0.1.nip.io", 403)):
        with TestClient(create_app(ServiceSettings(catalog=tmp_path / "catalog")), base_url=f"http://{host}") as app:
            answer = app.get("/api/info")
            assert answer.status_code == expected, host
            if expected == 403:
                assert answer.json()["detail"].startswith(f"host {host}: this server answers to")
    with TestClient(create_app(ServiceSettings(catalog=tmp_path / "catalog")), base_url="http://127.0.0.1") as app:
        for origin in ("http://attacker.example", "null"):
            refused = app.post("/api/queries", json={"video_id": 1}, headers={"Origin": origin})
            assert refused.status_code == 403 and "own page only" in refused.json()["detail"]
        own = app.post("/api/queries", json={"video_id": 1}, headers={"Origin": "http://127.0.0.1"})
        assert own.status_code == 404  # past the guard: the catalog has no video 1
    public = ServiceSettings(catalog=tmp_path / "catalog", allowed_hosts=("mvr.example.org",))
    with TestClient(create_app(public), base_url="http://mvr.example.org") as app:
        assert app.get("/api/info").status_code == 200


def test_api_bounds_and_errors_are_strict_json(tmp_path: Path) -> None:
    Catalog.open(tmp_path / "catalog").close()
    with TestClient(create_app(ServiceSettings(catalog=tmp_path / "catalog")), base_url="http://127.0.0.1") as app:
        for body in ({"video_id": 2**63}, {"video_id": True}, {"video_id": 1.0}, {"video_id": "1"},
                     {"video_id": 0}):
            answer = app.post("/api/queries", json=body)
            assert answer.status_code == 422 and answer.json()["detail"].startswith("video_id: "), body
        for path in ("/api/videos/99999999999999999999", "/api/videos/0/media", "/api/videos/x"):
            answer = app.get(path)
            assert answer.status_code == 422 and isinstance(answer.json()["detail"], str), path
        schema = app.get("/openapi.json").json()
    # Every 422 the schema declares is the one-line error the app returns, not FastAPI's list of problems.
    declared = [operation["responses"]["422"] for route in schema["paths"].values() for operation in route.values()
                if "422" in operation["responses"]]
    assert declared and all(r["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")
                            for r in declared)
    assert "HTTPValidationError" not in schema["components"]["schemas"]
