"""Peak memory while indexing a 60-minute music video: the whole command, and its audio and visual parts.

The video is ``bench_video.py``'s 4-minute 1280x720 H.264 + AAC music video played 15 times over, joined with
ffmpeg's concat demuxer without re-encoding, and kept in ``${MVR_CACHE:-~/.cache/mvr}/bench``. Each row runs in a
new Python process, which reports its own peak resident set size (``getrusage``'s ``ru_maxrss``, what
``/usr/bin/time -v`` calls "Maximum resident set size"); the sum over the process tree, ffmpeg and ffprobe
included, is also sampled every 20 ms while it runs. (The children's own ``ru_maxrss`` is no use here: a child
started with ``vfork`` reports its parent's size at the time.) The rows:

1. ``mvr index VIDEO`` into a new catalog: the goal is under 1.5 GB;
2. the audio vector as mvr computes it: decoded once into a temporary file, features computed chunk by chunk;
3. the same features from the whole signal in memory (``mvr.media.decode_audio`` +
   ``mvr.features.pyaudioanalysis.segment_features``), the way the audio was read before: side by side with row 2,
   on the same file, with the same numbers;
4. the visual vector (at most 64 keyframes are kept while ffmpeg streams the rest past).

Usage::

    python benchmarks/bench_memory.py [--video FILE]

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from mvr import media
from mvr.config import RuntimeSettings

sys.path.insert(0, str(Path(__file__).parent))
from bench_video import VIDEO_NAME, bench_video  # noqa: E402  (a sibling script, not a package)

REPEATS = 15  # 15 x 4 minutes
GOAL_BYTES = 1.5e9
MIB = 1 << 20

_REPORT = """
import resource
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def long_video(cache_dir: Path) -> Path:
    """The 60-minute video, joined once from the 4-minute benchmark video, under mvr's cache folder."""
    target = cache_dir / "bench" / VIDEO_NAME.replace("240s", f"{240 * REPEATS}s-joined")
    if target.exists():
        return target
    part = bench_video(cache_dir)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        listing = Path(tmp) / "parts.txt"
        listing.write_text("".join(f"file '{part}'\n" for _ in range(REPEATS)))
        staged = Path(tmp) / target.name
        subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-f", "concat", "-safe", "0", "-i", str(listing),
                        "-c", "copy", "-movflags", "+faststart", str(staged)], check=True)
        staged.replace(target)
    return target


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants now (0 once it is gone)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/status") as handle:
                total += next((int(line.split()[1]) * 1024 for line in handle if line.startswith("VmRSS:")), 0)
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    pending += [int(child) for child in handle.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def measure(code: str) -> dict[str, float]:
    """Run ``code`` in a new Python process; its peak RSS, the tree's (sampled), and the wall time."""
    program = textwrap.dedent(code) + _REPORT
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    tree_peak = 0
    while proc.poll() is None:
        tree_peak = max(tree_peak, tree_rss(proc.pid))
        time.sleep(0.02)
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}):\n{code}\n{err}")
    peak_kb = int(out.strip().splitlines()[-1])
    return {"self_bytes": peak_kb * 1024, "tree_bytes": tree_peak, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, help="measure this file instead of the 60-minute video")
    args = parser.parse_args()

    video = args.video or long_video(RuntimeSettings.from_environment().cache_dir)  # $MVR_CACHE, or ~/.cache/mvr
    info = media.probe(video)
    with tempfile.TemporaryDirectory(prefix="mvr-bench-memory-") as tmp:
        rows = {
            "index": ("mvr index VIDEO (whole command)", f"""
                from mvr.cli import main
                assert main(["index", {str(video)!r}, "--catalog", {str(Path(tmp) / "catalog")!r}, "--quiet"]) == 0
            """),
            "audio_streamed": ("audio vector, decoded to a temporary file", f"""
                from mvr.features.pyaudioanalysis import audio_vector
                audio_vector({str(video)!r})
            """),
            "audio_in_memory": ("audio features of the whole signal in memory", f"""
                import numpy as np
                from mvr import media
                from mvr.features import pyaudioanalysis
                signal, rate = media.decode_audio({str(video)!r})
                np.median(pyaudioanalysis.segment_features(signal, rate), axis=1)
            """),
            "visual": ("visual vector (64 keyframes, EfficientNet-Lite0)", f"""
                from mvr.config import RuntimeSettings, prepare_process_environment
                from mvr.features import cnn
                from mvr.features.runtime import CnnModel
                prepare_process_environment()
                settings = RuntimeSettings.from_environment()
                backbone = cnn.get_backbone(cnn.DEFAULT_BACKBONE, torch_hub_dir=settings.torch_hub_dir)
                cnn.visual_vector({str(video)!r}, model=CnnModel(backbone, settings))
            """),
        }
        figures = {}
        for name, (label, code) in rows.items():
            figures[name] = measure(code)
            print(f"{label}: {figures[name]['self_bytes'] / MIB:.0f} MiB", file=sys.stderr)

    print(f"video: {video.name}, {info.duration / 60:.1f} min, {info.width}x{info.height}, audio "
          f"{info.sample_rate} Hz x {info.channels}; {os.cpu_count()} cores")
    print(f"{'measurement':<50} {'peak RSS':>9} {'tree (sampled)':>14} {'wall s':>7}")
    for name, (label, _) in rows.items():
        row = figures[name]
        print(f"{label:<50} {row['self_bytes'] / MIB:>5.0f} MiB {row['tree_bytes'] / MIB:>10.0f} MiB "
              f"{row['seconds']:>7.1f}")
    ratio = figures["audio_in_memory"]["self_bytes"] / figures["audio_streamed"]["self_bytes"]
    print(f"audio: the whole signal in memory needs {ratio:.1f}x the peak of the streamed features")
    print(json.dumps({
        "video": {"file": video.name, "duration_s": round(info.duration, 1), "width": info.width,
                  "height": info.height},
        **{name: {key: round(value / MIB, 1) if key.endswith("bytes") else round(value, 2)
                  for key, value in row.items()} for name, row in figures.items()},
        "units": "MiB and seconds",
        "audio_in_memory_over_streamed": round(ratio, 2),
        "goal_bytes": GOAL_BYTES,
        "goal_met": figures["index"]["self_bytes"] < GOAL_BYTES,
        "cores": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
