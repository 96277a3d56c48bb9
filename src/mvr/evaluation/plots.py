"""The evaluation's bar charts, like the study's figures 2-4."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mvr.errors import MvrError
from mvr.evaluation.protocols import PROTOCOL_NAMES
from mvr.evaluation.report import column_name
from mvr.evaluation.run import METHODS, Evaluation
from mvr.index.base import METRICS


def plot(evaluation: Evaluation, folder: Path) -> list[Path]:
    """Draw ``folder/<protocol>-<modality>.png``: precision@k per metric, like the study's figures 2-4.

    The audio and visual charts have one bar per metric (both methods rank the same vectors); the fused chart has
    mvr's fusion and the study's side by side. A degenerate metric gets no bar, only the word ``tie``.

    Raises
    ------
    MvrError
        When matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        raise MvrError("mvr evaluate --plots needs matplotlib: pip install 'mvr[plots]'") from None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for modality in evaluation.modalities:
        methods = list(METHODS) if modality == "fused" else ["mvr"]
        figure, axes = pyplot.subplots(figsize=(7.5, 3.4), dpi=80)
        width = 0.8 / len(methods)
        for offset, method in enumerate(methods):
            found = [evaluation.result(method, modality, metric) for metric in METRICS]
            positions = np.arange(len(METRICS)) + (offset - (len(methods) - 1) / 2) * width
            heights = [0.0 if r.degenerate else r.precision for r in found]
            label = column_name(method, modality) if modality == "fused" else None
            bars = axes.bar(positions, heights, width, label=label, color=_COLOURS[offset])
            for bar, result in zip(bars, found, strict=True):
                # A fused bar is one method's; a single-modality bar stands for both methods.
                chosen = [name for name in ((method,) if modality == "fused" else METHODS)
                          if METHODS[name].metrics.get(modality) == result.metric]
                text = "\n".join(["tie" if result.degenerate else f"{result.precision:.2f}", *chosen])
                axes.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                              va="bottom", fontsize=6, fontweight="bold" if chosen else "normal")
        axes.axhline(found[0].chance, color="grey", linestyle=":", linewidth=1, label="chance")
        axes.set_xticks(np.arange(len(METRICS)), METRICS, rotation=35, ha="right", fontsize=8)
        axes.set_ylim(0, 1.08)
        axes.set_ylabel(f"precision@{evaluation.k}")
        axes.set_title(f"{modality} retrieval, {PROTOCOL_NAMES[evaluation.protocol]}, {found[0].queries} queries"
                       " (mvr, study: each one's choice)", fontsize=9)
        axes.legend(fontsize=7, loc="upper right")
        figure.tight_layout()
        path = folder / f"{evaluation.protocol}-{modality}.png"
        figure.savefig(path)
        pyplot.close(figure)
        written.append(path)
    return written


_COLOURS = ("tab:blue", "tab:orange")
