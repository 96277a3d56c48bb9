"""Downloads with yt-dlp in which every connection obeys an :class:`~mvr.netpolicy.SourcePolicy`.

Checking the URL a client sends is not enough: yt-dlp follows redirects, fetches the media URLs a page names and
the segments a playlist lists, and any of them may point at an internal address. So each download runs its own
small filtering proxy on 127.0.0.1 and gives it to yt-dlp as its only way out:

* a plain ``http://`` request arrives as a forward-proxy request, an ``https://`` one as ``CONNECT``;
* the proxy resolves the target host once (per download), checks every address against the policy, connects to
  one of the checked addresses (never to the name again: no DNS rebinding), and refuses anything else;
* it counts every byte received from any site and holds the total deadline of the download, so that neither a
  response without Content-Length nor a server trickling a byte at a time can outlast the limits;
* it asks for a secret in ``Proxy-Authorization``, so that no other local program can use it meanwhile.

yt-dlp is held to the proxy as well: its native downloaders only (HTTP, HLS, DASH segments: each fragment is a
request through the proxy), no scheme other than http(s), the proxy forced on every request, and a progress hook
that stops the download at the byte limit or the deadline. Whatever fails, the partial files go, and the error
names the URL and one of a few reasons, never a server path nor how an internal address answered.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import secrets
import select
import shutil
import socket
import socketserver
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mvr.errors import MediaError
from mvr.ingest.policy import (
    AddressRefused,
    HostNotFound,
    Refused,
    SourcePolicy,
    check_url,
    resolve_checked,
    shown_url,
)
from mvr.media import remove_temp_folder

# Formats yt-dlp may choose, as in mvr.media: one muxed file keeps audio and pictures together in the catalog.
_YTDLP_FORMAT = "best[height<=720][ext=mp4]/best[height<=720]/bestvideo[height<=720]+bestaudio/best"
# The downloaders whose every fetch is a request through yt-dlp's networking, hence through the proxy.
_GUARDED_DOWNLOADERS = ("HttpFD", "HlsFD", "DashSegmentsFD")
_HEAD_LIMIT = 64 * 1024  # bytes of a request's or a response's head; more is refused
_BLOCK = 64 * 1024
_MAX_CONNECTIONS = 32  # at once, per download: yt-dlp opens one or a few
# Headers that concern one hop only (RFC 9110 7.6.1), and the proxy's own; never passed on.
_HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te",
                "trailer", "upgrade", "expect"}

REFUSED_BY_POLICY = "address refused by policy"


@dataclass
class _Budget:
    """What one download has used and whether it must stop; shared by the proxy's threads and the hook."""

    policy: SourcePolicy
    started: float = field(default_factory=time.monotonic)
    received: int = 0
    stop: str | None = None  # "size", "deadline", "refused", once the download must end
    refused_kind: str | None = None
    unreachable: bool = False  # a public site could not be reached (said as a plain "download failed")
    resolved: dict[tuple[str, int], tuple[str, ...]] = field(default_factory=dict)
    sockets: set[socket.socket] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def remaining(self) -> float:
        return self.policy.deadline_s - (time.monotonic() - self.started)

    def timeout(self) -> float:
        """How long the next socket operation may wait: the socket timeout, cut to what is left of the deadline."""
        left = self.remaining()
        if left <= 0:
            self.halt("deadline")
            raise _Stop("deadline")
        return min(self.policy.socket_timeout_s, left)

    def count(self, nbytes: int) -> None:
        """Add bytes received from a site; stop past the limit."""
        with self.lock:
            self.received += nbytes
            over = self.policy.max_bytes is not None and self.received > self.policy.max_bytes
        if over:
            self.halt("size")
            raise _Stop("size")

    def halt(self, reason: str) -> None:
        """Stop the download: the first reason is kept, and every connection is cut."""
        with self.lock:
            if self.stop is None:
                self.stop = reason
            open_sockets = list(self.sockets)
        for sock in open_sockets:
            _shut(sock)

    def resolve(self, host: str, port: int) -> tuple[str, ...]:
        """The checked addresses of ``host``, resolved once per download: later connections reuse them."""
        key = (host.lower(), port)
        with self.lock:
            cached = self.resolved.get(key)
        if cached is not None:
            return cached
        addresses = resolve_checked(host, port, self.policy)
        with self.lock:
            return self.resolved.setdefault(key, addresses)

    def track(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.add(sock)

    def untrack(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.discard(sock)


class _Stop(Exception):
    """End the connection at hand (the budget says why)."""


class _Abort(Exception):
    """Raised inside yt-dlp (by the progress hook or a guard) to end the download; yt-dlp lets it through."""


class _ProxyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False  # the owner cuts the connections itself, rather than waiting for them
    allow_reuse_address = True

    def __init__(self, budget: _Budget, secret: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.budget = budget
        self.expected_auth = "Basic " + base64.b64encode(f"mvr:{secret}".encode()).decode()
        self.slots = threading.BoundedSemaphore(_MAX_CONNECTIONS)


class _ProxyHandler(socketserver.BaseRequestHandler):
    """One client connection: one forwarded request, or one tunnel."""

    server: _ProxyServer

    def handle(self) -> None:
        budget = self.server.budget
        client: socket.socket = self.request
        upstream: socket.socket | None = None
        if not self.server.slots.acquire(blocking=False):
            _answer(client, 503, "too many connections")
            return
        budget.track(client)
        try:
            if budget.stop is not None:  # a retry after the limit: end it at once
                _answer(client, 503, "download stopped")
                return
            head, rest = _read_head(client, budget, counted=False)
            method, target, headers = _parse_request(head)
            if headers.get("proxy-authorization", "") != self.server.expected_auth:
                _answer(client, 407, "proxy authentication required",
                        extra="Proxy-Authenticate: Basic realm=\"mvr\"\r\n")
                return
            if method == "CONNECT":
                host, port = _split_host_port(target, default_port=443)
            else:
                parts = urlsplit(target)
                if parts.scheme.lower() != "http" or not parts.hostname:
                    _answer(client, 400, "only http URLs go through this proxy (https uses CONNECT)")
                    return
                host, port = parts.hostname, parts.port or 80
            upstream = self._connect(client, host, port)
            if upstream is None:
                return
            if method == "CONNECT":
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    upstream.sendall(rest)
                _tunnel(client, upstream, budget)
            else:
                _forward(client, upstream, method, target, headers, rest, budget)
        except (_Stop, OSError, ValueError):
            pass  # the budget knows why, when it matters; the client sees the connection end
        finally:
            for sock in (upstream, client):
                if sock is not None:
                    budget.untrack(sock)
                    _shut(sock)
                    sock.close()
            self.server.slots.release()

    def _connect(self, client: socket.socket, host: str, port: int) -> socket.socket | None:
        """A connection to a checked address of ``host``, or None after answering the client why not."""
        budget = self.server.budget
        try:
            addresses = budget.resolve(host, port)
        except Refused as exc:
            with budget.lock:
                budget.refused_kind = budget.refused_kind or _kind_of(str(exc))
            _answer(client, 403, REFUSED_BY_POLICY)
            budget.halt("refused")  # a hop inside is an attack or a mistake: the whole download ends
            return None
        except HostNotFound:
            budget.unreachable = True
            _answer(client, 502, "download failed")
            return None
        for address in addresses:
            family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            budget.track(sock)
            try:
                sock.settimeout(budget.timeout())
                sock.connect((address, port))  # the checked address itself, not the name
                return sock
            except OSError:
                budget.untrack(sock)
                sock.close()
            except _Stop:
                budget.untrack(sock)
                sock.close()
                raise
        budget.unreachable = True
        _answer(client, 502, "download failed")  # the same words whatever the reason: no port scanning
        return None


def _forward(client: socket.socket, upstream: socket.socket, method: str, target: str, headers: dict[str, str],
             rest: bytes, budget: _Budget) -> None:
    """Pass one plain-http request on (origin form, ``Connection: close``) and its response back."""
    parts = urlsplit(target)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if "transfer-encoding" in headers:
        _answer(client, 501, "chunked request bodies are not supported")
        return
    length = int(headers.get("content-length", "0") or 0)
    dropped = _HOP_HEADERS | {name.strip().lower() for name in headers.get("connection", "").split(",")}
    lines = [f"{method} {path} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers.items() if name not in dropped]
    if "host" not in headers:
        lines.append(f"Host: {parts.netloc.rsplit('@', 1)[-1]}")
    lines.append("Connection: close")
    upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    body = rest[:length]
    upstream.sendall(body)
    while len(body) < length:  # a request body (POST) comes from our own yt-dlp: not counted against the limit
        client.settimeout(budget.timeout())
        block = client.recv(min(_BLOCK, length - len(body)))
        if not block:
            return
        upstream.sendall(block)
        body += block
    head, early = _read_head(upstream, budget, counted=True)
    status, response_headers = _parse_response(head)
    out = [head.split(b"\r\n", 1)[0].decode("latin-1")]
    dropped = _HOP_HEADERS | {n.strip().lower() for n in response_headers.get("connection", "").split(",")}
    out += [line for line in head.decode("latin-1").split("\r\n")[1:]
            if line and line.split(":", 1)[0].strip().lower() not in dropped]
    out.append("Connection: close")
    client.sendall(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return
    declared = response_headers.get("content-length")
    left = int(declared) if declared and declared.isdigit() and "transfer-encoding" not in response_headers \
        else None
    if early:
        client.sendall(early if left is None else early[:left])
        left = None if left is None else left - len(early)
    while left is None or left > 0:
        upstream.settimeout(budget.timeout())
        block = upstream.recv(_BLOCK if left is None else min(_BLOCK, left))
        if not block:
            return
        budget.count(len(block))
        client.sendall(block)
        if left is not None:
            left -= len(block)


def _tunnel(client: socket.socket, upstream: socket.socket, budget: _Budget) -> None:
    """Relay a CONNECT tunnel both ways until either side ends, the limits counting what the site sends."""
    while True:
        wait = budget.timeout()
        readable, _, _ = select.select([client, upstream], [], [], wait)
        if not readable:
            budget.timeout()  # raises at the deadline; otherwise the peers were idle a whole socket timeout
            return
        for sock in readable:
            block = sock.recv(_BLOCK)
            if not block:
                return
            if sock is upstream:
                budget.count(len(block))
                client.sendall(block)
            else:
                upstream.sendall(block)


def _read_head(sock: socket.socket, budget: _Budget, counted: bool) -> tuple[bytes, bytes]:
    """Read up to the blank line that ends an HTTP head: ``(head, bytes read past it)``."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > _HEAD_LIMIT:
            raise ValueError("head too long")
        sock.settimeout(budget.timeout())
        block = sock.recv(_BLOCK)
        if not block:
            raise ValueError("connection ended before the head")
        if counted:
            budget.count(len(block))
        data += block
    head, rest = data.split(b"\r\n\r\n", 1)
    return head, rest


def _parse_request(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    return method.upper(), target, _header_map(lines[1:])


def _parse_response(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    return status, _header_map(lines[1:])


def _header_map(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def _split_host_port(target: str, default_port: int) -> tuple[str, int]:
    match = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", target)
    if not match:
        raise ValueError("bad CONNECT target")
    host = match.group(1) or match.group(3)
    port = match.group(2) or match.group(4)
    return host, int(port) if port else default_port


def _answer(sock: socket.socket, status: int, reason: str, extra: str = "") -> None:
    """A short plain-text answer from the proxy itself (yt-dlp reports its status; the text is for people)."""
    body = reason.encode()
    try:
        sock.sendall(f"HTTP/1.1 {status} {reason}\r\n{extra}Content-Type: text/plain\r\nContent-Length: "
                     f"{len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    except OSError:
        pass


def _shut(sock: socket.socket) -> None:
    # shutdown (not just close) wakes a thread blocked in recv on the socket.
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _kind_of(refusal: str) -> str:
    """The kind of address in a :class:`~mvr.netpolicy.Refused` message ("... is a loopback address")."""
    match = re.search(r"\ba (.+) address\b", refusal)
    return match.group(1) if match else "non-public"


class _GuardProxy:
    """The filtering proxy of one download, serving on a thread until closed."""

    def __init__(self, budget: _Budget) -> None:
        self.budget = budget
        secret = secrets.token_urlsafe(18)
        self._server = _ProxyServer(budget, secret)
        port = self._server.server_address[1]
        self.url = f"http://mvr:{secret}@127.0.0.1:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="mvr-guard-proxy", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with self.budget.lock:
            open_sockets = list(self.budget.sockets)
        for sock in open_sockets:
            _shut(sock)
        self._thread.join(timeout=5)


class _QuietLogger:
    """Keeps yt-dlp quiet (its errors come back as exceptions), remembering a few lines to tell causes apart."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def debug(self, msg: str) -> None:
        if len(self.lines) < 200:
            self.lines.append(str(msg))

    info = warning = error = debug


def download(url: str, dest_dir: Path, *, policy: SourcePolicy) -> tuple[Path, str]:
    """Download one video with yt-dlp, every connection held to ``policy``.

    Works for the sites yt-dlp supports and for direct links to media files. The URL, each redirect, each media
    URL a page names and each HLS/DASH segment is fetched through a filtering proxy that connects only to
    addresses the policy allows, counts the bytes and holds the deadline (see the module's description).

    Parameters
    ----------
    url : str
        An http(s) URL.
    dest_dir : Path
        Folder to download into (created if missing). On failure, what the download wrote there is removed.
    policy : SourcePolicy
        Addresses allowed, byte limit, total deadline and socket timeout.

    Returns
    -------
    path : Path
        The downloaded file, inside ``dest_dir``.
    title : str
        The title the site gives, or the file name.

    Raises
    ------
    BadURL
        For a URL that is not http(s), malformed, or whose host does not resolve.
    AddressRefused
        When the URL, a redirect or a link it leads to is an address the policy refuses (no connection is made
        to it).
    MediaError
        For a download over the byte limit or the deadline, or one that failed otherwise; the reason is one of a
        few fixed phrases, with the HTTP status when a site answered one.
    """
    resolved = check_url(url, policy)  # a clear error for the URL itself, before any thread starts
    # Imported here, not at the top: yt-dlp takes a while to import, and mvr commands that never download
    # should not pay for it.
    import yt_dlp
    from yt_dlp.networking import Request

    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    before = set(dest_dir.iterdir())
    budget = _Budget(policy)
    budget.resolved[(resolved.host.lower(), resolved.port)] = resolved.addresses  # resolved once, checked
    proxy = _GuardProxy(budget)
    logger = _QuietLogger()

    def hook(progress: dict[str, Any]) -> None:
        # Counted by yt-dlp too, in case a response is decoded bigger than the bytes the proxy saw.
        done = progress.get("downloaded_bytes") or 0
        if policy.max_bytes is not None and done > policy.max_bytes:
            budget.halt("size")
            raise _Abort("size")
        if budget.remaining() <= 0:
            budget.halt("deadline")
            raise _Abort("deadline")
        if budget.stop is not None:
            raise _Abort(budget.stop)

    class GuardedYoutubeDL(yt_dlp.YoutubeDL):
        """yt-dlp held to the proxy: http(s) only, the proxy on every request, native downloaders only."""

        def urlopen(self, req: Any) -> Any:
            if isinstance(req, str):
                req = Request(req)
            if not isinstance(req, Request):
                raise _Abort("unsupported request")
            if urlsplit(req.url).scheme.lower() not in ("http", "https"):
                raise _Abort("unsupported scheme")
            if budget.stop is not None:
                raise _Abort(budget.stop)
            req.proxies = {"all": proxy.url}  # an extractor's own proxy choice would bypass the guard
            return super().urlopen(req)

        def dl(self, name: str, info: dict[str, Any], subtitle: bool = False, test: bool = False) -> Any:
            from yt_dlp.downloader import get_suitable_downloader

            if info.get("is_live"):
                raise _Abort("live streams are not downloaded")
            chosen = get_suitable_downloader(info, self.params, to_stdout=(name == "-"))
            if chosen is None or chosen.__name__ not in _GUARDED_DOWNLOADERS:
                raise _Abort("needs an external downloader")
            return super().dl(name, info, subtitle=subtitle, test=test)

    options: dict[str, Any] = {
        "format": _YTDLP_FORMAT,
        "outtmpl": str(dest_dir / "download.%(ext)s"),
        "noplaylist": True,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "proxy": proxy.url,
        # Native downloaders fetch through yt-dlp's networking (hence the proxy); ffmpeg would fetch by itself.
        "external_downloader": {"default": "native"},
        "hls_prefer_native": True,
        "socket_timeout": policy.socket_timeout_s,
        "retries": 1,
        "fragment_retries": 1,
        "extractor_retries": 0,
        "file_access_retries": 0,
        "logger": logger,
        "progress_hooks": [hook],
    }
    if policy.max_bytes is not None:
        options["max_filesize"] = policy.max_bytes  # refuses early when a Content-Length says too much
    failure: BaseException | None = None
    meta: dict[str, Any] | None = None
    # At the deadline every connection is cut, wherever the proxy's threads are waiting (a slow name lookup
    # included): yt-dlp then sees its connections end and gives up, and its retries are refused.
    watchdog = threading.Timer(max(0.0, budget.remaining()), budget.halt, ("deadline",))
    watchdog.daemon = True
    watchdog.start()
    try:
        with GuardedYoutubeDL(options) as ydl:
            meta = ydl.extract_info(url, download=True)
    except Exception as exc:  # yt-dlp raises many types; all mean "this URL failed", sorted out below
        failure = exc
    finally:
        watchdog.cancel()
        proxy.close()
    files = [p for p in dest_dir.iterdir() if p not in before and p.is_file()
             and not p.name.endswith((".part", ".ytdl")) and ".part-" not in p.name]
    if failure is not None or budget.stop is not None or not files:
        _remove_new(dest_dir, before)
        raise _failure(url, policy, budget, failure, logger, produced=bool(files))
    title = (meta or {}).get("title") or files[0].stem
    return files[0], " ".join(str(title).split())


def _failure(url: str, policy: SourcePolicy, budget: _Budget, exc: BaseException | None, logger: _QuietLogger,
             produced: bool) -> MediaError:
    """The one error to report, from what the proxy saw first and, failing that, what yt-dlp said."""
    if budget.stop == "refused":
        return AddressRefused(url, f"a redirect or a link it leads to is a {budget.refused_kind} address; "
                                   f"{REFUSED_BY_POLICY}")
    if budget.stop == "size" or any("max-filesize" in line for line in logger.lines):
        return MediaError(shown_url(url), f"download larger than the limit of {policy.max_bytes} bytes; stopped")
    if budget.stop == "deadline" or budget.remaining() <= 0:
        return MediaError(shown_url(url), f"download took longer than the limit of {policy.deadline_s:g} s; "
                                          "stopped")
    text = " ".join(str(exc or "").split())
    if isinstance(exc, _Abort):
        reason = f"download failed ({exc})"
    elif budget.unreachable:
        reason = "download failed"  # the same for any unreachable site: the answer must not map ports
    elif match := re.search(r"HTTP Error (\d{3})", text):
        reason = f"download failed (the site answered HTTP {match.group(1)})"
    elif "Unsupported URL" in text:
        reason = "download failed (no video found at this URL)"
    elif "format is not available" in text or "No video formats" in text or (exc is None and not produced):
        reason = "download failed (no downloadable format)"
    else:
        reason = "download failed"
    return MediaError(shown_url(url), reason)


def _remove_new(folder: Path, before: set[Path]) -> None:
    """Remove what a failed download left in ``folder`` (partial files, fragments), keeping what was there."""
    for path in folder.iterdir() if folder.exists() else ():
        if path in before:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def download_to_temp(url: str, parent: Path, *, policy: SourcePolicy) -> tuple[Path, str, Path]:
    """Download into a fresh folder under ``parent``: ``(file, title, folder)``.

    The folder is a plain path, so that it can cross a process boundary; the caller removes it
    (:func:`remove_temp_folder`) once the file is no longer needed. On failure nothing is left behind.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    # The pid in the name lets a later run sweep what a killed one left (mvr.store.catalog.sweep_leftovers).
    folder = Path(tempfile.mkdtemp(dir=parent, prefix=f"download-{os.getpid()}-"))
    try:
        path, title = download(url, folder, policy=policy)
    except BaseException:
        remove_temp_folder(folder)
        raise
    return path, title, folder
