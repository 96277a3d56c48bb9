"""Time mvr's MusiCNN embeddings (mvr.features.musicnn): a 30 s clip and a 4-minute track, per step and per model.

The music is real: Nexuiz's "brainsukker" (Debian's ``nexuiz-music``, GPL-2+, 7:40), fetched by mvr's benchmark
builder into ``${MVR_CACHE:-~/.cache/mvr}/sources``; the clip is its 30 s from 60 s on, the track its first 240 s,
both cut with ffmpeg to 44.1 kHz stereo 16-bit WAV (as mvr's collections carry their audio) and kept in
``${MVR_CACHE}/bench/musicnn``. For each model the steps are timed apart, in a warm process (the model loaded):

- ``decode``: ffmpeg to 16 kHz mono float32 (a subprocess: its CPU time is the child's),
- ``log_mel``: the numpy mel spectrogram, float16 quantisation and log,
- ``network``: all patches through ONNX Runtime, in batches of ``--batch`` patches,
- ``total``: :func:`mvr.features.musicnn.musicnn_vector`, end to end,

with wall-clock and this process's CPU seconds, best of ``--repeat`` runs. ``--threads`` sets ONNX Runtime's
intra-op threads (1 by default: indexing runs the audio beside the pictures). The one-time costs (fetching the
wheel, unpacking it, building the ONNX file) are timed once, in a fresh temporary cache, with ``--cold``.

Usage::

    python benchmarks/bench_musicnn.py [--repeat 3] [--threads 1] [--batch 8] [--models MSD_musicnn,MTT_vgg] [--cold]

The last line printed is one JSON object with every figure.

With ``--collection DIR`` (a folder made by ``mvr dataset build``) it measures retrieval instead of time: the
leave-one-out precision@5 by label of each model's default layer, mean over patches, cosine, with the query's own
group (the other excerpt of its track) never ranked, as ``mvr evaluate`` counts it; pyAudioAnalysis' 136-d vector
(``mvr.audio``, braycurtis and cosine) beside it::

    mvr dataset build /tmp/mixed-small --mode mixed --size small
    python benchmarks/bench_musicnn.py --collection /tmp/mixed-small [--models MSD_musicnn,MTT_musicnn]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mvr.config import RuntimeSettings
from mvr.dataset.sources import music_tracks, sources_dir
from mvr.evaluation.scoring import score_candidates
from mvr.features import musicnn
from mvr.features import pyaudioanalysis as audio
from mvr.parallel import cpu_count
from mvr.retrieval.fusion import Pool
from mvr.store import Video

# A benchmark is an edge of mvr: it reads where the cache is from the environment, once.
CACHE = RuntimeSettings.from_environment().cache_dir

TRACK = ("industrial", "usr/share/games/nexuiz/data/music.pk3.d/sound/cdtracks/brainsukker.ogg")
CUTS = {"clip_30s": (60.0, 30.0), "track_4min": (0.0, 240.0)}


def cut(name: str) -> Path:
    """The benchmark's WAV file ``name`` (a key of CUTS), made once."""
    target = CACHE / "bench" / "musicnn" / f"{name}.wav"
    if not target.exists():
        style, member = TRACK
        source = next(t for t in music_tracks(style, sources_dir(CACHE)) if t.member == member)
        start, length = CUTS[name]
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".{target.name}.part")
        subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-ss", f"{start:g}", "-t", f"{length:g}", "-i",
                        str(source.path), "-map", "0:a:0", "-ar", "44100", "-ac", "2", "-c:a", "pcm_s16le",
                        "-f", "wav", str(staged)], check=True)
        os.replace(staged, target)
    return target


def timed(work: Callable[[], object], repeat: int) -> dict[str, float]:
    """Best wall-clock and best CPU seconds (this process, children included) of ``repeat`` runs."""
    walls, cpus = [], []
    for _ in range(repeat):
        before, start = _cpu(), time.perf_counter()
        work()
        walls.append(time.perf_counter() - start)
        cpus.append(_cpu() - before)
    return {"wall_s": round(min(walls), 4), "cpu_s": round(min(cpus), 4)}


def _cpu() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def precision_at(vectors: np.ndarray, rows: list[dict[str, str]], metric: str,
                 k: int = 5) -> tuple[float, dict[str, float]]:
    """Leave-one-out precision@k by label, the query's group excluded, as ``mvr evaluate`` scores it."""
    videos = {i: Video(id=i, title=row["title"], source=row["source"], label=row["label"] or None,
                       group=row["group"] or None, duration=0.0, content_hash=row["source"], media_path=Path())
              for i, row in enumerate(rows)}
    pool = Pool(ids=np.arange(len(rows), dtype=np.int64), matrices={"audio": vectors.astype(np.float64)})
    (found,) = score_candidates(pool, videos, "audio", k=k, metrics=(metric,))
    return round(found.precision, 3), {label: round(p, 3) for label, p in found.labels.items()}


