"""Probing and decoding with ffmpeg: what a media file holds, its audio as numpy arrays, a thumbnail.

Everything that reads a media container goes through this module, so that the feature extractors receive plain
numpy arrays and never parse containers themselves.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mvr.errors import MediaError
from mvr.parallel import cpu_count, on_threads

# Bytes of decoded audio read from ffmpeg's pipe at a time: few enough to stay in cache, enough to amortise a call.
_PIPE_BLOCK = 1 << 20

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


def ffmpeg_input(path: Path) -> str:
    """``path`` as ffmpeg and ffprobe must be given it: absolute, so that no file name (``-x.mp4``,
    ``http:x.mp4``) can be read as an option or a protocol."""
    return os.path.abspath(path)


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
    wav = _pcm_wav(path)
    if wav is not None:  # its header says all ffprobe would, without starting a process
        return MediaInfo(duration=wav.frames / wav.sample_rate, has_audio=True, has_video=False,
                         sample_rate=wav.sample_rate, channels=wav.channels)
    cmd = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", ffmpeg_input(path)]
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
    """Decode the first audio stream to a mono float64 signal at its own sample rate, whole, in memory.

    The samples are decoded to 16-bit PCM and the two channels averaged, exactly as pyAudioAnalysis reads a WAV
    file (``read_audio_file`` + ``stereo_to_mono``), so that both see identical numbers. The sample rate is the
    stream's own: no resampling, as in the study. Streams of more than two channels are first downmixed to
    stereo by ffmpeg. Long files are better read in blocks with :func:`open_audio`, which this wraps.

    Returns
    -------
    signal : np.ndarray
        Shape ``(n_samples,)``, float64, in 16-bit integer units.
    sample_rate : int
        Samples per second of ``signal``.
    """
    with open_audio(path, info) as decoded:
        return decoded.read(0, decoded.size), decoded.sample_rate


class DecodedAudio:
    """A file's first audio stream as 16-bit PCM on disk: decoded once into an unnamed temporary file, or, for a
    16-bit PCM WAV file, the file itself.

    Holding a long file's samples in memory does not scale: an hour of stereo 44.1 kHz audio is 635 MB of PCM
    and 1.3 GB of float64 samples. Here memory holds one block of the pipe at a time while decoding, and
    :meth:`read` gives any stretch of mono samples back. The statistics pyAudioAnalysis normalises the whole
    signal by are gathered while decoding, and are exactly numpy's on the whole mono signal: its samples are
    multiples of 1/2 far below 2**52, so every partial sum is exact, whatever the order of the additions.

    Use it as a context manager, or call :meth:`close`; a temporary file disappears when it is closed (or the
    process ends).

    Attributes
    ----------
    sample_rate : int
        Samples per second.
    size : int
        Mono samples.
    mean, maximum, minimum : float
        Of the mono samples, in 16-bit integer units, equal to the float64 signal's ``mean()``, ``max()`` and
        ``min()``.
    """

    def __init__(self, spool: BinaryIO, channels: int, sample_rate: int, size: int, doubled_sum: int,
                 doubled_max: int, doubled_min: int, data_offset: int = 0) -> None:
        self._spool = spool
        self._data_offset = data_offset  # where the samples start in the file
        self._channels = channels
        self.sample_rate = sample_rate
        self.size = size
        # The statistics were gathered on twice the mono samples (the sum of the channels, integers).
        self.mean = float(doubled_sum) / 2.0 / size
        self.maximum = doubled_max / 2.0
        self.minimum = doubled_min / 2.0

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Mono samples ``start .. stop - 1`` as float64, in 16-bit integer units, into ``out`` when given.

        Thread-safe: it reads at an offset and moves no shared file position.
        """
        start, stop = max(0, start), min(stop, self.size)
        count = max(0, stop - start)
        out = np.empty(count) if out is None else out[:count]
        frame_bytes = 2 * self._channels
        data = _pread_exactly(self._spool.fileno(), count * frame_bytes, self._data_offset + start * frame_bytes)
        pcm = np.frombuffer(data, dtype="<i2")
        if self._channels == 2:
            # (left + right) * 0.5 is exact, so it equals pyAudioAnalysis' right / 2 + left / 2 to the bit.
            np.add(pcm[0::2], pcm[1::2], out=out, dtype=np.float64)
            out *= 0.5
        else:
            out[...] = pcm
        return out

    def close(self) -> None:
        """Close the file (a temporary one is deleted)."""
        self._spool.close()

    def __enter__(self) -> "DecodedAudio":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_audio(path: Path, info: MediaInfo | None = None) -> DecodedAudio:
    """Decode the first audio stream of ``path`` into a :class:`DecodedAudio`, streaming ffmpeg's output.

    Same samples as :func:`decode_audio` (16-bit PCM, the two channels averaged, more than two downmixed to
    stereo by ffmpeg, the stream's own sample rate), with memory bounded by one block of the pipe. A mono or
    stereo 16-bit PCM WAV file holds those samples already: it is read in place, with no ffmpeg and no copy.

    Raises
    ------
    MediaError
        When the file has no audio stream, or it cannot be decoded, or it holds no samples.
    """
    path = Path(path)
    info = info or probe(path)
    if not info.has_audio:
        raise MediaError(str(path), "no audio stream")
    wav = _pcm_wav(path)
    if wav is not None:
        return _open_pcm_wav(path, wav)
    channels = min(int(info.channels or 2), 2)
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-i", ffmpeg_input(path), "-map", "0:a:0", "-vn", "-sn", "-dn",
           "-ac", str(channels), "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1"]
    frame_bytes = 2 * channels
    spool = tempfile.TemporaryFile(prefix="mvr-audio-")
    try:
        # stderr goes to a file: a damaged stream can print more than a pipe holds, and block ffmpeg.
        with tempfile.TemporaryFile() as errors:
            with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL) as proc:
                _widen_pipe(proc.stdout)
                frames, doubled_sum, doubled_max, doubled_min = _spool_pcm(proc.stdout, spool, frame_bytes)
            if proc.returncode != 0:
                errors.seek(0)
                raise MediaError(str(path), f"audio could not be decoded ({_last_line(errors.read())})")
        if frames == 0:
            raise MediaError(str(path), "audio stream holds no samples")
    except BaseException:
        spool.close()
        raise
    return DecodedAudio(spool, channels, int(info.sample_rate), frames, doubled_sum, doubled_max, doubled_min)


