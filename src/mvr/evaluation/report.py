"""An evaluation's outputs: the stored JSON, CSV, and the tables ``mvr evaluate`` prints."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from mvr.evaluation.protocols import PROTOCOL_NAMES
from mvr.evaluation.run import METHODS, Evaluation
from mvr.evaluation.scoring import Result
from mvr.index.base import METRICS
from mvr.retrieval.targets import FUSED

RESULTS_FILE = "evaluation.json"
def save(evaluation: Evaluation, folder: Path) -> Path:
    """Write ``folder / RESULTS_FILE`` whole or not at all (the dashboard may read it at any time)."""
    path = Path(folder) / RESULTS_FILE
    staged = path.with_name(f".{RESULTS_FILE}.{os.getpid()}.part")
    staged.write_text(json.dumps(evaluation.to_dict(), indent=1) + "\n", encoding="utf-8")
    os.replace(staged, path)
    return path


def write_csv(evaluation: Evaluation, path: Path) -> Path:
    """One row per method, modality and metric, with a ``precision_<label>`` column per label."""
    labels = sorted({label for result in evaluation.results for label in result.labels})
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["k", "protocol", "method", "modality", "metric", "precision", "map", "queries",
                         "degenerate", "chance", *(f"precision_{label}" for label in labels)])
        for r in evaluation.results:
            row = r.to_dict()
            writer.writerow([evaluation.k, evaluation.protocol, r.method, r.modality, r.metric,
                             _cell(row["precision"]), _cell(row["map"]), r.queries, r.degenerate,
                             _cell(row["chance"]), *(_cell(row["labels"].get(label)) for label in labels)])
    return Path(path)


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def title(evaluation: Evaluation) -> str:
    """One line: what was measured, how, and on what."""
    return (f"precision@{evaluation.k} / mean average precision, {PROTOCOL_NAMES[evaluation.protocol]},"
            f" {evaluation.results[0].queries} queries, {evaluation.videos} videos in {evaluation.catalog}")


def metric_table(evaluation: Evaluation) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: precision@k / mAP of each metric (rows) and modality (columns), the chance level last.

    ``tie`` marks a degenerate metric; ``*`` mvr's default, ``s`` the study's choice. Audio and visual have one
    column (both methods rank the same vectors), fused one per method.
    """
    columns = [("mvr", m) for m in evaluation.modalities] + [("study", FUSED)]
    header = ["metric"] + [column_name(method, modality) for method, modality in columns]
    rows = []
    for metric in METRICS:
        cells = [metric]
        for method, modality in columns:
            marks = "".join(mark for name, mark in (("mvr", "*"), ("study", "s"))
                            if METHODS[name].metrics.get(modality) == metric
                            and (modality != "fused" or name == method))
            cells.append(f"{_score(evaluation.result(method, modality, metric))} {marks}".rstrip())
        rows.append(cells)
    rows.append(["(chance)"] + [f"{evaluation.result(method, m).chance:.2f}" for method, m in columns])
    return header, rows


def summary_table(evaluation: Evaluation) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: each modality searched mvr's way and the study's way, side by side; then the tuned
    fusion (cross-validated), the query-adaptive one and each audio space with its learned projection
    (cross-validated), when measured."""
    header = ["modality", "mvr", "the study's method"]
    rows = [[modality] + [_described(evaluation.result(method, modality)) for method in METHODS]
            for modality in evaluation.modalities]
    if evaluation.tuned is not None:
        folds = len(evaluation.tuned.folds)
        rows.append(["fused (tuned)", f"per-space metrics, {folds}-fold cross-validated:"
                                      f" {_score(evaluation.tuned.result)}", ""])
    if evaluation.adaptive is not None:
        rows.append(["fused (adaptive)", f"{evaluation.adaptive.metric} adaptive: {_score(evaluation.adaptive)}", ""])
    for space, found in evaluation.learned.items():
        kept = sum(space in fold.tuning.projections for fold in found.folds)
        rows.append([f"{space} (learned)", f"LDA in {kept} of {len(found.folds)} folds, cross-validated:"
                                           f" {_score(found.result)}", ""])
    return header, rows


def folds_table(evaluation: Evaluation) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: each cross-validation fold's queries and the weights (and the rule that chose them) and
    metrics tuned without them."""
    header = ["fold", "queries", "weights", "rule", "metrics"]
    return header, [
        [str(i + 1), str(fold.queries.size),
         ", ".join(f"{space} {weight:.1f}" for space, weight in fold.tuning.weights.items())
         + ("" if fold.tuning.tuned else " (too few labels: equal)"), fold.tuning.rule or "-",
         ", ".join(f"{space} {'LDA' if space in fold.tuning.projections else metric}"
                   for space, metric in fold.tuning.metrics.items())]
        for i, fold in enumerate(evaluation.tuned.folds)
    ]


def ties_line(evaluation: Evaluation) -> str:
    """How many queries of mvr's default searches had their k-th result tied with a candidate left out."""
    counts = [f"{modality} {evaluation.result('mvr', modality).tied_at_cut}" for modality in evaluation.modalities]
    return (f"queries tied at the cut (k-th result level with a candidate left out; ties go by video id):"
            f" {', '.join(counts)} of {evaluation.result('mvr', evaluation.modalities[0]).queries}")


def column_name(method: str, modality: str) -> str:
    """A table's or chart's name for a method's search of ``modality``."""
    if modality != "fused":
        return modality
    return f"fused ({METHODS[method].fusion}{', study' if method == 'study' else ''})"


def _score(result: Result) -> str:
    return "tie" if result.degenerate else f"{result.precision:.3f} / {result.map:.3f}"


def _described(result: Result | None) -> str:
    if result is None:
        return "-"  # the method does not search this space
    fusion = f" {METHODS[result.method].fusion}" if result.modality == "fused" else ""
    return f"{result.metric}{fusion}: {_score(result)}"


