"""The feature-space registry end to end: a space added to a catalog later, queries in each space, no mixing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mvr.cli import main
from mvr.config import RuntimeSettings
from mvr.errors import CatalogError
from mvr.features import SPACES, MusicnnOptions, build_extractors
from mvr.ingest.pipeline import index_sources, update_spaces
from mvr.store import Catalog

pytestmark = pytest.mark.slow


def test_every_space_has_its_groups_covering_its_columns(runtime: RuntimeSettings) -> None:
    assert tuple(SPACES) == ("audio", "musicnn", "visual")
    for name, extractor in build_extractors({n: s.default_options for n, s in SPACES.items()}, runtime).items():
        columns = np.sort(np.concatenate([group.columns for group in extractor.groups]))
        np.testing.assert_array_equal(columns, np.arange(extractor.dims), err_msg=name)


def test_a_space_added_later_is_computed_from_the_stored_media(music_videos, runtime: RuntimeSettings,
                                                                tmp_path: Path, capsys) -> None:
    sources = [str(path) for path in music_videos.paths[:4]]
    with Catalog.open(tmp_path / "catalog") as catalog:
        report = index_sources(catalog, sources, spaces=("audio", "visual"), runtime=runtime, progress=False)
        assert report.count("indexed") == 4 and catalog.spaces() == ["audio", "visual"]
        updated = update_spaces(catalog, runtime=runtime, progress=False)
        assert [o.status for o in updated.outcomes] == ["indexed"] * 4
        assert all(o.reason == "added musicnn" for o in updated.outcomes)
        assert catalog.spaces() == ["audio", "musicnn", "visual"]
        assert catalog.setting("extractor.musicnn").startswith("musicnn-0.1.0/MSD_musicnn/penultimate/mean/")
        again = update_spaces(catalog, runtime=runtime, progress=False)
        assert {o.status for o in again.outcomes} == {"skipped"}
    code = main(["query", sources[0], "--catalog", str(tmp_path / "catalog"), "--modality", "musicnn", "--json",
                 "-k", "3"])
    found = json.loads(capsys.readouterr().out)
    assert code == 0 and found["metric"] == "cosine" and len(found["results"]) == 3
    assert found["query"]["id"] is not None  # the catalog's own video: its stored vector, not itself again
    assert found["query"]["id"] not in [r["id"] for r in found["results"]]


def test_vectors_of_another_musicnn_model_are_refused(music_videos, runtime: RuntimeSettings,
                                                      tmp_path: Path) -> None:
    with Catalog.open(tmp_path / "catalog") as catalog:
        index_sources(catalog, [str(music_videos.paths[0])], spaces=("musicnn",), runtime=runtime, progress=False)
        with pytest.raises(CatalogError, match="built with musicnn MSD_musicnn/penultimate, not musicnn MTT_musicnn"):
            index_sources(catalog, [str(music_videos.paths[1])], spaces=("musicnn",), runtime=runtime,
                          options={"musicnn": MusicnnOptions(model="MTT_musicnn")}, progress=False)