def measure_collection(folder: Path, models: list[str], threads: int, every_layer: bool = False
                       ) -> dict[str, object]:
    """Precision@5 of pyAudioAnalysis and of each model (its default layer, mean over patches, cosine); with
    ``every_layer``, each layer of each model, pooled by the mean or by mean and std, with cosine and correlation."""
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    paths = [folder / row["source"] for row in rows]
    result: dict[str, object] = {"collection": str(folder), "items": len(rows), "rows": {}}
    handcrafted = "pyAudioAnalysis (136-d)"
    vectors = {handcrafted: np.stack([audio.audio_vector(p) for p in paths])}
    runs = [(handcrafted, "braycurtis"), (handcrafted, "cosine")]
    for name in models:
        model = musicnn.load_model(name, cache_dir=CACHE, threads=threads)
        if not every_layer:
            vectors[model.extractor] = np.stack([musicnn.musicnn_vector(p, model=model) for p in paths])
            runs.append((model.extractor, "cosine"))
            continue
        pooled: dict[str, list[np.ndarray]] = {}
        for path in paths:
            cut = musicnn.patches(musicnn.log_mel(musicnn.decode_16k(path)))
            for layer, out in model.outputs(cut).items():
                if layer == "taggram":
                    continue
                out = out.reshape(len(cut), -1).astype(np.float64)
                pooled.setdefault(f"{name} {layer} mean", []).append(out.mean(axis=0))
                pooled.setdefault(f"{name} {layer} mean+std", []).append(
                    np.concatenate([out.mean(axis=0), out.std(axis=0)]))
        for key, found in pooled.items():
            vectors[key] = np.stack(found)
            runs += [(key, "cosine"), (key, "correlation")]
    for space, metric in runs:
        precision, per_label = precision_at(vectors[space], rows, metric)
        result["rows"][f"{space} {metric}"] = {"precision@5": precision, "labels": per_label}
        print(f"{space:60s} {metric:12s} P@5 {precision:.3f}  {per_label}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--models", default=",".join(musicnn.MODELS))
    parser.add_argument("--cold", action="store_true", help="also time fetching and converting, in a fresh cache")
    parser.add_argument("--collection", type=Path, help="measure precision@5 on this collection instead of time")
    parser.add_argument("--every-layer", action="store_true",
                        help="with --collection: every layer and pooling of each model, not its default")
    args = parser.parse_args()
    if args.collection:
        print(json.dumps(measure_collection(args.collection, args.models.split(","), args.threads,
                                            args.every_layer)))
        return
    result: dict[str, object] = {"cpus": cpu_count(), "load_1min": round(os.getloadavg()[0], 2),
                                 "machine": platform.processor() or platform.machine(), "threads": args.threads,
                                 "batch": args.batch, "models": {}}
    files = {name: cut(name) for name in CUTS}
    if args.cold:
        with tempfile.TemporaryDirectory() as fresh:
            start = time.perf_counter()
            musicnn.ensure_weights(cache_dir=Path(fresh))
            fetched = time.perf_counter()
            musicnn.load_model(musicnn.DEFAULT_MODEL, cache_dir=Path(fresh))
            result["cold"] = {"fetch_and_unpack_s": round(fetched - start, 2),
                              "read_convert_open_s": round(time.perf_counter() - fetched, 2)}
            shutil.rmtree(fresh, ignore_errors=True)
    for name in args.models.split(","):
        model = musicnn.load_model(name, cache_dir=CACHE, threads=args.threads)
        rows = {}
        for label, path in files.items():
            samples = musicnn.decode_16k(path)
            mel = musicnn.log_mel(samples)
            cut_patches = musicnn.patches(mel)
            rows[label] = {
                "patches": len(cut_patches),
                "decode": timed(lambda: musicnn.decode_16k(path), args.repeat),
                "log_mel": timed(lambda: musicnn.log_mel(samples), args.repeat),
                "network": timed(lambda: model.embed_patches(cut_patches, batch_size=args.batch), args.repeat),
                "total": timed(lambda: musicnn.musicnn_vector(path, model=model), args.repeat),
            }
            print(f"{name:12s} {label:10s} {len(cut_patches):3d} patches  " + "  ".join(
                f"{step} {rows[label][step]['wall_s']:.3f} s ({rows[label][step]['cpu_s']:.3f} cpu)"
                for step in ("decode", "log_mel", "network", "total")), flush=True)
        result["models"][name] = rows
    print(json.dumps(result))


if __name__ == "__main__":
    main()
