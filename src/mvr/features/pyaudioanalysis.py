"""Audio features: pyAudioAnalysis 0.3.14's short-term and mid-term features, vectorized.

The study (section 3.1) describes each video's sound with pyAudioAnalysis: 34 features and their deltas on 50 ms
frames, then the mean and standard deviation of each over 1 s segments, 136 numbers per segment. This module
computes the same numbers, with the same quirks, and reduces them to one vector per video (the median over
segments). It follows ``ShortTermFeatures.feature_extraction`` and ``MidTermFeatures.mid_feature_extraction`` of
pyAudioAnalysis 0.3.14, which the tests use as an oracle, but works on many frames at once: a batched FFT,
filter banks as matrix products, reductions along rows. Frames go in chunks of 2**18 samples (6 s at 44.1 kHz),
read from the decoded file's temporary copy (``media.open_audio``) chunk by chunk, so that memory stays bounded on
long files, and the chunks run on threads. The results agree with
pyAudioAnalysis to ~1e-10 relative on real music (the agreement asked is 1e-8): where the order of
floating-point operations matters most (the DCT of the MFCCs, whose values near 0 would show any rounding
difference as a large relative one) it is pyAudioAnalysis' own; elsewhere products by reciprocals and matrix
products stand in for its divisions and per-frame dot products, and the spectral spread and flux are expanded
into sums taken once per frame, with pyAudioAnalysis' own way kept for the frames where that would cancel.

Quirks of pyAudioAnalysis kept on purpose, because the catalogued vectors must mean what the study's meant:

* the signal is scaled by 2**-15, its mean removed and divided by its largest magnitude (+1e-10), over the whole
  signal, before framing;
* the spectrum of a frame of ``w`` samples is ``|FFT|`` over the first ``w // 2`` bins, divided by ``w // 2``;
* the MFCC filter bank takes bin ``k`` to be ``k * rate / (w // 2)`` Hz (twice its real frequency);
* the chroma vector writes each bin's energy into a slot numbered by its pitch (the last bin of a pitch wins,
  pitches below 27.5 Hz wrap to the end), divides slot ``k`` by the bin count of the pitch of bin ``k``, and
  folds the slots modulo 12;
* the first frame's spectral flux is 0 (it is compared with itself) and its deltas are 0;
* a segment is ``round(segment / step)`` frames; segments start every ``round(segment_step / step)`` frames
  while frames remain, so the last ones may be shorter.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from threadpoolctl import threadpool_limits

from mvr import media
from mvr.errors import MediaError
from mvr.parallel import cpu_count, on_threads

AUDIO_EXTRACTOR = "pyaudioanalysis-0.3.14/st50ms-mt1s/median/v1"
AUDIO_DIMS = 136

_BASE_NAMES = (
    ["zcr", "energy", "energy_entropy", "spectral_centroid", "spectral_spread", "spectral_entropy",
     "spectral_flux", "spectral_rolloff"]
    + [f"mfcc_{i}" for i in range(1, 14)]
    + [f"chroma_{i}" for i in range(1, 13)]
    + ["chroma_std"]
)
SHORT_TERM_NAMES: tuple[str, ...] = tuple(_BASE_NAMES + ["delta " + name for name in _BASE_NAMES])
"""The 68 short-term feature names, spelled as pyAudioAnalysis spells them."""
FEATURE_NAMES: tuple[str, ...] = tuple(
    [f"{name}_mean" for name in SHORT_TERM_NAMES] + [f"{name}_std" for name in SHORT_TERM_NAMES]
)
"""The 136 segment feature names in pyAudioAnalysis' order: the 68 means, then the 68 standard deviations."""

# The study's settings (section 3.1): 50 ms frames every 50 ms, 1 s segments every 1 s.
_FRAME_S = 0.050
_SEGMENT_S = 1.0

_N_BASE = len(_BASE_NAMES)  # 34
_EPS = sys.float_info.epsilon  # pyAudioAnalysis' ShortTermFeatures.eps
_N_SUB_BLOCKS = 10  # sub-frames of the energy and spectral entropies
_ROLLOFF = 0.90
_N_MFCC = 13
_CHROMA_REF_HZ = 27.50
# The MFCC filter bank of scikits.talkbox, as pyAudioAnalysis uses it: 13 linear then 27 log-spaced triangles.
_MEL_LOW_HZ, _MEL_LIN_STEP, _MEL_LOG_STEP, _MEL_N_LIN, _MEL_N_LOG = 133.33, 200 / 3, 1.0711703, 13, 27
_N_MEL = _MEL_N_LIN + _MEL_N_LOG
# Samples per chunk of frames. Bounds memory on long files (a chunk's frames, spectra and temporaries stay within
# a few MB, so they also stay in cache) while keeping each numpy call large enough to amortise its overhead.
_CHUNK_SAMPLES = 1 << 18


