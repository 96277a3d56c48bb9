"""Encoding one item with ffmpeg: its music excerpt over a slideshow or a window of footage."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from mvr.dataset.spec import FPS, KEYFRAME_INTERVAL_S, Asset, Item, Shot
from mvr.errors import MediaError

_PICTURE_SIZE = (1280, 720)  # pictures are cached at this size: twice the output, so that zoompan moves smoothly


# -------------------------------------------------------------------------------------------- encoding ---

def encode_command(item: Item, output: Path, sources: Path) -> list[str]:
    """The ffmpeg command line that renders ``item`` into ``output`` (an MP4, whatever its extension)."""
    inputs: list[str] = []
    chains = []
    size = f"{item.width}x{item.height}"
    for index, shot in enumerate(item.shots):
        if shot.motion == "footage":
            loop = ["-stream_loop", "-1"] if shot.asset.duration < shot.start + shot.length else []
            inputs += [*loop, "-ss", f"{shot.start:.3f}", "-t", f"{shot.length:.3f}", "-i", str(shot.asset.path)]
            chains.append(f"[{index}:v]scale={size.replace('x', ':')}:force_original_aspect_ratio=increase,"
                          f"crop={size.replace('x', ':')},fps={FPS},setsar=1[v{index}]")
        else:
            inputs += ["-i", str(_cached_picture(shot.asset, sources))]
            chains.append(f"[{index}:v]{_zoompan(shot, size)},setsar=1,format=yuv420p[v{index}]")
    audio = len(item.shots)
    inputs += ["-ss", f"{item.start:.3f}", "-t", f"{item.duration:.3f}", "-i", str(item.track.path)]
    joined = "".join(f"[v{i}]" for i in range(len(item.shots)))
    fade_out = max(0.0, item.duration - 0.5)
    chains.append(f"{joined}concat=n={len(item.shots)}:v=1:a=0[v]")
    # Short fades: an excerpt cut mid-note would otherwise start and end with a click.
    chains.append(f"[{audio}:a]aresample=44100,afade=t=in:d=0.5,afade=t=out:st={fade_out:.3f}:d=0.5[a]")
    gop = FPS * KEYFRAME_INTERVAL_S
    return [
        "ffmpeg", "-v", "error", "-nostdin", "-y", *inputs,
        "-filter_complex", ";".join(chains), "-map", "[v]", "-map", "[a]",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", "-r", str(FPS),
        # A keyframe exactly every 2 s and nowhere else: no scene-cut keyframes at slide changes.
        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-force_key_frames", f"expr:gte(t,n_forced*{KEYFRAME_INTERVAL_S})",
        "-c:a", "aac", "-b:a", "128k", "-ar", "44100", "-ac", "2",
        "-t", f"{item.duration:.3f}", "-threads", "1", "-movflags", "+faststart", "-f", "mp4", str(output),
    ]


def _zoompan(shot: Shot, size: str) -> str:
    """A slow zoom or pan over a still picture for ``shot.length`` seconds."""
    frames = max(1, round(shot.length * FPS))
    progress = f"(on/{max(1, frames - 1)})"
    zoom, x, y = {
        "zoom-in": (f"1+0.2*{progress}", "(iw-iw/zoom)/2", "(ih-ih/zoom)/2"),
        "zoom-out": (f"1.2-0.2*{progress}", "(iw-iw/zoom)/2", "(ih-ih/zoom)/2"),
        "pan-left": ("1.2", f"(iw-iw/zoom)*(1-{progress})", "(ih-ih/zoom)/2"),
        "pan-right": ("1.2", f"(iw-iw/zoom)*{progress}", "(ih-ih/zoom)/2"),
    }[shot.motion]
    return f"zoompan=z='{zoom}':x='{x}':y='{y}':d={frames}:s={size}:fps={FPS}"


def _cached_picture(picture: Asset, sources: Path) -> Path:
    """The picture scaled and cropped to 1280x720 JPEG, made once: wallpapers reach 5120x2880 and SVG."""
    digest = hashlib.sha256(picture.key.encode()).hexdigest()[:12]
    target = sources / "pictures" / f"{Path(picture.member).stem}-{digest}.jpg"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    width, height = _PICTURE_SIZE
    staged = target.with_name(f".{target.name}.{os.getpid()}.{id(picture)}.jpg")
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", str(picture.path), "-frames:v", "1",
           "-vf", f"scale={width}:{height}:force_original_aspect_ratio=increase,crop={width}:{height}",
           "-q:v", "2", str(staged)]
    done = subprocess.run(cmd, capture_output=True)
    if done.returncode != 0:
        staged.unlink(missing_ok=True)
        raise MediaError(picture.key, f"picture could not be decoded ({_last_line(done.stderr)})")
    staged.replace(target)
    return target


def encode_item(item: Item, out_dir: Path, sources: Path) -> Path:
    """Render one item into ``out_dir``, through a temporary name so that an interrupted build leaves no item."""
    target = out_dir / item.file_name
    staged = target.with_name(f".{target.stem}.part.mp4")
    done = subprocess.run(encode_command(item, staged, sources), capture_output=True)
    if done.returncode != 0:
        staged.unlink(missing_ok=True)
        raise MediaError(item.file_name, f"ffmpeg could not encode it ({_last_line(done.stderr)})")
    staged.replace(target)
    return target


def _last_line(stderr: bytes) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "ffmpeg failed"
