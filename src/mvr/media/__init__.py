"""Media access: probing and decoding with ffmpeg (:mod:`mvr.media.decode`), URLs and temporary folders
(:mod:`mvr.media.paths`). Downloads, held to the URL policy, are :mod:`mvr.ingest.download`'s."""

from mvr.media.decode import (
    DecodedAudio,
    MediaInfo,
    decode_audio,
    ffmpeg_input,
    file_sha256,
    open_audio,
    picture_jpeg,
    probe,
    require_ffmpeg,
    thumbnail_jpeg,
)
from mvr.media.paths import is_url, remove_temp_folder

__all__ = [
    "DecodedAudio", "MediaInfo", "decode_audio", "ffmpeg_input", "file_sha256", "is_url", "open_audio", "picture_jpeg",
    "probe", "remove_temp_folder", "require_ffmpeg", "thumbnail_jpeg",
]
