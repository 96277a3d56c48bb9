"""Record what mvr prints on the small benchmark collections, and compare two such records.

A change that reorganises code must not change a number. Run ``record`` with the code before the change (a
checkout of the earlier commit on ``PYTHONPATH``) and with the code after it, then ``compare`` the two folders::

    mvr dataset build /tmp/same/coupled --mode coupled --size small
    mvr dataset build /tmp/same/mixed --mode mixed --size small
    PYTHONPATH=OLD/src python benchmarks/same_outputs.py record /tmp/same before
    python benchmarks/same_outputs.py record /tmp/same after
    python benchmarks/same_outputs.py compare /tmp/same/before /tmp/same/after

``record`` indexes each collection into a fresh catalog and keeps the JSON of ``mvr evaluate``, of ``mvr query``
for each modality (the collection's second item as the query) and of ``mvr features`` for each space. ``compare``
reports every difference: text must be equal, numbers equal to ``--tolerance`` (relative; the CNN's last bits may
differ between runs on other thread counts), the evaluation's creation time aside.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

COLLECTIONS = ("coupled", "mixed")
MODALITIES = ("audio", "visual", "fused")
IGNORED_KEYS = {"created", "catalog"}  # when, and which folder: not what was computed


def mvr(*args: str) -> str:
    """Run the mvr command line of the current interpreter's path; its standard output."""
    done = subprocess.run([sys.executable, "-c", "import sys; from mvr.cli import main; sys.exit(main())", *args],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"mvr {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def record(root: Path, name: str) -> None:
    out = root / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for collection in COLLECTIONS:
        manifest = root / collection / "manifest.csv"
        with open(manifest, newline="", encoding="utf-8") as handle:
            query = str(manifest.parent / list(csv.DictReader(handle))[1]["source"])
        catalog = out / f"catalog-{collection}"
        mvr("index", str(manifest), "--catalog", str(catalog), "--quiet")
        (out / f"{collection}-evaluate.json").write_text(mvr("evaluate", "--catalog", str(catalog), "--json"))
        for modality in MODALITIES:
            (out / f"{collection}-query-{modality}.json").write_text(
                mvr("query", query, "--catalog", str(catalog), "--modality", modality, "--json"))
        if collection == COLLECTIONS[0]:
            for space in ("audio", "visual"):
                (out / f"features-{space}.json").write_text(mvr("features", query, "--modality", space, "--json"))
        shutil.rmtree(catalog)
    print(f"recorded {len(list(out.glob('*.json')))} outputs in {out}")


def differences(a: object, b: object, where: str, tolerance: float) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = [f"{where}.{key}: only on one side" for key in sorted(set(a) ^ set(b)) if key not in IGNORED_KEYS]
        for key in sorted(set(a) & set(b) - IGNORED_KEYS):
            found += differences(a[key], b[key], f"{where}.{key}", tolerance)
        return found
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} against {len(b)} entries"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]", tolerance)]
    if isinstance(a, float) and isinstance(b, float):
        if math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance):
            return []
        return [f"{where}: {a!r} against {b!r}"]
    return [] if a == b else [f"{where}: {a!r} against {b!r}"]


def compare(before: Path, after: Path, tolerance: float) -> int:
    names = sorted(p.name for p in before.glob("*.json"))
    problems = [] if names == sorted(p.name for p in after.glob("*.json")) else ["the two records hold other files"]
    for name in names:
        problems += differences(json.loads((before / name).read_text()), json.loads((after / name).read_text()),
                                name, tolerance)
    for problem in problems:
        print(problem)
    print(f"{len(names)} outputs compared, {len(problems)} differences (tolerance {tolerance:g})")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    rec = verbs.add_parser("record", help="index the collections under ROOT and keep the outputs in ROOT/NAME")
    rec.add_argument("root", type=Path)
    rec.add_argument("name")
    cmp = verbs.add_parser("compare", help="every difference between two records")
    cmp.add_argument("before", type=Path)
    cmp.add_argument("after", type=Path)
    cmp.add_argument("--tolerance", type=float, default=1e-6)
    args = parser.parse_args()
    if args.verb == "record":
        record(args.root, args.name)
        return 0
    return compare(args.before, args.after, args.tolerance)


if __name__ == "__main__":
    sys.exit(main())