def _spool_pcm(pipe: BinaryIO, spool: BinaryIO, frame_bytes: int) -> tuple[int, int, int, int]:
    """Copy whole PCM frames from ``pipe`` to ``spool``; return the frame count and the sum, maximum and minimum
    of each frame's channels added together (twice the mono sample of a stereo frame), all exact integers.

    A lone byte or sample left at the end (half a frame) is dropped.
    """
    buffer = bytearray(_PIPE_BLOCK)
    view = memoryview(buffer)
    held = 0  # bytes of an incomplete frame carried over from the last read
    frames = 0
    statistics = _PcmStatistics()
    while True:
        got = pipe.readinto(view[held:])
        held += got
        whole = held - held % frame_bytes
        if whole:
            statistics.add(np.frombuffer(buffer, dtype="<i2", count=whole // 2), frame_bytes // 2)
            spool.write(view[:whole])
            frames += whole // frame_bytes
            buffer[: held - whole] = buffer[whole:held]  # the start of a frame the next read completes
            held -= whole
        if not got:
            break
    spool.flush()
    return frames, statistics.total, statistics.largest, statistics.smallest


class _PcmStatistics:
    """Sum, maximum and minimum of each frame's channels added together (twice the mono sample of a stereo
    frame), gathered block by block, all exact integers."""

    def __init__(self) -> None:
        self.total = 0
        self.largest, self.smallest = -(1 << 17), 1 << 17

    def add(self, pcm: np.ndarray, channels: int) -> None:
        """Take in a block of interleaved 16-bit samples of ``channels`` (1 or 2) channels."""
        if channels == 2:
            doubled = np.add(pcm[0::2], pcm[1::2], dtype=np.int32)
        else:  # a mono stream's sample is its own channel mean: count it twice too
            doubled = np.multiply(pcm, 2, dtype=np.int32)
        self.total += int(doubled.sum(dtype=np.int64))
        self.largest = max(self.largest, int(doubled.max()))
        self.smallest = min(self.smallest, int(doubled.min()))


@dataclass(frozen=True)
class _WavLayout:
    """Where a 16-bit PCM WAV file keeps its samples."""

    data_offset: int
    frames: int
    channels: int
    sample_rate: int


_WAVE_PCM, _WAVE_EXTENSIBLE = 1, 0xFFFE
# The PCM sub-format GUID of WAVE_FORMAT_EXTENSIBLE, after its first two bytes (the format code).
_KSDATAFORMAT_PCM_TAIL = bytes.fromhex("000000001000800000aa00389b71")


def _pcm_wav(path: Path) -> _WavLayout | None:
    """The layout of a mono or stereo 16-bit PCM WAV file; None for anything else (ffmpeg reads that).

    Walks the RIFF chunks to ``fmt `` and ``data``. A data chunk that claims more bytes than the file holds (a
    file cut short, or written while streaming) is read as far as the file goes, as ffmpeg reads it.
    """
    try:
        with open(path, "rb") as handle:
            if handle.read(4) != b"RIFF" or handle.read(8)[4:] != b"WAVE":
                return None
            size = os.fstat(handle.fileno()).st_size
            layout = None
            while (header := handle.read(8)) and len(header) == 8:
                kind, length = header[:4], int.from_bytes(header[4:], "little")
                if kind == b"fmt ":
                    fmt = handle.read(length)
                    layout = _wav_format(fmt)
                    if layout is None:
                        return None
                    handle.seek(length % 2, os.SEEK_CUR)
                elif kind == b"data":
                    if layout is None:  # samples before their format: leave it to ffmpeg
                        return None
                    channels, rate = layout
                    start = handle.tell()
                    frames = min(length, size - start) // (2 * channels)
                    return _WavLayout(start, frames, channels, rate) if frames else None
                else:
                    handle.seek(length + length % 2, os.SEEK_CUR)  # chunks are padded to even sizes
    except OSError:
        return None
    return None


def _wav_format(fmt: bytes) -> tuple[int, int] | None:
    """Channels and sample rate from a ``fmt `` chunk of 16-bit PCM in one or two channels, else None."""
    if len(fmt) < 16:
        return None
    code, channels, rate = int.from_bytes(fmt[0:2], "little"), int.from_bytes(fmt[2:4], "little"), \
        int.from_bytes(fmt[4:8], "little")
    bits = int.from_bytes(fmt[14:16], "little")
    if code == _WAVE_EXTENSIBLE:
        if len(fmt) < 40 or fmt[26:40] != _KSDATAFORMAT_PCM_TAIL or fmt[24:26] != b"\x01\x00":
            return None
    elif code != _WAVE_PCM:
        return None
    if bits != 16 or channels not in (1, 2) or rate <= 0:
        return None
    return channels, rate


def _open_pcm_wav(path: Path, wav: _WavLayout) -> DecodedAudio:
    """A :class:`DecodedAudio` reading a PCM WAV file in place; its statistics come from one pass over it."""
    handle = open(path, "rb")
    try:
        # Mapped with its pages read in at once (Linux): faulting them in one by one costs more than the sums.
        with mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ,
                       flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)) as mapped:
            samples = np.frombuffer(mapped, dtype="<i2", offset=wav.data_offset, count=wav.frames * wav.channels)
            block = (_PIPE_BLOCK // 2) * wav.channels  # whole frames

            def gather(share: Sequence[int], view: np.ndarray = samples) -> _PcmStatistics:
                statistics = _PcmStatistics()
                for start in share:
                    statistics.add(view[start : start + block], wav.channels)
                return statistics

            parts = on_threads(gather, range(0, samples.size, block), cpu_count())
            del gather, samples  # the map closes only once no array looks into it
    except BaseException:
        handle.close()
        raise
    return DecodedAudio(handle, wav.channels, wav.sample_rate, wav.frames, sum(p.total for p in parts),
                        max(p.largest for p in parts), min(p.smallest for p in parts), data_offset=wav.data_offset)


def _widen_pipe(pipe: BinaryIO) -> None:
    """Let the pipe hold a whole read block where the system allows it (Linux), rather than 64 KB.

    With the default size ffmpeg and the reader take turns 16 times a block, and the switches cost more than
    the copying.
    """
    try:
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BLOCK)
    except (AttributeError, OSError):  # not Linux, or above the system's limit: the default size still works
        pass


