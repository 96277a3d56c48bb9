"""The one source resolver: a file path or URL made into local media with an identity, for indexing and queries.

``mvr index``, ``mvr query`` and the web service all go through :func:`resolve`, so that the same address policy
and download limits (:class:`~mvr.ingest.policy.SourcePolicy`) hold wherever a URL is fetched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mvr import media
from mvr.ingest.download import download_to_temp
from mvr.ingest.policy import SourcePolicy


@dataclass(frozen=True)
class ResolvedMedia:
    """A source as local media: where it is, what it is, and what names it.

    Attributes
    ----------
    source : str
        What the user named (a path or URL).
    path : Path
        The local file (the downloaded one for a URL).
    title : str | None
        The site's title for a download; None for a file (callers use the file's stem or a manifest's title).
    info : media.MediaInfo
        What ffprobe says about it.
    content_hash : str
        Its SHA-256: the catalog's identity of the content.
    temp_dir : Path | None
        A download's folder; the caller removes it (:meth:`cleanup`) once the file is no longer needed.
    """

    source: str
    path: Path
    title: str | None
    info: media.MediaInfo
    content_hash: str
    temp_dir: Path | None = None

    def cleanup(self) -> None:
        """Remove the download's folder, if there is one."""
        media.remove_temp_folder(self.temp_dir)


def resolve(source: str, *, policy: SourcePolicy, tmp_dir: Path) -> ResolvedMedia:
    """Make ``source`` local (downloading a URL into a fresh folder under ``tmp_dir``), probe and hash it.

    On failure nothing is left behind.

    Raises
    ------
    MediaError
        When the source cannot be read, downloaded or decoded; :class:`~mvr.ingest.policy.BadURL` and
        :class:`~mvr.ingest.policy.AddressRefused` (both MediaErrors) when the policy refuses a URL.
    """
    temp_dir = None
    try:
        if media.is_url(source):
            path, title, temp_dir = download_to_temp(source, tmp_dir, policy=policy)
        else:
            path, title = Path(source), None
        info = media.probe(path)  # the clear error for a missing or non-media file comes before hashing
        return ResolvedMedia(source, path, title, info, media.file_sha256(path), temp_dir)
    except BaseException:
        media.remove_temp_folder(temp_dir)
        raise
