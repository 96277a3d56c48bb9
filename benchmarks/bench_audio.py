"""Time mvr's audio features against pyAudioAnalysis 0.3.14, the study's implementation, side by side.

Two measurements, both on real music (Debian's ``asc-music``: the soundtrack of Advanced Strategic Command, GPL-2+),
cut with ffmpeg to 16-bit stereo WAV at 44.1 kHz and kept in ``${MVR_CACHE:-~/.cache/mvr}/bench/audio``:

1. The segment matrix of a 180 s track (50 ms frames, 1 s segments, as in the study):
   ``mvr.features.pyaudioanalysis.segment_features`` against ``MidTermFeatures.mid_feature_extraction``, from the same
   samples in memory. The two outputs must agree
   within 1e-8 relative (and be 0 where pyAudioAnalysis gives 0).
2. One 10-minute file's audio vector, end to end: the command ``mvr features FILE --modality audio`` (a new
   process: start-up, imports, ffprobe and ffmpeg decoding included) against pyAudioAnalysis in a warm process
   (reading the WAV, ``stereo_to_mono``, ``mid_feature_extraction``, median over segments).

Timings are the best of several runs, in wall-clock and in CPU seconds; the goals are on wall clock. The
machine's core count and load are printed with them: mvr spreads its frames over the cores, and other work on
the machine slows both sides (the CPU seconds hardly depend on it).

Usage::

    python benchmarks/bench_audio.py [--repeat 5] [--oracle-repeat 3]

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mvr.config import RuntimeSettings
from mvr.features import pyaudioanalysis

MUSIC_PACKAGE = "asc-music"
MUSIC_DIR = "usr/share/games/asc/music"
TRACKS = ("frontiers.mp3", "machine_wars.mp3")  # 441 s and 291 s, 22.05 kHz stereo MP3
RATE = 44100
MATRIX_SECONDS = 180
COMMAND_SECONDS = 600
GOALS = {"matrix": 30.0, "command": 20.0}


def music_file(name: str, cache_dir: Path) -> Path:
    """One MP3 of the Debian package, fetched with apt-get once (shared with tests/test_audio.py's cache)."""
    folder = cache_dir / "audio-test"
    target = folder / name
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        subprocess.run(["apt-get", "download", MUSIC_PACKAGE], cwd=tmp, check=True, capture_output=True)
        deb = next(Path(tmp).glob("*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), f"{tmp}/root"], check=True, capture_output=True)
        for member in TRACKS:
            if not (folder / member).exists():
                Path(tmp, "root", MUSIC_DIR, member).replace(folder / member)
    return target


def wav(seconds: int, cache_dir: Path) -> Path:
    """The first ``seconds`` of the tracks played one after the other, as 44.1 kHz stereo 16-bit WAV."""
    target = cache_dir / "bench" / "audio" / f"asc-music-{seconds}s-{RATE}Hz-stereo.wav"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    sources = [music_file(name, cache_dir) for name in reversed(TRACKS)]  # machine_wars first: 180 s fit in it
    inputs = [arg for path in sources for arg in ("-i", str(path))]
    joined = "".join(f"[{i}:a]" for i in range(len(sources))) + f"concat=n={len(sources)}:v=0:a=1"
    staged = target.with_name(f".{target.name}.part")
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *inputs, "-filter_complex", joined,
                    "-t", str(seconds), "-ar", str(RATE), "-ac", "2", "-c:a", "pcm_s16le", "-f", "wav",
                    str(staged)], check=True, capture_output=True)
    staged.replace(target)
    return target


def best_of(repeat: int, run: Callable[[], object]) -> tuple[float, float, object]:
    """Shortest wall time and shortest CPU time of ``repeat`` runs, and the last result.

    CPU time is this process's (all its threads) plus that of the child processes it waited for (a command and
    the ffmpeg it starts): unlike wall time, it hardly depends on what else the machine is running.
    """
    best_wall, best_cpu, result = float("inf"), float("inf"), None
    for _ in range(repeat):
        cpu_before, wall_before = _cpu_seconds(), time.perf_counter()
        result = run()
        best_wall = min(best_wall, time.perf_counter() - wall_before)
        best_cpu = min(best_cpu, _cpu_seconds() - cpu_before)
    return best_wall, best_cpu, result


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def max_relative_difference(got: np.ndarray, expected: np.ndarray) -> float:
    """Largest ``|got - expected| / |expected|``; where ``expected`` is 0, ``got`` must be 0 too (else inf)."""
    assert got.shape == expected.shape, (got.shape, expected.shape)
    difference = np.abs(got - expected)
    scale = np.abs(expected)
    relative = np.divide(difference, scale, out=np.where(difference == 0, 0.0, np.inf), where=scale != 0)
    return float(relative.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each mvr measurement (best is kept)")
    parser.add_argument("--oracle-repeat", type=int, default=2, help="runs of each pyAudioAnalysis measurement")
    args = parser.parse_args()
    cache_dir = RuntimeSettings.from_environment().cache_dir  # $MVR_CACHE, or ~/.cache/mvr

    from pyAudioAnalysis import MidTermFeatures, audioBasicIO

    def oracle_read(path: Path) -> tuple[int, np.ndarray]:
        rate, signal = audioBasicIO.read_audio_file(str(path))
        return rate, audioBasicIO.stereo_to_mono(signal)

    def oracle_segments(signal: np.ndarray, rate: int) -> np.ndarray:
        return MidTermFeatures.mid_feature_extraction(signal, rate, round(rate * 1.0), round(rate * 1.0),
                                                      round(rate * 0.050), round(rate * 0.050))[0]

    # 1. The segment matrix of 180 s, from the same samples in memory.
    short_wav, long_wav = wav(MATRIX_SECONDS, cache_dir), wav(COMMAND_SECONDS, cache_dir)
    rate, signal = oracle_read(short_wav)
    pyaudioanalysis.segment_features(signal, rate)  # builds the cached filter banks, as any long-running indexer would
    mvr_matrix_s, mvr_matrix_cpu, got = best_of(args.repeat, lambda: pyaudioanalysis.segment_features(signal, rate))
    paa_matrix_s, paa_matrix_cpu, expected = best_of(args.oracle_repeat, lambda: oracle_segments(signal, rate))
    matrix_diff = max_relative_difference(got, expected)
    assert matrix_diff <= 1e-8, f"mvr differs from pyAudioAnalysis by {matrix_diff:.3g} relative"

    # 2. One 10-minute file, end to end: mvr's command in a fresh process, pyAudioAnalysis in this warm one.
    mvr_bin = Path(sys.executable).parent / "mvr"
    if mvr_bin.exists():
        command = [str(mvr_bin), "features", str(long_wav), "--modality", "audio", "--json"]
        command_label = "mvr features FILE --modality audio"
    else:  # the CLI is not installed: time the same work as a one-line program
        command = [sys.executable, "-c", "import json, sys; from mvr.features.pyaudioanalysis import audio_vector; "
                   "print(json.dumps({'vector': audio_vector(sys.argv[1]).tolist()}))", str(long_wav)]
        command_label = "python -c 'audio_vector(FILE)' (no mvr CLI installed)"
    bare = [sys.executable, "-c",
            "import sys; from mvr.features.pyaudioanalysis import audio_vector; audio_vector(sys.argv[1])",
            str(long_wav)]

    def run_command(argv: list[str]) -> str:
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    mvr_command_s, mvr_command_cpu, printed = best_of(args.repeat, lambda: run_command(command))
    mvr_bare_s, mvr_bare_cpu, _ = best_of(args.repeat, lambda: run_command(bare))

    def oracle_vector() -> np.ndarray:
        long_rate, long_signal = oracle_read(long_wav)
        return np.median(oracle_segments(long_signal, long_rate), axis=1)

    paa_command_s, paa_command_cpu, paa_vector = best_of(args.oracle_repeat, oracle_vector)
    mvr_vector = np.asarray(json.loads(printed)["vector"])
    vector_diff = max_relative_difference(mvr_vector, paa_vector.astype(np.float32).astype(np.float64))
    assert vector_diff <= 1e-6, f"mvr's vector differs from pyAudioAnalysis' by {vector_diff:.3g} relative"

    rows = [
        (f"segment matrix, {MATRIX_SECONDS} s @ {RATE} Hz", mvr_matrix_s, paa_matrix_s, mvr_matrix_cpu,
         paa_matrix_cpu, GOALS["matrix"]),
        (f"command, {COMMAND_SECONDS} s WAV", mvr_command_s, paa_command_s, mvr_command_cpu, paa_command_cpu,
         GOALS["command"]),
        ("  of which audio_vector in a bare process", mvr_bare_s, paa_command_s, mvr_bare_cpu, paa_command_cpu,
         None),
    ]
    print(f"cores: {os.cpu_count()}, load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"python {platform.python_version()}, numpy {np.__version__}")
    print(f"mvr command: {command_label}; pyAudioAnalysis: in this process (read WAV, features, median)")
    print(f"max relative difference to pyAudioAnalysis: segment matrix {matrix_diff:.3g}, "
          f"vector (float32) {vector_diff:.3g}")
    print(f"{'measurement':<42} {'mvr':>8} {'pAA':>8} {'speed-up':>8} {'goal':>5} | "
          f"{'mvr cpu':>8} {'pAA cpu':>8} {'cpu ratio':>9}")
    for name, mvr_s, paa_s, mvr_cpu, paa_cpu, goal in rows:
        print(f"{name:<42} {mvr_s:>7.3f}s {paa_s:>7.3f}s {paa_s / mvr_s:>7.1f}x "
              f"{'' if goal is None else f'{goal:.0f}x':>5} | {mvr_cpu:>7.3f}s {paa_cpu:>7.3f}s "
              f"{paa_cpu / mvr_cpu:>8.1f}x")
    matrix_ratio, command_ratio = paa_matrix_s / mvr_matrix_s, paa_command_s / mvr_command_s
    print(json.dumps({
        "rate_hz": RATE,
        "matrix_seconds": MATRIX_SECONDS,
        "command_seconds": COMMAND_SECONDS,
        "mvr_matrix_s": round(mvr_matrix_s, 4),
        "pyaudioanalysis_matrix_s": round(paa_matrix_s, 4),
        "matrix_speedup": round(matrix_ratio, 1),
        "mvr_matrix_cpu_s": round(mvr_matrix_cpu, 4),
        "pyaudioanalysis_matrix_cpu_s": round(paa_matrix_cpu, 4),
        "matrix_cpu_ratio": round(paa_matrix_cpu / mvr_matrix_cpu, 1),
        "matrix_max_rel_diff": matrix_diff,
        "mvr_command": command_label,
        "mvr_command_s": round(mvr_command_s, 4),
        "mvr_command_cpu_s": round(mvr_command_cpu, 4),
        "mvr_audio_vector_process_s": round(mvr_bare_s, 4),
        "pyaudioanalysis_in_process_s": round(paa_command_s, 4),
        "pyaudioanalysis_in_process_cpu_s": round(paa_command_cpu, 4),
        "command_speedup": round(command_ratio, 1),
        "command_cpu_ratio": round(paa_command_cpu / mvr_command_cpu, 1),
        "vector_max_rel_diff": vector_diff,
        "goals": GOALS,
        "goals_met": {"matrix": matrix_ratio >= GOALS["matrix"], "command": command_ratio >= GOALS["command"]},
        "repeat": args.repeat,
        "oracle_repeat": args.oracle_repeat,
        "cores": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    if shutil.which("ffmpeg") is None:
        sys.exit("ffmpeg is needed (Debian: apt-get install ffmpeg)")
    main()