def _pread_exactly(descriptor: int, count: int, offset: int) -> bytes:
    """``count`` bytes at ``offset`` of a file, read however many calls the system needs."""
    parts = []
    while count > 0:
        part = os.pread(descriptor, count, offset)
        if not part:
            raise OSError(f"temporary audio file ended {count} bytes early")
        parts.append(part)
        count -= len(part)
        offset += len(part)
    return b"".join(parts) if len(parts) != 1 else parts[0]


def thumbnail_jpeg(path: Path, info: MediaInfo | None = None, width: int = 320) -> bytes | None:
    """Return one JPEG frame from a third into the video, ``width`` pixels wide; None without pictures."""
    info = info or probe(path)
    if not info.has_video:
        return None
    at = info.duration / 3 if info.duration else 0.0
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-ss", f"{at:.3f}", "-i", ffmpeg_input(path), "-map", "0:v:0",
           "-frames:v", "1", "-vf", f"scale={width}:-2", "-q:v", "4", "-f", "image2", "-c:v", "mjpeg", "pipe:1"]
    done = subprocess.run(cmd, capture_output=True)
    if done.returncode != 0 or not done.stdout:
        return None
    return done.stdout


def picture_jpeg(picture: np.ndarray) -> bytes:
    """One RGB picture, uint8 ``(height, width, 3)``, as JPEG bytes (encoded by ffmpeg, like the thumbnails).

    Raises
    ------
    MediaError
        When ffmpeg cannot encode it.
    """
    height, width, _ = picture.shape
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
           "-i", "pipe:0", "-frames:v", "1", "-q:v", "4", "-f", "image2", "-c:v", "mjpeg", "pipe:1"]
    done = subprocess.run(cmd, input=np.ascontiguousarray(picture, dtype=np.uint8).tobytes(), capture_output=True)
    if done.returncode != 0 or not done.stdout:
        raise MediaError("picture", f"ffmpeg could not encode it as JPEG ({_last_line(done.stderr)})")
    return done.stdout


def _last_line(stderr: bytes) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "ffmpeg failed"
