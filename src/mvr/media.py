"""Media access: probing, decoding and downloading with ffmpeg and yt-dlp.

Everything that touches a media container goes through this module, so that the feature extractors receive plain
numpy arrays and never parse containers themselves.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from mvr.errors import MediaError

# Formats yt-dlp may choose; one muxed file keeps audio and pictures together in the catalog.
_YTDLP_FORMAT = "best[height<=720][ext=mp4]/best[height<=720]/bestvideo[height<=720]+bestaudio/best"


@dataclass(frozen=True)
class MediaInfo:
    """What ffprobe says about a media file.

    Attributes
    ----------
    duration : float
        Seconds; 0.0 when the container does not say.
    has_audio, has_video : bool
        Whether the file has an audio stream and a real picture stream (cover art does not count).
    sample_rate, channels : int or None
        Of the first audio stream.
    width, height : int or None
        Of the first picture stream.
    """

    duration: float
    has_audio: bool
    has_video: bool
    sample_rate: int | None = None
    channels: int | None = None
    width: int | None = None
    height: int | None = None


def is_url(source: str) -> bool:
    """Tell whether ``source`` is an http(s) URL rather than a local path."""
    return urlparse(source).scheme in ("http", "https")


def require_ffmpeg() -> None:
    """Raise a clear error when ffmpeg or ffprobe is not installed."""
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise MediaError(tool, "not found on PATH; install ffmpeg (Debian: apt-get install ffmpeg)")


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file, read in chunks so that large videos need no memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def probe(path: Path) -> MediaInfo:
    """Describe a media file with ffprobe.

    Raises
    ------
    MediaError
        When the path is missing, empty, or not a media file ffmpeg can read.
    """
    require_ffmpeg()
    path = Path(path)
    if not path.exists():
        raise MediaError(str(path), "no such file")
    if path.is_dir():
        raise MediaError(str(path), "is a folder, not a media file")
    if path.stat().st_size == 0:
        raise MediaError(str(path), "empty file (0 bytes)")
    cmd = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "unreadable"
        raise MediaError(str(path), f"not a media file ffmpeg can read ({detail})")
    info = json.loads(done.stdout or "{}")
    streams = info.get("streams", [])
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    video = [
        s
        for s in streams
        if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")
    ]
    if not audio and not video:
        raise MediaError(str(path), "not a media file: no audio or video stream")
    duration = float(info.get("format", {}).get("duration") or 0.0)
    first_audio = audio[0] if audio else {}
    first_video = video[0] if video else {}
    return MediaInfo(
        duration=duration,
        has_audio=bool(audio),
        has_video=bool(video),
        sample_rate=int(first_audio["sample_rate"]) if "sample_rate" in first_audio else None,
        channels=first_audio.get("channels"),
        width=first_video.get("width"),
        height=first_video.get("height"),
    )


def decode_audio(path: Path, info: MediaInfo | None = None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream to a mono float64 signal at its own sample rate.

    The samples are decoded to 16-bit PCM and the two channels averaged, exactly as pyAudioAnalysis reads a WAV
    file (``read_audio_file`` + ``stereo_to_mono``), so that both see identical numbers. The sample rate is the
    stream's own: no resampling, as in the study. Streams of more than two channels are first downmixed to
    stereo by ffmpeg.

    Returns
    -------
    signal : np.ndarray
        Shape ``(n_samples,)``, float64, in 16-bit integer units.
    sample_rate : int
        Samples per second of ``signal``.
    """
    info = info or probe(path)
    if not info.has_audio:
        raise MediaError(str(path), "no audio stream")
    channels = min(int(info.channels or 2), 2)
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-map", "0:a:0", "-vn", "-sn", "-dn",
           "-ac", str(channels), "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1"]
    done = subprocess.run(cmd, capture_output=True)
    if done.returncode != 0:
        raise MediaError(str(path), f"audio could not be decoded ({_last_line(done.stderr)})")
    pcm = np.frombuffer(done.stdout, dtype="<i2")
    if pcm.size == 0:
        raise MediaError(str(path), "audio stream holds no samples")
    if channels == 2:
        pairs = pcm[: pcm.size // 2 * 2].reshape(-1, 2)
        signal = pairs[:, 1] / 2 + pairs[:, 0] / 2
    else:
        signal = pcm.astype(np.float64)
    return signal, int(info.sample_rate)


def thumbnail_jpeg(path: Path, info: MediaInfo | None = None, width: int = 320) -> bytes | None:
    """Return one JPEG frame from a third into the video, ``width`` pixels wide; None without pictures."""
    info = info or probe(path)
    if not info.has_video:
        return None
    at = info.duration / 3 if info.duration else 0.0
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-ss", f"{at:.3f}", "-i", str(path), "-map", "0:v:0",
           "-frames:v", "1", "-vf", f"scale={width}:-2", "-q:v", "4", "-f", "image2", "-c:v", "mjpeg", "pipe:1"]
    done = subprocess.run(cmd, capture_output=True)
    if done.returncode != 0 or not done.stdout:
        return None
    return done.stdout


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


def download_to_temp(url: str, parent: Path, **limits: float) -> tuple[Path, str, tempfile.TemporaryDirectory]:
    """Download into a fresh temporary folder under ``parent``; the caller cleans it up."""
    parent.mkdir(parents=True, exist_ok=True)
    holder = tempfile.TemporaryDirectory(dir=parent, prefix="download-")
    try:
        path, title = download(url, Path(holder.name), **limits)
    except BaseException:
        holder.cleanup()
        raise
    return path, title, holder


class _SilentLogger:
    """Keep yt-dlp quiet: its errors come back to us as exceptions."""

    def debug(self, msg: str) -> None:
        pass

    info = warning = error = debug


def _clean_ytdlp_message(exc: Exception) -> str:
    text = str(exc).replace("ERROR: ", "").strip()
    return " ".join(text.split())[:300] or type(exc).__name__


def _last_line(stderr: bytes) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "ffmpeg failed"
