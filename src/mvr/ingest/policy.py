"""What a source may be fetched from, and how much: the address policy and the download limits.

The command line runs for the user on the user's machine and fetches what it is given; the web service fetches
what a client names, so it refuses loopback, private and link-local addresses unless its operator allows them.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from mvr.errors import SourceRefusedError

MIB = 1 << 20


@dataclass(frozen=True)
class SourcePolicy:
    """Where URLs may be fetched from, and the limits of one download.

    Attributes
    ----------
    allow_private : bool
        Let URLs reach loopback, private and link-local addresses (the command line; a trusted network).
    max_bytes : int or None
        Largest download; None: no limit.
    timeout_s : float
        Network timeout of a download.
    """

    allow_private: bool = True
    max_bytes: int | None = None
    timeout_s: float = 60.0


def check_url(url: str, policy: SourcePolicy) -> None:
    """Refuse a URL that is not http(s), or whose host resolves to an address the policy does not reach.

    Every address the name resolves to is checked, since the downloader may use any of them.

    Raises
    ------
    SourceRefusedError
        Status 400 for a malformed URL or an unknown host, 403 for an address the policy refuses.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SourceRefusedError(f"{url}: not a valid URL ({exc})", 400) from None
    if parts.scheme not in ("http", "https"):
        raise SourceRefusedError(f"{url}: only http and https URLs are accepted", 400)
    if not parts.hostname:
        raise SourceRefusedError(f"{url}: no host name in the URL", 400)
    if policy.allow_private:
        return
    try:
        found = socket.getaddrinfo(parts.hostname, port or parts.scheme, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise SourceRefusedError(f"{url}: host {parts.hostname} not found ({exc})", 400) from None
    for *_, sockaddr in found:
        address = ipaddress.ip_address(sockaddr[0].split("%")[0])  # drop an IPv6 zone id
        kind = address_kind(address)
        if kind:
            literal = parts.hostname == str(address)
            what = f"is a {kind} address" if literal else f"resolves to {address}, a {kind} address"
            raise SourceRefusedError(
                f"{url}: {parts.hostname} {what}; this server only fetches public addresses (start it with"
                " --allow-private-urls to allow others)", 403,
            )


def address_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Name the kind of a non-public address, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    for kind, matches in (("loopback", address.is_loopback), ("link-local", address.is_link_local),
                          ("multicast", address.is_multicast), ("unspecified", address.is_unspecified),
                          ("private", address.is_private)):
        if matches:
            return kind
    return None if address.is_global else "reserved"
