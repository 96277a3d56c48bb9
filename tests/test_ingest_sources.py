"""Expanding sources: folders, CSV manifests and the study's JSON format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mvr.errors import MvrError
from mvr.ingest.sources import Outcome, SourceItem, expand_sources, read_manifest

STUDY_MANIFEST = Path(__file__).resolve().parents[2] / "shared" / "reference" / "initFile.json"


def test_folder_gives_its_media_files_recursively_and_sorted(tmp_path: Path) -> None:
    for name in ("b.mp4", "a.MKV", "sub/c.webm", "notes.txt", "manifest.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    items = list(expand_sources([str(tmp_path)], label="Pop"))
    assert [Path(item.source).name for item in items] == ["a.MKV", "b.mp4", "c.webm"]
    assert {item.label for item in items} == {"Pop"}


def test_csv_manifest_resolves_paths_next_to_it(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("source,label,group,title,extra\nclips/a.mp4,Rock,g1,First,x\n"
                        "https://example.org/v.mp4,,,,\n/abs/b.mp4,Jazz,,,\n")
    items = read_manifest(manifest)
    assert items[0] == SourceItem(str(tmp_path / "clips/a.mp4"), "Rock", "g1", "First")
    assert items[1] == SourceItem("https://example.org/v.mp4")
    assert items[2].source == "/abs/b.mp4" and items[2].label == "Jazz"
    # --label fills in only where the manifest gives none.
    labels = [item.label for item in expand_sources([str(manifest)], label="Other")]
    assert labels == ["Rock", "Other", "Jazz"]


def test_the_study_json_manifest_labels_items_by_key() -> None:
    if not STUDY_MANIFEST.exists():
        pytest.skip(f"{STUDY_MANIFEST} is not beside this checkout")
    items = read_manifest(STUDY_MANIFEST)
    data = json.loads(STUDY_MANIFEST.read_text())
    assert len(items) == sum(len(urls) for urls in data.values()) == 200
    assert {item.label for item in items} == {"HipHop", "Pop"}
    assert all(item.source.startswith("https://") for item in items)


@pytest.mark.parametrize("content,reason", [
    ("not,a,manifest\n1,2,3\n", "'source' column"),
    ('["a", "b"]', "not a manifest"),
    ('{"Pop": "not a list"}', "not a manifest"),
    ("{broken", "not valid JSON"),
])
def test_bad_manifests_fail_with_a_reason(tmp_path: Path, content: str, reason: str) -> None:
    manifest = tmp_path / ("m.json" if content[0] in "[{" else "m.csv")
    manifest.write_text(content)
    with pytest.raises(MvrError, match=reason):
        read_manifest(manifest)
    outcomes = list(expand_sources([str(manifest)]))
    assert isinstance(outcomes[0], Outcome) and outcomes[0].status == "failed"


@pytest.mark.parametrize("content,reason", [
    (b"source,label\n\xffbad.mp4,Pop\n", "not a UTF-8 text file"),
    (b"source\n\"" + b"x" * (200 * 1024) + b"\"\n", "not a readable CSV manifest"),
])
def test_unreadable_manifests_are_one_failed_item_and_the_batch_goes_on(
        tmp_path: Path, content: bytes, reason: str) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(content)
    other = tmp_path / "clip.mp4"
    other.write_bytes(b"x")
    outcomes = list(expand_sources([str(manifest), str(other)]))
    assert isinstance(outcomes[0], Outcome) and outcomes[0].status == "failed"
    assert reason in outcomes[0].reason and str(manifest) not in outcomes[0].reason  # the item is named once
    assert outcomes[1] == SourceItem(str(other))
