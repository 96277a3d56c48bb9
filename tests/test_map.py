"""The collection's map (:mod:`mvr.retrieval.collection_map`): layouts of real catalogs, their cache in the catalog
folder, ``mvr map`` (a real PNG, JSON) and ``GET /api/map``.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from mvr.cli import main
from mvr.retrieval.collection_map import MAP_FOLDER, PNG_SIZE, collection_map, map_path
from mvr.retrieval.fusion import distances
from mvr.retrieval.query import plan_search
from mvr.retrieval.search import SearcherCache
from mvr.store import Catalog, NewVideo
from mvr.web import ServiceSettings
from tests.test_discovery import line_catalog
from tests.test_web import assert_one_line_error, local_client, web_catalog

pytestmark = pytest.mark.slow


@pytest.fixture
def catalog_dir(tmp_path_factory: pytest.TempPathFactory, music_videos, tmp_path: Path) -> Path:
    """A copy of the web tests' catalog (six real music videos, every space), which a test may change, without the
    layouts that tests run before it (the page's, the API's) saved in the shared catalog."""
    copy = tmp_path / "catalog"
    shutil.copytree(web_catalog(tmp_path_factory, music_videos), copy)
    shutil.rmtree(copy / MAP_FOLDER, ignore_errors=True)
    return copy


def places(found) -> dict[int, tuple[float, float]]:
    return {point.video.id: (point.x, point.y) for point in found.points}


def test_a_layout_is_computed_once_then_read_until_the_catalog_changes(catalog_dir: Path) -> None:
    computed = []
    with Catalog.open(catalog_dir, create=False) as catalog:
        first = collection_map(catalog, "fused", on_compute=computed.append)
        assert computed == [len(catalog)] and not first.cached
        assert sorted(places(first)) == [video.id for video in catalog.videos()]
        assert map_path(catalog, "fused").is_file()
        assert not list(map_path(catalog, "fused").parent.glob(".*"))  # nothing staged is left behind

        again = collection_map(catalog, "fused", on_compute=computed.append)
        assert again.cached and computed == [len(catalog)]
        assert places(again) == places(first)
        assert [p.video for p in again.points] == [p.video for p in first.points]

        # Computed afresh (the saved file gone), the layout is the same: a fixed seed, one thread.
        map_path(catalog, "fused").unlink()
        assert places(collection_map(catalog, "fused", searchers=SearcherCache())) == places(first)

        # A damaged file is never read: the layout is computed again, and saved whole.
        map_path(catalog, "fused").write_text('{"key": {"generation"')
        assert not collection_map(catalog, "fused").cached
        assert collection_map(catalog, "fused").cached

        # Each target has its own layout.
        audio = collection_map(catalog, "audio", on_compute=computed.append)
        assert not audio.cached and places(audio) != places(first) and len(computed) == 2

        # A video added (a new generation) makes the next map compute again, with the new video on it.
        known = catalog.videos()[0]
        extra = catalog_dir.parent / "extra.mp4"
        shutil.copy(known.media_path, extra)
        vectors = {space: catalog.vector(known.id, space) for space in known.spaces}
        added = catalog.add(NewVideo(
            content_hash="f" * 64, source=str(extra), media_file=extra, title="a near copy", duration=known.duration,
            label=known.label, vectors={space: (extractor, vector * 1.01) for space, (extractor, vector)
                                        in vectors.items()}))
        changed = collection_map(catalog, "fused", on_compute=computed.append)
        assert not changed.cached and computed[-1] == len(catalog) and added.id in places(changed)


def test_the_map_keeps_the_searchs_neighbours(catalog_dir: Path) -> None:
    """In every target, each video's nearest point on the map is, but for at most one video of the six, its
    nearest video by the search's own ranking (:func:`mvr.retrieval.fusion.distances`); where that ranking keeps
    the labels apart (sound, and the fusion), so does the map."""
    with Catalog.open(catalog_dir, create=False) as catalog:
        for target in ("audio", "musicnn", "visual", "fused"):
            plan = plan_search(catalog, target, searchers=SearcherCache())
            pool = plan.pool
            ranked = distances(pool.matrices, pool, plan.metric, plan.fusion, np.eye(pool.ids.size, dtype=bool))
            by_search = pool.ids[np.nanargmin(ranked.total, axis=1)]
            found = collection_map(catalog, target)
            xy = np.array([(point.x, point.y) for point in found.points])
            apart = np.linalg.norm(xy[:, None] - xy[None], axis=2) + np.diag(np.full(len(xy), np.inf))
            on_map = pool.ids[apart.argmin(axis=1)]
            assert (on_map == by_search).sum() >= pool.ids.size - 1, (target, by_search, on_map)
            labels = {point.video.id: point.video.label for point in found.points}
            if all(labels[a] == labels[b] for a, b in zip(pool.ids, by_search)):
                assert all(labels[a] == labels[b] for a, b in zip(pool.ids, on_map)), target
            assert found.method["name"] == "tsne" and found.method["library"].startswith("scikit-learn")


def test_mvr_map_writes_a_png_and_prints_json(catalog_dir: Path, tmp_path: Path, capsys) -> None:
    picture = tmp_path / "map.png"
    assert main(["map", "--catalog", str(catalog_dir), "--space", "visual", "--out", str(picture), "--json"]) == 0
    captured = capsys.readouterr()
    found = json.loads(captured.out)
    with Catalog.open(catalog_dir, create=False) as catalog:
        videos = {video.id: video for video in catalog.videos()}
    assert sorted(point["id"] for point in found["points"]) == sorted(videos)
    for point in found["points"]:
        assert set(point) == {"id", "title", "label", "x", "y"}
        assert (point["title"], point["label"]) == (videos[point["id"]].title, videos[point["id"]].label)
    assert found["space"] == "visual" and found["metric"] == "cosine" and found["method"]["name"] == "tsne"
    assert "laying out 6 videos" in captured.err and f"wrote {picture}" in captured.err
    header = picture.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR"
    assert struct.unpack(">II", header[16:24]) == PNG_SIZE
    assert not list(tmp_path.glob(".*.part"))

    # The table, from the layout saved by the first call.
    assert main(["map", "--catalog", str(catalog_dir), "--space", "visual"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("visual map of 6 videos (cosine distance; tsne, scikit-learn")
    assert len(captured.out.splitlines()) == 2 + len(videos) and not captured.err


def test_mvr_map_refuses_a_space_the_catalog_lacks_or_a_picture_it_cannot_write(tmp_path: Path, capsys) -> None:
    folder = line_catalog(tmp_path / "line")  # audio and visual vectors only
    assert main(["map", "--catalog", str(folder), "--space", "musicnn"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("mvr: error: ") and "no video in this catalog has musicnn vectors" in error
    assert len(error.splitlines()) == 1
    assert main(["map", "--catalog", str(folder), "--out", str(tmp_path / "missing" / "map.png")]) == 1
    error = capsys.readouterr().err
    assert error.splitlines()[-1].startswith("mvr: error: ") and "missing/map.png: cannot write the map" in error
    with pytest.raises(SystemExit) as stopped:
        main(["map", "--catalog", str(folder), "--space", "smell"])
    assert stopped.value.code == 2


def test_the_api_answers_the_map_of_each_space_and_refuses_what_it_cannot(catalog_dir: Path, tmp_path: Path) -> None:
    with local_client(ServiceSettings(catalog=catalog_dir)) as client:
        videos = client.get("/api/videos").json()["items"]
        answer = client.get("/api/map", params={"space": "visual"})
        assert answer.status_code == 200, answer.text
        found = answer.json()
        assert sorted(point["id"] for point in found["points"]) == sorted(video["id"] for video in videos)
        assert found["space"] == "visual" and found["method"]["name"] == "tsne" and found["fusion"] is None
        assert (catalog_dir / "map" / "visual.json").is_file()
        assert client.get("/api/map", params={"space": "visual"}).json() == found
        fused = client.get("/api/map", params={"space": "fused"}).json()
        assert fused["fusion"]["method"] == "late" and len(fused["points"]) == len(videos)
        assert_one_line_error(client.get("/api/map", params={"space": "smell"}), 422, "space")
    with local_client(ServiceSettings(catalog=line_catalog(tmp_path / "line"))) as client:
        assert_one_line_error(client.get("/api/map", params={"space": "musicnn"}), 404, "musicnn",
                              "audio, visual, fused")
        assert len(client.get("/api/map", params={"space": "audio"}).json()["points"]) == 12
