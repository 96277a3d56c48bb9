"""The evaluation's bar charts, like the study's figures 2-4, readable at 1200 x 570 pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mvr.errors import MvrError
from mvr.evaluation.protocols import PROTOCOL_NAMES
from mvr.evaluation.report import column_name
from mvr.evaluation.run import METHODS, Evaluation
from mvr.index.base import METRICS
from mvr.retrieval.targets import FUSED

FIGURE_INCHES = (8.0, 3.8)
FIGURE_DPI = 150
"""8 x 3.8 inches at 150 dpi: 1200 x 570 pixels, text of 7-10 points readable without zooming."""
AXES_BOX = (0.07, 0.2, 0.68, 0.7)
"""The bars' box (left, bottom, width, height, in shares of the figure): the legend sits to its right, outside, so
that it never hides a bar."""


def _pyplot():  # noqa: ANN202 (matplotlib's module)
    """matplotlib's pyplot on the file-only Agg backend; imported here because matplotlib is an optional extra.

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
    return pyplot


def draw(evaluation: Evaluation, modality: str):  # noqa: ANN201 (a matplotlib Figure; matplotlib is optional)
    """One modality's chart: precision@k per metric, the chance line, and for ``fused`` the tuned fusion's line.

    The audio and visual charts have one bar per metric (both methods rank the same vectors); the fused chart has
    mvr's fusion and the study's side by side, and the tuned fusion's cross-validated precision as a dashed line
    when it was measured. A degenerate metric gets no bar, only the word ``tie``. The legend sits outside the
    bars, on the right.

    Returns
    -------
    matplotlib.figure.Figure
        :data:`FIGURE_INCHES` at :data:`FIGURE_DPI`; the caller saves and closes it.

    Raises
    ------
    MvrError
        When matplotlib is not installed.
    """
    pyplot = _pyplot()
    methods = list(METHODS) if modality == FUSED else ["mvr"]
    figure = pyplot.figure(figsize=FIGURE_INCHES, dpi=FIGURE_DPI)
    axes = figure.add_axes(AXES_BOX)
    width = 0.8 / len(methods)
    for offset, method in enumerate(methods):
        found = [evaluation.result(method, modality, metric) for metric in METRICS]
        positions = np.arange(len(METRICS)) + (offset - (len(methods) - 1) / 2) * width
        heights = [0.0 if r.degenerate else r.precision for r in found]
        label = (column_name(method, modality) if modality == FUSED
                 else "both methods" if evaluation.result("study", modality, METRICS[0]) else "mvr")
        bars = axes.bar(positions, heights, width, label=label, color=_COLOURS[offset])
        for bar, result in zip(bars, found, strict=True):
            # A fused bar is one method's; a single-modality bar stands for both methods.
            chosen = [name for name in ((method,) if modality == FUSED else METHODS)
                      if METHODS[name].metrics.get(modality) == result.metric]
            text = "\n".join(["tie" if result.degenerate else f"{result.precision:.2f}", *chosen])
            axes.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                          va="bottom", fontsize=7, fontweight="bold" if chosen else "normal")
    chance = found[0].chance
    axes.axhline(chance, color="grey", linestyle=":", linewidth=1.5, label=f"chance ({chance:.2f})")
    if modality == FUSED and evaluation.tuned is not None and not evaluation.tuned.result.degenerate:
        tuned = evaluation.tuned.result.precision
        axes.axhline(tuned, color="tab:green", linestyle="--", linewidth=1.5,
                     label=f"tuned, {len(evaluation.tuned.folds)}-fold CV ({tuned:.2f})")
    axes.set_xticks(np.arange(len(METRICS)), METRICS, rotation=35, ha="right", fontsize=8)
    axes.set_ylim(0, 1.12)
    axes.set_ylabel(f"precision@{evaluation.k}", fontsize=9)
    axes.set_title(f"{modality} retrieval, {PROTOCOL_NAMES[evaluation.protocol]}, {found[0].queries} queries"
                   " (mvr, study: each one's choice)", fontsize=10)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, frameon=False)
    return figure


def plot(evaluation: Evaluation, folder: Path) -> list[Path]:
    """Draw ``folder/<protocol>-<modality>.png`` for each modality (:func:`draw`), like the study's figures 2-4.

    Raises
    ------
    MvrError
        When matplotlib is not installed.
    """
    pyplot = _pyplot()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for modality in evaluation.modalities:
        figure = draw(evaluation, modality)
        path = folder / f"{evaluation.protocol}-{modality}.png"
        figure.savefig(path)
        pyplot.close(figure)
        written.append(path)
    return written


_COLOURS = ("tab:blue", "tab:orange")
