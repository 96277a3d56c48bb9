"""What a source may be fetched from, and how much and how long: the address policy and the download limits.

A URL given to ``mvr index``, ``mvr query`` or the web service is fetched on the server's side, so a caller could
steer it at addresses the caller cannot reach (the loopback interface, a private network, a cloud metadata
service). This module decides, for one host name or address, whether it may be contacted:

* :func:`check_url` parses a URL, resolves its host once and checks every address it resolves to;
* :func:`resolve_checked` does the same for a ``(host, port)`` pair (the guarded downloader calls it for every
  connection it makes, redirects and embedded links included);
* :func:`address_kind` names what kind of non-public address an IP is, including IPv6 literals that carry an
  IPv4 address inside them (IPv4-mapped, NAT64, 6to4, Teredo, IPv4-compatible), judged as the IPv4 they carry.

The caller connects to the addresses returned, never to the name again, so that a name cannot resolve to a public
address for the check and to an internal one for the connection (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from mvr.errors import MediaError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# URLs are shown to clients: long ones are cut, so that an error stays one readable line.
_SHOWN_URL_CHARS = 200
MIB = 1 << 20

# IPv6 prefixes that carry an IPv4 address. A connection to one of them reaches (through a translator, a relay or
# the kernel's own mapping) the IPv4 address inside, so that address is what must be judged.
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")
# Shared address space of carrier-grade NAT (RFC 6598): not global, not "private" to Python before 3.13.
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")


class BadURL(MediaError):
    """A URL mvr cannot fetch at all: malformed, not http(s), no host, or a host name that does not resolve.

    A :class:`~mvr.errors.MediaError` (hence an :class:`~mvr.errors.MvrError`), so that a batch that reports
    failed items and goes on treats it like any other item that could not be read.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(shown_url(url), reason)


