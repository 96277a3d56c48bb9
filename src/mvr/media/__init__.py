"""Media access: probing and decoding with ffmpeg (:mod:`mvr.media.decode`), downloads with yt-dlp
(:mod:`mvr.media.download`)."""

from mvr.media.decode import (
    DecodedAudio,
    MediaInfo,
    decode_audio,
    file_sha256,
    open_audio,
    probe,
    require_ffmpeg,
    thumbnail_jpeg,
)
from mvr.media.download import download, download_to_temp, is_url, remove_temp_folder

__all__ = [
    "DecodedAudio", "MediaInfo", "decode_audio", "download", "download_to_temp", "file_sha256", "is_url",
    "open_audio", "probe", "remove_temp_folder", "require_ffmpeg", "thumbnail_jpeg",
]
