"""Requests a browser can be tricked into making: refused unless they come from the service's own page.

``mvr serve`` has no login: it trusts whoever can reach it, on this machine by default. Two checks keep a web page
elsewhere (or DNS rebinding, which points another name at 127.0.0.1) from driving it through the user's browser:

* the ``Host`` header must name the service (``127.0.0.1``, ``localhost``, ``::1`` or the names the operator
  allows), so that a rebound name is refused;
* a request that changes state (``POST``, ``PUT``, ``PATCH``, ``DELETE``) that carries an ``Origin`` must come
  from the service's own origin, so that another site's form or script is refused.

A deliberate public deployment names its host names (``--allowed-host``), or lifts the Host check (``*``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
"""The names of this machine, always allowed."""

_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BrowserGuard:
    """ASGI middleware: the Host and Origin checks above, answered with a one-line JSON 403.

    Parameters
    ----------
    app : ASGI application
        What to guard.
    allowed_hosts : iterable of str
        Host names (without port) the service answers to besides :data:`LOCAL_HOSTS`; ``*`` allows any.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], allowed_hosts: Iterable[str]) -> None:
        self.app = app
        hosts = {host.lower().strip("[]") for host in allowed_hosts}
        self.any_host = "*" in hosts
        self.hosts = frozenset(hosts | set(LOCAL_HOSTS))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
            refusal = self.refusal(scope["method"], headers.get("host", ""), headers.get("origin"))
            if refusal is not None:
                body = json.dumps({"detail": refusal}).encode()
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def refusal(self, method: str, host: str, origin: str | None) -> str | None:
        """Why a request is refused, or None."""
        name = _host_name(host)
        if not self.any_host and name not in self.hosts:
            return (f"host {host or '(none)'}: this server answers to {', '.join(sorted(self.hosts))} (start it with"
                    " --allowed-host NAME to serve another name)")
        if method.upper() in _STATE_CHANGING and origin is not None and origin != "null":
            parts = urlsplit(origin)
            if parts.netloc.lower() != host.lower():
                return f"origin {origin}: requests that change state are accepted from this server's own page only"
        elif method.upper() in _STATE_CHANGING and origin == "null":
            return "origin null: requests that change state are accepted from this server's own page only"
        return None


def _host_name(host: str) -> str:
    """The name in a Host header, without its port (``[::1]:8000`` -> ``::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