class AddressRefused(MediaError):
    """A URL, a redirect or a link in a fetched page leads to an address the policy does not allow."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(shown_url(url), reason)


@dataclass(frozen=True)
class SourcePolicy:
    """What one download may reach, and how much and how long it may take.

    The web service fetches what a client names: it refuses non-public addresses unless its operator allows them.
    The command line runs for the user, on the user's machine, and allows them (``mvr index http://127.0.0.1/...``).

    Attributes
    ----------
    allow_private : bool
        Allow loopback, private, link-local and other non-public addresses (a deliberate local deployment).
    max_bytes : int or None
        Bytes one download may receive in all (pages, playlists, media, every hop); None for no limit.
    deadline_s : float
        Seconds of wall time one download may take from its first connection to its last byte.
    socket_timeout_s : float
        Seconds one connect or read may wait for the peer.
    public_overrides : frozenset of (str, int)
        ``(address, port)`` pairs to treat as public although their address is not: for tests, which serve a
        "public" site on a loopback port. Only the exact port is trusted; any other port of the same address is
        still judged by its address.
    """

    allow_private: bool = False
    max_bytes: int | None = 1 << 30
    deadline_s: float = 600.0
    socket_timeout_s: float = 20.0
    public_overrides: frozenset[tuple[str, int]] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise ValueError(f"max_bytes: must be positive or None, not {self.max_bytes}")
        if not self.deadline_s > 0 or not self.socket_timeout_s > 0:
            raise ValueError("deadline_s and socket_timeout_s: must be positive")
        # Addresses are compared in their canonical spelling, whatever spelling the caller used.
        canonical = frozenset((str(_parse_ip(host)), int(port)) for host, port in self.public_overrides)
        object.__setattr__(self, "public_overrides", canonical)

    def refusal(self, address: str | IPAddress, port: int) -> str | None:
        """Why ``address:port`` may not be contacted under this policy, or None when it may."""
        ip = _parse_ip(address)
        if self.allow_private or (str(ip), port) in self.public_overrides:
            return None
        kind = address_kind(ip)
        return None if kind is None else f"a {kind} address"


@dataclass(frozen=True)
class ResolvedURL:
    """A URL that passed :func:`check_url`, with the addresses it was checked against.

    Attributes
    ----------
    url : str
        The URL as given.
    scheme : str
        ``http`` or ``https``.
    host : str
        The host name (or address literal, without brackets).
    port : int
        The port, the scheme's default when the URL names none.
    addresses : tuple of str
        The addresses the host resolved to, all allowed; connect to these, not to the name.
    """

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]


def shown_url(url: str) -> str:
    """The URL as an error message may show it: no user name or password, one line, at most 200 characters."""
    text = str(url)
    try:
        parts = urlsplit(text)
        if parts.username is not None or parts.password is not None:
            host = parts.hostname or ""
            if ":" in host:
                host = f"[{host}]"
            netloc = host if parts.port is None else f"{host}:{parts.port}"
            text = urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        pass
    text = " ".join(text.split()) or "(empty URL)"
    return text if len(text) <= _SHOWN_URL_CHARS else text[: _SHOWN_URL_CHARS - 3] + "..."


def check_url(url: str, policy: SourcePolicy) -> ResolvedURL:
    """Parse ``url``, resolve its host once and check every address it resolves to.

    Every address is checked, not only the first: a downloader may use any of them.

    Returns
    -------
    ResolvedURL
        The URL's parts and the checked addresses, to connect to.

    Raises
    ------
    BadURL
        For a malformed URL, a scheme other than http(s), a URL without a host, or a host that does not resolve.
    AddressRefused
        When the host is, or resolves to, an address the policy does not allow.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise BadURL(url, f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise BadURL(url, "only http and https URLs are accepted")
    if not parts.hostname:
        raise BadURL(url, "no host name in the URL")
    port = port if port is not None else (443 if scheme == "https" else 80)
    try:
        addresses = resolve_checked(parts.hostname, port, policy)
    except HostNotFound as exc:
        raise BadURL(url, str(exc)) from None
    except Refused as exc:
        raise AddressRefused(url, f"{exc}; refused by policy: only public addresses are fetched (a server"
                                  " started with --allow-private-urls fetches others)") from None
    return ResolvedURL(url=url, scheme=scheme, host=parts.hostname, port=port, addresses=addresses)


class HostNotFound(Exception):
    """A host name that does not resolve (its message names the host)."""


class Refused(Exception):
    """A host that is, or resolves to, an address the policy does not allow (its message says which kind)."""


def resolve_checked(host: str, port: int, policy: SourcePolicy) -> tuple[str, ...]:
    """Resolve ``host`` once and return its addresses, all checked against ``policy``.

    Raises
    ------
    HostNotFound
        When the name does not resolve.
    Refused
        When any address it resolves to is not allowed; the message names the host and the kind of address
        (not the address itself, which a caller may not know).
    """
    literal = _literal_ip(host)
    if literal is not None:
        found = [str(literal)]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except (socket.gaierror, UnicodeError, OSError):
            raise HostNotFound(f"host {host} not found") from None
        found = []
        for *_, sockaddr in infos:
            address = str(_parse_ip(sockaddr[0]))
            if address not in found:
                found.append(address)
        if not found:
            raise HostNotFound(f"host {host} not found")
    for address in found:
        why = policy.refusal(address, port)
        if why is not None:
            raise Refused(f"{host} is {why}" if literal is not None else f"{host} resolves to {why}")
    return tuple(found)


def address_kind(ip: str | IPAddress) -> str | None:
    """Name the kind of a non-public address, or None for a public one.

    Kinds: ``loopback``, ``private``, ``link-local``, ``multicast``, ``unspecified`` and ``reserved`` (anything
    else that is not globally routable). An IPv6 address that carries an IPv4 address (IPv4-mapped
    ``::ffff:0:0/96``, NAT64 ``64:ff9b::/96`` and ``64:ff9b:1::/48``, 6to4 ``2002::/16``, Teredo ``2001::/32``
    with both its server and its (obfuscated) client address, IPv4-compatible ``::/96``) is judged as the IPv4
    addresses it carries: refused when any of them is.

    Parameters
    ----------
    ip : str or ipaddress.IPv4Address or ipaddress.IPv6Address
        An address; an IPv6 zone id (``%eth0``) is ignored.

    Raises
    ------
    ValueError
        When ``ip`` is not an IP address.
    """
    address = _parse_ip(ip)
    if isinstance(address, ipaddress.IPv4Address):
        return _ipv4_kind(address)
    if address.is_loopback:  # ::1 lies inside ::/96, but it is IPv6's own loopback
        return "loopback"
    if address.is_unspecified:
        return "unspecified"
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        for inner in embedded:
            kind = _ipv4_kind(inner)
            if kind is not None:
                return f"{kind} (IPv4 {inner} inside IPv6)"
        return None
    return _own_kind(address)


def _ipv4_kind(address: ipaddress.IPv4Address) -> str | None:
    if address in _SHARED:
        return "private"
    return _own_kind(address)


def _own_kind(address: IPAddress) -> str | None:
    for kind, matches in (("loopback", address.is_loopback), ("link-local", address.is_link_local),
                          ("multicast", address.is_multicast), ("unspecified", address.is_unspecified),
                          ("private", address.is_private or getattr(address, "is_site_local", False))):
        if matches:
            return kind
    return None if address.is_global else "reserved"


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
    """The IPv4 addresses an IPv6 address carries (every reading of it), or None when it carries none."""
    value = int(address)
    low32 = ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if address in _MAPPED or address in _COMPATIBLE or address in _NAT64_WELL_KNOWN:
        return [low32]
    if address in _NAT64_LOCAL:
        # RFC 6052 places the IPv4 address by the prefix length, which the address does not tell. Zeros after
        # the /48 prefix mean the /96 placement (the last 32 bits); otherwise judge every placement that skips
        # bits 64-71 (/48, /56, /64), as a translator configured with any of them would read it.
        packed = address.packed
        if not any(packed[6:12]):
            readings = [packed[12:16]]
        else:
            readings = [packed[6:8] + packed[9:11], packed[7:8] + packed[9:12], packed[9:13]]
        return [ipaddress.IPv4Address(raw) for raw in readings]
    if address in _SIX_TO_FOUR:
        return [address.sixtofour]
    if address in _TEREDO:
        server, client = address.teredo  # the client address is stored inverted; ipaddress undoes that
        return [server, client]
    return None


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return _parse_ip(host)
    except ValueError:
        return None


def _parse_ip(ip: str | IPAddress) -> IPAddress:
    if isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return ip
    text = str(ip).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
