"""How ``mvr serve`` runs: read once at start-up from the command line, passed to every part of the service."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mvr.config import RuntimeSettings
from mvr.ingest.policy import MIB, SourcePolicy


@dataclass(frozen=True)
class ServiceSettings:
    """How ``mvr serve`` runs.

    Attributes
    ----------
    catalog : Path
        The catalog folder to serve; it must exist.
    allow_private_urls : bool
        Let URL queries reach loopback, private and link-local addresses (tests, trusted networks).
    workers : int
        Queries extracted at the same time.
    queue_limit : int
        Queries that may wait for a worker; past ``workers + queue_limit`` pending ones the service answers 503.
    max_upload_bytes, max_download_bytes : int
        Largest uploaded file and largest download a URL query may fetch.
    download_deadline_s : float
        Wall time one URL query's download may take in all, every hop included.
    runtime : RuntimeSettings
        Threads, CNN runtime and cache folder, read once at start-up.
    allowed_hosts : tuple of str
        Host names the service answers to besides this machine's (``*``: any); see :mod:`mvr.web.security`.
    keep_queries : int
        Finished queries kept for polling; the oldest are forgotten first.
    feature_cache_size : int
        Query feature vectors kept, by URL or content hash and modality, so that a repeated query is instant.
    allow_indexing : bool
        Let clients add videos to the catalog (``POST /api/videos``: an upload or a URL, under the same limits and
        address policy as a query); off, the service only reads the catalog.
    """

    catalog: Path
    allow_private_urls: bool = False
    workers: int = 2
    queue_limit: int = 8
    max_upload_bytes: int = 512 * MIB
    max_download_bytes: int = 512 * MIB
    download_deadline_s: float = 300.0
    keep_queries: int = 256
    feature_cache_size: int = 64
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    allowed_hosts: tuple[str, ...] = ()
    allow_indexing: bool = False

    @property
    def policy(self) -> SourcePolicy:
        """The policy every URL query is fetched under."""
        return SourcePolicy(allow_private=self.allow_private_urls, max_bytes=self.max_download_bytes,
                            deadline_s=self.download_deadline_s)