def short_term_features(
    signal: np.ndarray,
    sample_rate: int,
    window: float = _FRAME_S,
    step: float = _FRAME_S,
    deltas: bool = True,
    threads: int | None = None,
) -> np.ndarray:
    """Compute pyAudioAnalysis' short-term features of a mono signal.

    Equals ``ShortTermFeatures.feature_extraction(signal, sample_rate, round(sample_rate * window),
    round(sample_rate * step), deltas)[0]``.

    Parameters
    ----------
    signal : np.ndarray
        Mono samples in 16-bit integer units (as ``media.decode_audio`` returns them), shape ``(n_samples,)``.
    sample_rate : int
        Samples per second.
    window, step : float
        Frame length and hop in seconds, rounded to whole samples as pyAudioAnalysis' own wrappers round them.
    deltas : bool
        Whether to append the 34 frame-to-frame differences.
    threads : int, optional
        Threads to spread the frames over; all the CPUs this process may use by default. The numbers do not
        depend on it.

    Returns
    -------
    np.ndarray
        float64, shape ``(68, n_frames)`` (``(34, n_frames)`` without deltas), rows named by
        ``SHORT_TERM_NAMES``. A frame starts every ``step`` while a whole window fits in the signal.

    Raises
    ------
    ValueError
        When the signal is shorter than one window, or the sample rate is too low for pyAudioAnalysis' filter
        banks (below about 6.4 kHz, where pyAudioAnalysis itself fails).
    """
    signal = np.asarray(signal, dtype=np.float64)
    if signal.ndim != 1:
        raise ValueError(f"expected a mono signal of shape (n_samples,), got shape {signal.shape}")
    return _short_term(_InMemory(signal, threads or cpu_count()), sample_rate, window, step, deltas, threads)


class _Samples(Protocol):
    """Mono samples in 16-bit integer units that can be read in stretches: in memory, or a media.DecodedAudio.

    ``read`` returns samples ``start .. stop - 1``, in ``out`` when it has to copy them somewhere.
    """

    size: int
    mean: float
    maximum: float
    minimum: float

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray: ...


