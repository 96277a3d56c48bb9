"""Compute tests/data/musicnn_reference.json with the original musicnn (TensorFlow + librosa). Not run by the tests.

Run it in a separate environment, never mvr's (musicnn pins numpy<1.17 in its metadata, so it goes in with
--no-deps):

    python3.11 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu==2.15.1 'numpy<2' librosa==0.11.0
    /tmp/tfenv/bin/pip install --no-deps musicnn==0.1.0
    /tmp/tfenv/bin/python tests/data/musicnn_make_reference.py ~/.cache/mvr/sources/debian \
        tests/data/musicnn_reference.json [full.npz]

The first argument is where mvr's benchmark builder keeps the unpacked Debian packages (``mvr.dataset`` fetches
them; the tests do so on first use). Each excerpt is decoded by ffmpeg to 16 kHz mono float32, exactly as the test
decodes it (the same command line, stored in the JSON), and the samples go to musicnn's own code path: librosa's
mel spectrogram, the float16 quantisation, ``log10(10000 x + 1)``, 187-frame patches, then ``models.define_model``
restored from the wheel's checkpoint. ``librosa.load``'s resampler is left out on purpose: mvr decodes with ffmpeg,
so both sides must see the same 16 kHz samples for the comparison to test the port and not the resampler.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import librosa
import numpy as np
import tensorflow as tf
from musicnn import configuration as config
from musicnn import models

tf.compat.v1.disable_eager_execution()

EXCERPTS = [
    {"name": "orchestral", "package": "wesnoth-1.16-music",
     "member": "usr/share/games/wesnoth/1.16/data/core/music/battle.ogg", "start": 30.0, "duration": 10.0},
    {"name": "industrial", "package": "nexuiz-music",
     "member": "usr/share/games/nexuiz/data/music.pk3.d/sound/cdtracks/brainsukker.ogg", "start": 30.0,
     "duration": 10.0},
    {"name": "ambient", "package": "warzone2100-music",
     "member": "usr/share/games/warzone2100/music/albums/aftermath_soundtrack/track17.opus", "start": 30.0,
     "duration": 10.0},
]
MODELS = ["MSD_musicnn", "MTT_musicnn", "MTT_vgg", "MSD_vgg"]
# The log-mel frames stored for the preprocessing test: the edges (padding) and a few inside.
MEL_FRAMES = [0, 1, 300, 624]
# The layer each model's embedding is taken from (VGG's pool5 averaged over its two time steps).
EMBEDDING = {"MSD_musicnn": "penultimate", "MTT_musicnn": "penultimate", "MTT_vgg": "pool5", "MSD_vgg": "pool5"}


def ffmpeg_args(source: Path, start: float, duration: float) -> list[str]:
    """The decoding command; the test builds the same one (recorded in the JSON as ``ffmpeg``)."""
    return ["ffmpeg", "-v", "error", "-nostdin", "-ss", f"{start:g}", "-t", f"{duration:g}", "-i", str(source),
            "-map", "0:a:0", "-ac", "1", "-ar", "16000", "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]


def musicnn_log_mel(audio: np.ndarray) -> np.ndarray:
    """musicnn.extractor.batch_data's representation, from samples instead of a file."""
    rep = librosa.feature.melspectrogram(y=audio, sr=config.SR, hop_length=config.FFT_HOP,
                                         n_fft=config.FFT_SIZE, n_mels=config.N_MELS).T
    rep = rep.astype(np.float16)
    return np.log10(10000 * rep + 1)  # numpy 1 promotes float16 * 10000 to float32


def run_model(model: str, batch: np.ndarray) -> dict[str, np.ndarray]:
    """musicnn.extractor.extractor's graph and restore, on all patches at once."""
    labels = config.MTT_LABELS if "MTT" in model else config.MSD_LABELS
    tf.compat.v1.reset_default_graph()
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, 187, config.N_MELS])
        is_training = tf.compat.v1.placeholder(tf.bool)
        out = models.define_model(x, is_training, model, len(labels))
        taggram = tf.nn.sigmoid(out[0])
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver().restore(sess, os.path.dirname(models.__file__) + "/" + model + "/")
        if "vgg" in model:
            values = sess.run([taggram, out[5]], feed_dict={x: batch, is_training: False})
            return {"taggram": values[0], "pool5": values[1][:, :, 0, :]}  # (n, 2, 1, 128) -> (n, 2, 128)
        values = sess.run([taggram, out[8], out[6], out[7]], feed_dict={x: batch, is_training: False})
        return dict(zip(["taggram", "penultimate", "mean_pool", "max_pool"], values))


def compact(values: np.ndarray) -> list[float]:
    """float32 to 7 significant digits (a relative rounding of 5e-8, far below the tests' tolerance)."""
    return [float(f"{v:.7g}") for v in np.asarray(values, dtype=np.float32).reshape(-1)]


def main(debian: Path, target: Path, full: Path | None) -> None:
    result = {"musicnn": "0.1.0", "tensorflow": tf.__version__, "librosa": librosa.__version__,
              "numpy": np.__version__, "mel_frames": MEL_FRAMES, "embedding_layers": EMBEDDING, "excerpts": []}
    arrays = {}
    for excerpt in EXCERPTS:
        source = debian / excerpt["package"] / excerpt["member"]
        raw = subprocess.run(ffmpeg_args(source, excerpt["start"], excerpt["duration"]), check=True,
                             capture_output=True).stdout
        audio = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        mel = musicnn_log_mel(audio)
        count = mel.shape[0] // 187
        batch = mel[:count * 187].reshape(count, 187, config.N_MELS)
        entry = dict(excerpt, samples=int(audio.size), samples_sha256=hashlib.sha256(raw).hexdigest(),
                     ffmpeg_version=subprocess.run(["ffmpeg", "-version"], capture_output=True,
                                                   text=True).stdout.split("\n")[0],
                     frames=int(mel.shape[0]), patches=int(count),
                     log_mel={str(i): compact(mel[i]) for i in MEL_FRAMES}, models={})
        arrays[f"{excerpt['name']}/log_mel"] = mel.astype(np.float32)
        for model in MODELS:
            outputs = run_model(model, batch)
            layer = outputs[EMBEDDING[model]]
            embedding = layer.mean(axis=1) if layer.ndim == 3 else layer  # per patch
            # Small enough to store: the clip's embedding and taggram (means over patches), and one patch's.
            entry["models"][model] = {"embedding": compact(embedding.mean(axis=0)),
                                      "taggram": compact(outputs["taggram"].mean(axis=0)),
                                      "patch0": compact(embedding[0])}
            arrays.update({f"{excerpt['name']}/{model}/{k}": v for k, v in outputs.items()})
            print(excerpt["name"], model, {k: v.shape for k, v in outputs.items()}, file=sys.stderr)
        result["excerpts"].append(entry)
    target.write_text(json.dumps(result, separators=(",", ":")) + "\n")
    if full is not None:  # every output of every patch, for measuring the port (not stored in the repository)
        np.savez_compressed(full, **arrays)


if __name__ == "__main__":
    main(Path(sys.argv[1]).expanduser(), Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None)
