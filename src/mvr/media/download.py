"""Downloads with yt-dlp: YouTube, every site yt-dlp supports, and direct links to media files."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from mvr.errors import MediaError

# Formats yt-dlp may choose; one muxed file keeps audio and pictures together in the catalog.
_YTDLP_FORMAT = "best[height<=720][ext=mp4]/best[height<=720]/bestvideo[height<=720]+bestaudio/best"


def is_url(source: str) -> bool:
    """Tell whether ``source`` is an http(s) URL rather than a local path."""
    return urlparse(source).scheme in ("http", "https")


def download(url: str, dest_dir: Path, max_bytes: int | None = None, timeout_s: float = 60.0) -> tuple[Path, str]:
    """Download one video with yt-dlp's Python API.

    Works for YouTube and every site yt-dlp supports, and for direct links to media files (its generic
    extractor).

    Returns
    -------
    path : Path
        The downloaded file, inside ``dest_dir``.
    title : str
        The title the site gives, or the file name.
    """
    import yt_dlp  # imported here: only URL sources pay for it

    dest_dir.mkdir(parents=True, exist_ok=True)
    options = {
        "format": _YTDLP_FORMAT,
        "outtmpl": str(dest_dir / "download.%(ext)s"),
        "noplaylist": True,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "socket_timeout": timeout_s,
        "retries": 1,
        "logger": _SilentLogger(),
    }
    if max_bytes is not None:
        options["max_filesize"] = max_bytes
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            meta = ydl.extract_info(url, download=True)
    except Exception as exc:  # yt-dlp raises many types; all mean "this URL failed"
        raise MediaError(url, f"download failed ({_clean_ytdlp_message(exc)})") from None
    files = [p for p in dest_dir.iterdir() if p.is_file() and not p.name.endswith((".part", ".ytdl"))]
    if not files:
        raise MediaError(url, "download produced no file (too large, or no downloadable format)")
    title = (meta or {}).get("title") or files[0].stem
    return files[0], str(title)


def download_to_temp(url: str, parent: Path, **limits: float) -> tuple[Path, str, Path]:
    """Download into a fresh folder under ``parent``: ``(file, title, folder)``.

    The folder is a plain path, so that it can cross a process boundary; the caller removes it
    (:func:`remove_temp_folder`) once the file is no longer needed. On failure nothing is left behind.
    """
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=parent, prefix="download-"))
    try:
        path, title = download(url, folder, **limits)
    except BaseException:
        remove_temp_folder(folder)
        raise
    return path, title, folder


def remove_temp_folder(folder: Path | None) -> None:
    """Remove a temporary folder (a download's, an upload's); None is allowed, for callers that made none."""
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


class _SilentLogger:
    """Keep yt-dlp quiet: its errors come back to us as exceptions."""

    def debug(self, msg: str) -> None:
        pass

    info = warning = error = debug


def _clean_ytdlp_message(exc: Exception) -> str:
    text = str(exc).replace("ERROR: ", "").strip()
    return " ".join(text.split())[:300] or type(exc).__name__