class _InMemory:
    """A float64 signal in memory, read as :class:`_Samples`; its statistics are gathered when first asked for,
    a share of the signal a thread."""

    def __init__(self, signal: np.ndarray, threads: int) -> None:
        self._signal = signal
        self._threads = threads
        self.size = signal.size

    @cached_property
    def _statistics(self) -> tuple[float, float, float]:
        block = max(1 << 16, -(-self.size // self._threads))  # one block a thread, unless the signal is short

        def summarise(starts: Sequence[int]) -> list[tuple[float, float, float]]:
            parts = [self._signal[start : start + block] for start in starts]
            return [(part.sum(), part.max(), part.min()) for part in parts]

        found = [stats for share in on_threads(summarise, range(0, self.size, block), self._threads)
                 for stats in share]
        # Decoded audio samples are multiples of 1/2 (16-bit channels averaged): every partial sum is exact, so
        # the mean is numpy's to the bit however the signal is split.
        return (float(sum(total for total, _, _ in found) / self.size), float(max(high for _, high, _ in found)),
                float(min(low for _, _, low in found)))

    @property
    def mean(self) -> float:
        return self._statistics[0]

    @property
    def maximum(self) -> float:
        return self._statistics[1]

    @property
    def minimum(self) -> float:
        return self._statistics[2]

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Samples ``start .. stop - 1``: a view, so ``out`` is not needed."""
        return self._signal[start:stop]


def _short_term(samples: _Samples, sample_rate: int, window: float, step: float, deltas: bool,
                threads: int | None) -> np.ndarray:
    """:func:`short_term_features` of samples read chunk by chunk: memory holds a chunk per thread."""
    plan = _plan(int(sample_rate), _samples(window, sample_rate), _samples(step, sample_rate))
    n_frames = 0 if samples.size < plan.window else (samples.size - plan.window) // plan.step + 1
    if n_frames == 0:
        raise ValueError(f"signal of {samples.size} samples is shorter than one {plan.window}-sample window")
    offset, divisor = _normalisation(samples.mean, samples.maximum, samples.minimum)
    if not (math.isfinite(offset) and math.isfinite(divisor)):  # NaN and infinities reach the mean and extremes
        raise ValueError("signal has NaN or infinite samples")
    base = np.empty((_N_BASE, n_frames))
    per_chunk = max(1, _CHUNK_SAMPLES // plan.step)

    def run(share: Sequence[int]) -> None:
        scratch = _Scratch(plan, min(per_chunk, n_frames) + 1)
        for first in share:
            stop = min(first + per_chunk, n_frames)
            base[:, first:stop] = _frame_features(samples, offset, divisor, plan, first, stop, scratch)

    # One BLAS thread a worker: the chunks' matrix products are small, and OpenBLAS' own threads would compete
    # with the workers (and keep spinning between products).
    with threadpool_limits(1, user_api="blas"):
        # Each chunk re-reads the frame before it for the spectral flux, so the numbers do not depend on the split.
        on_threads(run, range(0, n_frames, per_chunk), threads or cpu_count())
    if not deltas:
        return base
    out = np.zeros((2 * _N_BASE, n_frames))
    out[:_N_BASE] = base
    np.subtract(base[:, 1:], base[:, :-1], out=out[_N_BASE:, 1:])  # the first frame's deltas stay 0
    return out


def segment_features(
    signal: np.ndarray,
    sample_rate: int,
    segment: float = _SEGMENT_S,
    segment_step: float = _SEGMENT_S,
    window: float = _FRAME_S,
    step: float = _FRAME_S,
    threads: int | None = None,
) -> np.ndarray:
    """Compute pyAudioAnalysis' mid-term features: mean and std of the short-term features per segment.

    Equals ``MidTermFeatures.mid_feature_extraction(signal, sample_rate, round(sample_rate * segment),
    round(sample_rate * segment_step), round(sample_rate * window), round(sample_rate * step))[0]``
    (pyAudioAnalysis also maps NaN to 0 there, but finite samples give no NaN).

    Parameters
    ----------
    signal : np.ndarray
        Mono samples in 16-bit integer units, shape ``(n_samples,)``.
    sample_rate : int
        Samples per second.
    segment, segment_step : float
        Segment length and hop, in seconds.
    window, step : float
        Short-term frame length and hop, in seconds.
    threads : int, optional
        As for ``short_term_features``.

    Returns
    -------
    np.ndarray
        float64, shape ``(136, n_segments)``, rows named by ``FEATURE_NAMES``. A segment starts every
        ``segment_step`` while frames remain, so the last segments may hold fewer frames.

    Raises
    ------
    ValueError
        As ``short_term_features``, or when a segment or its step is shorter than one frame step.
    """
    per_segment, per_step = _segment_frames(sample_rate, segment, segment_step, window, step)
    short = short_term_features(signal, sample_rate, window, step, deltas=True, threads=threads)
    return _segment_stats(short, per_segment, per_step)


def audio_vector(path: Path, info: media.MediaInfo | None = None, threads: int | None = None) -> np.ndarray:
    """Describe a file's sound by one vector: the median over its 1 s segments of the 136 segment features.

    Parameters
    ----------
    path : Path
        Any audio or video file ffmpeg can read; its first audio stream is used at its own sample rate.
    info : media.MediaInfo, optional
        ``media.probe(path)``, when the caller already has it.
    threads : int, optional
        As for ``short_term_features``.

    Returns
    -------
    np.ndarray
        float32, shape ``(136,)``, named by ``FEATURE_NAMES``.

    Raises
    ------
    MediaError
        When the file has no audio stream, its audio cannot be decoded or is shorter than one segment, its
        sample rate is too low for the features, or the features are not finite.
    """
    path = Path(path)
    info = info or media.probe(path)
    if not info.has_audio:
        raise MediaError(str(path), "no audio stream")
    # The samples stay in a temporary file, read a chunk at a time: an hour of audio needs no more memory than
    # a minute (but for the features of its 50 ms frames, about 1 MB a minute).
    with media.open_audio(path, info) as decoded:
        rate = decoded.sample_rate
        frame = _samples(_FRAME_S, rate)
        per_segment, per_step = _segment_frames(rate, _SEGMENT_S, _SEGMENT_S, _FRAME_S, _FRAME_S)
        if decoded.size < frame + (per_segment - 1) * frame:  # fewer frames than one whole segment
            raise MediaError(str(path), f"audio too short: {decoded.size / rate:.2f} s, "
                                        f"less than one {_SEGMENT_S:g} s segment")
        try:
            short = _short_term(decoded, rate, _FRAME_S, _FRAME_S, deltas=True, threads=threads)
        except ValueError as exc:
            raise MediaError(str(path), str(exc)) from None
    segments = _segment_stats(short, per_segment, per_step)
    vector = np.median(segments, axis=1).astype(np.float32)
    if not np.all(np.isfinite(vector)):
        raise MediaError(str(path), "audio features are not finite (NaN or infinity); the decoded audio is unusable")
    return vector


# --- constants of one sample rate and frame size -----------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """What depends only on the sample rate and the frame sizes: axes, filter banks, chroma mapping."""

    rate: int
    window: int
    step: int
    n_bins: int  # pyAudioAnalysis' num_fft: the FFT bins kept of each frame
    bin_hz: np.ndarray  # (n_bins,): each bin's frequency, as the centroid defines it
    bin_powers: np.ndarray  # (n_bins, 3): columns 1, bin_hz and bin_hz**2, for the sums of m, f m and f**2 m
    mel_bins: slice  # the bins the filter bank covers (a small share of them: 4-171 of 1102 at 44.1 kHz)
    mel_bank: np.ndarray  # (bins covered, 40): the filters, transposed
    chroma_bins: np.ndarray  # source bin of each chroma slot written, slots in increasing order
    chroma_divisors: np.ndarray  # what each of those slots is divided by
    chroma_columns: np.ndarray  # where each slot lands in the compact (rows x 12) fold
    chroma_rows: int


def _samples(seconds: float, sample_rate: int) -> int:
    """Seconds to samples as pyAudioAnalysis' wrappers convert them (Python's round: ties to even)."""
    return int(round(sample_rate * seconds))


def _segment_frames(rate: int, segment: float, segment_step: float, window: float, step: float) -> tuple[int, int]:
    """Frames per segment and per segment step, with mid_feature_extraction's formulas on sample counts."""
    win, hop = _samples(window, rate), _samples(step, rate)
    if hop < 1:
        raise ValueError(f"the short-term step ({step} s) is shorter than one sample")
    per_segment = round((_samples(segment, rate) - (win - hop)) / hop)
    per_step = int(round(_samples(segment_step, rate) / hop))
    if per_segment < 1 or per_step < 1:
        raise ValueError("a segment and its step must each span at least one short-term step")
    return per_segment, per_step


@lru_cache(maxsize=16)
def _plan(rate: int, window: int, step: int) -> _Plan:
    if window < 2 or step < 1:
        raise ValueError(f"the window ({window} samples) must be at least 2 samples and the step at least 1")
    n_bins = window // 2
    bin_hz = np.arange(1, n_bins + 1) * (rate / (2.0 * n_bins))
    bank = _mel_bank(rate, n_bins)
    covered = np.flatnonzero(bank.any(axis=0))
    mel_bins = slice(int(covered[0]), int(covered[-1]) + 1)
    return _Plan(
        rate=rate,
        window=window,
        step=step,
        n_bins=n_bins,
        bin_hz=bin_hz,
        bin_powers=np.stack([np.ones(n_bins), bin_hz, bin_hz**2], axis=1),
        mel_bins=mel_bins,
        mel_bank=np.ascontiguousarray(bank[:, mel_bins].T),
        **_chroma_plan(rate, n_bins),
    )


def _mel_bank(rate: int, n_bins: int) -> np.ndarray:
    """scikits.talkbox's triangular filters as pyAudioAnalysis builds them; shape ``(40, n_bins)``."""
    edges = np.zeros(_N_MEL + 2)
    edges[:_MEL_N_LIN] = _MEL_LOW_HZ + np.arange(_MEL_N_LIN) * _MEL_LIN_STEP
    edges[_MEL_N_LIN:] = edges[_MEL_N_LIN - 1] * _MEL_LOG_STEP ** np.arange(1, _MEL_N_LOG + 3)
    heights = 2.0 / (edges[2:] - edges[:-2])
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    # Each side covers bins floor(f0 * n_bins / rate) + 1 .. floor(f1 * n_bins / rate).
    rise_from = np.floor(low * n_bins / rate) + 1
    fall_from = np.floor(centre * n_bins / rate) + 1
    fall_to = np.floor(high * n_bins / rate) + 1
    if fall_to.max() > n_bins:
        raise ValueError(f"sample rate {rate} Hz is too low for pyAudioAnalysis' MFCC filter bank "
                         f"(its top filter ends at {edges[-1]:.0f} Hz)")
    bins = np.arange(n_bins)[None, :]
    hz = np.arange(n_bins) / (1.0 * n_bins) * rate
    rising = (bins >= rise_from) & (bins < fall_from)
    falling = (bins >= fall_from) & (bins < fall_to)
    bank = np.where(rising, heights[:, None] / (centre - low) * (hz - low), 0.0)
    return np.where(falling, heights[:, None] / (high - centre) * (high - hz), bank)


def _chroma_plan(rate: int, n_bins: int) -> dict:
    """Where each bin's energy goes in pyAudioAnalysis' chroma vector, and what it is divided by."""
    freqs = np.arange(1, n_bins + 1) * rate / (2 * n_bins)
    pitch = np.round(12.0 * np.log2(freqs / _CHROMA_REF_HZ)).astype(int)
    if pitch.max() >= n_bins or pitch.min() < -n_bins:
        # pyAudioAnalysis fails here (its other branch is a shape error): there are no numbers to reproduce.
        raise ValueError(f"sample rate {rate} Hz with a {2 * n_bins}-sample window is too coarse for "
                         "pyAudioAnalysis' chroma features")
    # (No np.unique here: its first call imports numpy.ma, a sizeable share of a short command's start-up.)
    of_pitch = pitch - pitch.min()
    bins_per_pitch = np.bincount(of_pitch)[of_pitch].astype(np.float64)  # by bin: how many bins share its pitch
    slots = np.where(pitch < 0, pitch + n_bins, pitch)  # a negative pitch indexes from the end
    # Several bins write the same slot; as with numpy's fancy assignment, the last (highest) bin wins.
    last_bin = np.full(n_bins, -1)
    np.maximum.at(last_bin, slots, np.arange(n_bins))
    slot_ids = np.flatnonzero(last_bin >= 0)
    sources = last_bin[slot_ids]
    divisors = bins_per_pitch[pitch[slot_ids]]  # slot k is divided by the count at index pitch(bin k) (sic)
    # Fold modulo 12 keeping only the rows of 12 slots that hold something: the rows left out would only add
    # zeros, and the kept rows are still added in increasing order, as pyAudioAnalysis adds them.
    row_of_slot = slot_ids // 12  # non-decreasing, as slot_ids is sorted
    rows = row_of_slot[np.r_[True, row_of_slot[1:] != row_of_slot[:-1]]]
    columns = np.searchsorted(rows, row_of_slot) * 12 + slot_ids % 12
    return {"chroma_bins": sources, "chroma_divisors": divisors, "chroma_columns": columns,
            "chroma_rows": int(rows.size)}


@lru_cache(maxsize=1)
def _dct_twiddles() -> tuple[np.ndarray, np.ndarray, float, float]:
    """Constants of pocketfft's DCT-II of length 40 (scipy.fft), computed the way pocketfft computes them.

    Returns the twiddles ``cos(2 pi i / 160)`` that output ``k`` of 1..12 uses (for ``k`` and ``40 - k``), the
    ortho scale ``1 / sqrt(80)`` and ``sqrt(2) / 2``, each rounded exactly as pocketfft rounds it: the angle step
    and the constants in long double, the cosines from the C library, larger angles as products of two table
    entries.
    """
    n = 4 * _N_MEL
    pi = np.longdouble("3.141592653589793238462643383279502884197")
    step = float(np.longdouble(0.25) * pi / np.longdouble(n))

    def root(x: int) -> tuple[float, float]:
        """exp(2 pi i x / n) by octant symmetry from angles below pi/4, as pocketfft's sincos_2pibyn.calc."""
        x <<= 3
        if x < 4 * n:
            if x < 2 * n:
                if x < n:
                    return math.cos(x * step), math.sin(x * step)
                return math.sin((2 * n - x) * step), math.cos((2 * n - x) * step)
            x -= 2 * n
            if x < n:
                return -math.sin(x * step), math.cos(x * step)
            return -math.cos((2 * n - x) * step), math.sin((2 * n - x) * step)
        x = 8 * n - x
        if x < 2 * n:
            if x < n:
                return math.cos(x * step), -math.sin(x * step)
            return math.sin((2 * n - x) * step), -math.cos((2 * n - x) * step)
        x -= 2 * n
        if x < n:
            return -math.sin(x * step), -math.cos(x * step)
        return -math.cos((2 * n - x) * step), -math.sin((2 * n - x) * step)

    shift = 1
    while (1 << shift) * (1 << shift) < (n + 2) // 2:
        shift += 1
    mask = (1 << shift) - 1

    def cosine(index: int) -> float:
        low = root(index & mask) if index & mask else (1.0, 0.0)
        high = root((index >> shift) << shift) if index >> shift else (1.0, 0.0)
        return low[0] * high[0] - low[1] * high[1]

    ks = np.arange(1, _N_MFCC)
    own = np.array([cosine(k) for k in ks])  # twiddle[k - 1] = cos(2 pi k / 160)
    mirror = np.array([cosine(_N_MEL - k) for k in ks])  # twiddle[40 - k - 1]
    scale = float(1 / np.sqrt(np.longdouble(2 * _N_MEL)))
    half_sqrt2 = float(np.longdouble("1.414213562373095048801688724209698")) * 0.5
    return own, mirror, scale, half_sqrt2


def _mfcc_dct(mspec: np.ndarray) -> np.ndarray:
    """First 13 coefficients of the orthonormal DCT-II of each row (40 log filter energies); shape (n, 13).

    Follows pocketfft's algorithm (scipy's ``dct(type=2, norm='ortho')``, which pyAudioAnalysis calls) step by
    step on numpy's real FFT, which is pocketfft too, so that the MFCCs come out bit for bit: a plain matrix
    product differs by ~1e-15, and MFCCs near 0 would then differ by large relative amounts.
    """
    n_rows, size = mspec.shape
    # Fold the input into a half-complex spectrum: c[0]*2, c[N-1]*2, (c[k]+c[k+1], c[k+1]-c[k]) for odd k.
    half = np.zeros((n_rows, size // 2 + 1), dtype=np.complex128)
    half.real[:, 0] = mspec[:, 0] * 2
    half.real[:, size // 2] = mspec[:, size - 1] * 2
    odd, even = mspec[:, 1 : size - 1 : 2], mspec[:, 2 : size - 1 : 2]
    half.real[:, 1 : size // 2] = even + odd
    half.imag[:, 1 : size // 2] = even - odd
    own, mirror, scale, half_sqrt2 = _dct_twiddles()
    c = np.fft.irfft(half, n=size, axis=1, norm="forward")
    c *= scale
    ks = np.arange(1, _N_MFCC)
    low, high = c[:, ks], c[:, size - ks]
    out = np.empty((n_rows, _N_MFCC))
    out[:, 0] = c[:, 0] * half_sqrt2
    out[:, 1:] = 0.5 * ((own * high + mirror * low) + (own * low - mirror * high))
    return out


# --- per-chunk work ----------------------------------------------------------------------------------------------


def _normalisation(mean: float, maximum: float, minimum: float) -> tuple[float, float]:
    """Offset and divisor such that ``(signal - offset) / divisor`` is pyAudioAnalysis' ``dc_normalize(signal /
    2**15)`` to the bit, from the signal's mean, maximum and minimum, with no copy of the signal.

    Scaling by a power of two is exact, so it commutes with every rounding: the mean of the scaled signal is the
    scaled mean, and ``(s / 2**15 - mean) / peak`` equals ``(s - mean * 2**15) / (peak * 2**15)``. Rounding is
    monotonic, so the largest ``|s / 2**15 - mean|`` is at the signal's maximum or minimum.
    """
    scale = 2.0**-15
    mean = mean * scale
    peak = max(maximum * scale - mean, mean - minimum * scale) + 1e-10
    return float(mean / scale), float(peak / scale)


class _Scratch:
    """Work arrays of one thread, reused from chunk to chunk.

    Fresh arrays of a few MB for every chunk would each cost page faults (the allocator hands such sizes back to
    the system when they are freed), which on a long file adds up to a large share of the run time.
    """

    def __init__(self, plan: _Plan, frames: int) -> None:
        self.samples = np.empty((frames - 1) * plan.step + plan.window)
        self.above = np.empty((frames, plan.window), dtype=bool)
        self.below = np.empty((frames, plan.window), dtype=bool)
        self.changes = np.empty((frames, plan.window - 1), dtype=np.uint8)
        self.changes_below = np.empty((frames, plan.window - 1), dtype=np.uint8)
        self.spectrum = np.empty((frames, plan.window // 2 + 1), dtype=np.complex128)
        self.mag = np.empty((frames, plan.n_bins))
        self.work = np.empty((frames, plan.n_bins))
        self.work2 = np.empty((frames, plan.n_bins))


def _frame_features(samples: _Samples, offset: float, divisor: float, plan: _Plan, first: int, stop: int,
                    scratch: _Scratch) -> np.ndarray:
    """The 34 base features of frames ``first .. stop - 1``; shape ``(34, stop - first)``.

    The frame before ``first`` (when there is one) is analysed too, as the reference of the spectral flux.
    """
    lead = 1 if first > 0 else 0
    start, end = (first - lead) * plan.step, (stop - 1) * plan.step + plan.window
    x = np.subtract(samples.read(start, end, out=scratch.samples), offset, out=scratch.samples[: end - start])
    x *= 1.0 / divisor  # within a rounding of pyAudioAnalysis' division, at a third of its cost
    n = stop - first + lead
    # The view sliding_window_view would make, without its ~80 us of checks a chunk.
    frames = np.ndarray((n, plan.window), dtype=x.dtype, buffer=x, strides=(plan.step * x.itemsize, x.itemsize))
    out = np.empty((_N_BASE, n))

    # Time domain: zero crossings, energy, entropy of the energies of 10 sub-frames.
    out[0] = _sign_changes(frames, scratch) / 2.0 / (plan.window - 1.0)
    energy, blocks = _block_energies(frames)
    out[1] = energy / plan.window
    out[2] = _entropy(blocks, energy)

    # Spectrum: |FFT| of the first n_bins bins over n_bins. numpy's real FFT is pocketfft, as scipy.fftpack's
    # complex FFT of a real frame, and gives the same magnitudes to the bit.
    spectrum = np.fft.rfft(frames, axis=1, out=scratch.spectrum[:n])
    mag = np.abs(spectrum[:, : plan.n_bins], out=scratch.mag[:n])
    mag /= plan.n_bins
    total, blocks = _block_energies(mag)
    out[3], out[4] = _centroid_spread(mag, mag @ plan.bin_powers, plan)
    out[5] = _entropy(blocks, total)
    out[6] = _flux(mag, total)
    out[7] = _rolloff(mag, total, scratch.work[:n], scratch.work2[:n])
    mel = mag[:, plan.mel_bins] @ plan.mel_bank  # the bins outside it would only add zeros
    out[8:21] = _mfcc_dct(np.log10(mel + _EPS)).T
    chroma = _chroma(mag, total, plan, scratch.work[:n], scratch.work2[:n])
    out[21:33] = chroma.T
    out[33] = chroma.std(axis=1)
    return out[:, lead:]


def _sign_changes(frames: np.ndarray, scratch: _Scratch) -> np.ndarray:
    """``sum(|diff(sign(frame))|)`` of each row: 2 for a change of sign, 1 for a change to or from 0.

    Without zeros that is twice the number of neighbours whose sign bits differ. A chunk that holds an exact 0 (a
    sample equal to the signal's mean: rare but for digital silence) counts the neighbours that differ in
    ``x > 0`` plus those that differ in ``x < 0``. Counted on bytes rather than on float signs.
    """
    n = frames.shape[0]
    # At most 2 per pair of samples: a 16-bit count is exact for frames of up to 32768 samples.
    count = np.uint16 if frames.shape[1] <= 1 << 15 else np.int64
    if not np.equal(frames, 0, out=scratch.below[:n]).any():
        negative = np.signbit(frames, out=scratch.above[:n])
        flips = np.not_equal(negative[:, 1:], negative[:, :-1], out=scratch.changes[:n].view(bool))
        return 2 * flips.sum(axis=1, dtype=count)
    above = np.greater(frames, 0, out=scratch.above[:n]).view(np.uint8)
    below = np.less(frames, 0, out=scratch.below[:n]).view(np.uint8)
    changes = np.bitwise_xor(above[:, 1:], above[:, :-1], out=scratch.changes[:n])
    changes += np.bitwise_xor(below[:, 1:], below[:, :-1], out=scratch.changes_below[:n])
    return changes.sum(axis=1, dtype=count)


def _block_energies(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum of squares of each row, and of each of its 10 equal sub-blocks (the remainder is in no block)."""
    length = rows.shape[1] // _N_SUB_BLOCKS
    body = rows[:, : length * _N_SUB_BLOCKS].reshape(rows.shape[0], _N_SUB_BLOCKS, length)
    tail = rows[:, length * _N_SUB_BLOCKS :]
    blocks = np.einsum("ijk,ijk->ij", body, body)
    return blocks.sum(axis=1) + np.einsum("ij,ij->i", tail, tail), blocks


def _entropy(blocks: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Entropy (bits) of each row's sub-block energies as shares of its total energy (+eps)."""
    shares = blocks / (total + _EPS)[:, None]
    return -(shares * np.log2(shares + _EPS)).sum(axis=1)


def _centroid_spread(mag: np.ndarray, moments: np.ndarray, plan: _Plan) -> tuple[np.ndarray, np.ndarray]:
    """Spectral centroid and spread of each row, over half the sample rate, from the sums of m, f m, f**2 m.

    pyAudioAnalysis divides the magnitudes by their peak (by eps in a silent frame) and adds eps to their sum.
    The spread's sum of (f - centroid)**2 m is expanded into the raw sums, which costs no pass over the spectrum
    but loses digits when the spread is tiny beside the centroid (a pure tone): the few frames where it would lose
    more than 5 of them are summed about the centroid, as pyAudioAnalysis does.
    """
    peak = mag.max(axis=1)
    inverse = 1.0 / np.where(peak == 0, _EPS, peak)
    total, first, second = (moments * inverse[:, None]).T
    weight = total + _EPS
    centroid = first / weight
    about_centroid = second - 2.0 * centroid * first + centroid**2 * total
    lost = np.flatnonzero(about_centroid < 1e-5 * second)  # cancellation: fewer than 11 digits left
    if lost.size:
        deviation = np.square(plan.bin_hz[None, :] - centroid[lost, None])
        about_centroid[lost] = np.einsum("ij,ij->i", deviation, mag[lost]) * inverse[lost]
    spread = np.sqrt(np.maximum(about_centroid, 0.0) / weight)
    half = plan.rate / 2.0
    return centroid / half, spread / half


def _flux(mag: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Sum of squared differences of consecutive spectra, each divided by its sum (+eps a bin).

    Expanded as ``sum(a**2) / sa**2 + sum(b**2) / sb**2 - 2 sum(a b) / (sa sb)`` from each row's sum of squares
    (``total``) and one product of neighbouring rows, which costs one pass over the spectra rather than four. Close
    neighbours make that a difference of near-equal numbers: where it would keep fewer than 13 digits (a steady
    tone), the differences of the shares are taken one by one, as pyAudioAnalysis does, so that identical frames
    still give exactly 0. The first row gets 0: right for the signal's first frame (pyAudioAnalysis compares it
    with itself); otherwise the first row is a chunk's lead frame, which is dropped.
    """
    inverse = 1.0 / (mag.sum(axis=1) + mag.shape[1] * _EPS)
    squares = total * inverse**2  # the sum of each row's squared shares
    pairs = squares[1:] + squares[:-1]
    flux = np.zeros(mag.shape[0])
    flux[1:] = pairs - 2.0 * np.einsum("ij,ij->i", mag[1:], mag[:-1]) * inverse[1:] * inverse[:-1]
    for row in np.flatnonzero(flux[1:] < 1e-3 * pairs) + 1:
        change = mag[row] * inverse[row] - mag[row - 1] * inverse[row - 1]
        flux[row] = change @ change
    return flux


def _rolloff(mag: np.ndarray, total: np.ndarray, work: np.ndarray, work2: np.ndarray) -> np.ndarray:
    """First bin, over the bin count, where the cumulative energy (+eps) exceeds 90% of the total; 0 if none.

    The running sum is pyAudioAnalysis' (same additions in the same order), so the same bin is found. Most
    frames reach 90% of their energy in the lowest bins, so the bins are scanned in blocks of doubling width,
    each only for the frames still below the threshold.
    """
    n_frames, n_bins = mag.shape
    threshold = _ROLLOFF * total
    first = np.full(n_frames, -1)
    searching = np.arange(n_frames)
    carried = np.zeros(n_frames)  # running sum before the block, of the frames still searching
    low, width = 0, 32
    while low < n_bins and searching.size:
        shape = (searching.size, min(width, n_bins - low))
        block = work.reshape(-1)[: shape[0] * shape[1]].reshape(shape)  # contiguous views of the work arrays
        running = work2.reshape(-1)[: block.size].reshape(shape)
        np.take(mag[:, low : low + shape[1]], searching, axis=0, out=block, mode="clip")  # "clip": no buffer
        np.square(block, out=block)
        block[:, 0] += carried  # continues the running sum: carried + p[low], then + p[low + 1] ...
        np.cumsum(block, axis=1, out=running)
        carried = running[:, -1].copy()
        running += _EPS
        above = running > threshold[searching, None]
        hit = above.any(axis=1)
        first[searching[hit]] = low + above[hit].argmax(axis=1)
        carried, searching = carried[~hit], searching[~hit]
        low, width = low + shape[1], 2 * width
    return np.where(first >= 0, first / float(n_bins), 0.0)


def _chroma(mag: np.ndarray, total: np.ndarray, plan: _Plan, work: np.ndarray, work2: np.ndarray) -> np.ndarray:
    """pyAudioAnalysis' 12-bin chroma vector of each row, from the magnitudes and total energies; shape (n, 12)."""
    n = mag.shape[0]
    energies = work.reshape(-1)[: n * plan.chroma_bins.size].reshape(n, -1)
    np.take(mag, plan.chroma_bins, axis=1, out=energies, mode="clip")
    np.square(energies, out=energies)
    energies /= plan.chroma_divisors
    slots = work2.reshape(-1)[: n * plan.chroma_rows * 12].reshape(n, plan.chroma_rows, 12)
    slots.fill(0.0)
    slots.reshape(n, -1)[:, plan.chroma_columns] = energies
    return slots.sum(axis=1) / np.where(total == 0, _EPS, total)[:, None]


# --- segments ----------------------------------------------------------------------------------------------------


def _segment_stats(short: np.ndarray, per_segment: int, per_step: int) -> np.ndarray:
    """Mean and std of each row over segments of ``per_segment`` frames starting every ``per_step`` frames."""
    n_feats, n_frames = short.shape
    starts = range(0, n_frames, per_step)
    n_whole = (n_frames - per_segment) // per_step + 1 if n_frames >= per_segment else 0
    out = np.empty((2 * n_feats, len(starts)))
    if n_whole:
        windows = sliding_window_view(short, per_segment, axis=1)[:, ::per_step][:, :n_whole]
        out[:n_feats, :n_whole] = windows.mean(axis=2)
        out[n_feats:, :n_whole] = windows.std(axis=2)
    for column in range(n_whole, len(starts)):  # the last segments run past the end and are cut short
        tail = short[:, starts[column] :]
        out[:n_feats, column] = tail.mean(axis=1)
        out[n_feats:, column] = tail.std(axis=1)
    return out
