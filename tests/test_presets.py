"""`--preset paper`: the study's configuration end to end (ResNet-152 on every I-frame, raw concatenation)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mvr.cli import main
from mvr.presets import STUDY_METRICS
from mvr.store import Catalog

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def paper_catalog(music_videos, hub_with_random_resnet: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two videos per label indexed with --preset paper (random ResNet-152 weights from the hub cache)."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("TORCH_HOME", str(hub_with_random_resnet))
    folder = tmp_path_factory.mktemp("paper")
    chosen = [path for label in sorted(set(music_videos.labels.values()))
              for path in [p for p, found in music_videos.labels.items() if found == label][:2]]
    manifest = folder / "manifest.csv"
    manifest.write_text("source,label\n" + "".join(f"{p},{music_videos.labels[p]}\n" for p in chosen))
    assert main(["index", str(manifest), "--catalog", str(folder / "cat"), "--preset", "paper", "--quiet"]) == 0
    yield folder / "cat"
    monkeypatch.undo()


def test_paper_vectors_are_resnet152_on_every_iframe(paper_catalog: Path) -> None:
    with Catalog.open(paper_catalog, create=False) as catalog:
        assert catalog.setting("visual.backbone") == "resnet152"
        extractor, vector = catalog.vector(1, "visual")
        assert vector.shape == (4096,) and np.isfinite(vector).all()
        assert extractor.startswith("resnet152/") and "keyframes-nokey-all" in extractor
        assert catalog.vector(1, "audio")[1].shape == (136,)


def test_paper_query_uses_the_study_fusion_and_metrics(paper_catalog: Path, music_videos, capsys) -> None:
    query = str(music_videos.paths[0])
    for modality in ("audio", "visual", "fused"):
        assert main(["query", query, "--catalog", str(paper_catalog), "--preset", "paper", "--modality", modality,
                     "-k", "3", "--json"]) == 0
        found = json.loads(capsys.readouterr().out)
        assert found["metric"] == STUDY_METRICS[modality]
        assert len(found["results"]) == 3
    # An explicit option overrides the preset's choice.
    assert main(["query", query, "--catalog", str(paper_catalog), "--preset", "paper", "--modality", "fused",
                 "--metric", "cosine", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metric"] == "cosine"


def test_another_backbone_is_refused_with_how_to_reindex(paper_catalog: Path, music_videos, capsys) -> None:
    copy = paper_catalog.parent / "new.mp4"
    shutil.copy(music_videos.paths[-1], copy)
    for verb in (["index", str(copy)], ["query", str(copy), "--modality", "visual"]):
        assert main([*verb, "--catalog", str(paper_catalog), "--backbone", "efficientnet-lite0"]) == 1
        err = capsys.readouterr().err
        assert "resnet152" in err and "re-index into a new catalog folder" in err
        assert len(err.strip().splitlines()) == 1
    with Catalog.open(paper_catalog, create=False) as catalog:
        assert len(catalog) == 4


def test_paper_evaluation_uses_the_holdout_protocol(paper_catalog: Path, capsys) -> None:
    # Two videos per label cannot give the study's 5 held-out queries per label: a clear refusal.
    assert main(["evaluate", "--catalog", str(paper_catalog), "--preset", "paper"]) == 1
    assert "holdout" in capsys.readouterr().err
    assert main(["evaluate", "--catalog", str(paper_catalog), "--preset", "paper", "--protocol", "loo",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["protocol"] == "loo"
