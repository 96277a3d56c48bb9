"""The dashboard end to end, in real headless Chromium driven by Playwright, against a real uvicorn server.

Skipped only where the browser (Debian's ``chromium``) or Playwright for Python is missing. Screenshots of the
results, collection and evaluation pages are saved under ``$MVR_ARTIFACTS`` (or the test's temporary folder), and
their paths printed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_web import held_out, media_server, uvicorn_server, web_catalog

from mvr.retrieval.targets import default_metrics
from mvr.web import ServiceSettings, create_app

DEFAULT_METRICS = default_metrics()

CHROMIUM = Path("/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found (Debian: apt-get install chromium)"),
]
RESULTS_TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory: pytest.TempPathFactory, music_videos) -> Path:
    return web_catalog(tmp_path_factory, music_videos)


@pytest.fixture(scope="module")
def server_url(catalog_dir: Path) -> Iterator[str]:
    """`mvr serve`'s app under a real uvicorn on a free port of 127.0.0.1, in a background thread."""
    with uvicorn_server(create_app(ServiceSettings(catalog=catalog_dir, allow_private_urls=True))) as url:
        yield url


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, music_videos) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("served")
    for path in held_out(music_videos):
        shutil.copy(path, folder / path.name)
    with media_server(folder) as (base, _release):
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update"],
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser, server_url: str) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(str(error)))
    opened.goto(server_url)
    opened.wait_for_selector("body[data-ready=true]")
    yield opened
    context.close()
    assert not problems, problems  # no script error on the page


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ["MVR_ARTIFACTS"]) if os.environ.get("MVR_ARTIFACTS") else tmp_path_factory.mktemp("shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_screenshot(page, path: Path) -> None:
    """Save the whole page as a test artifact, and say where."""
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def wait_for_results(page) -> list[dict]:
    """Wait for five result cards whose thumbnails have loaded; return what each card shows."""
    page.wait_for_function("document.querySelectorAll('#cards .result-card').length === 5",
                           timeout=RESULTS_TIMEOUT_MS)
    page.wait_for_function(
        "[...document.querySelectorAll('#cards img.thumb')].every(i => i.complete && i.naturalWidth > 0)")
    return page.eval_on_selector_all("#cards .result-card", """cards => cards.map(card => ({
        rank: card.querySelector('.rank').textContent,
        title: card.querySelector('.title').textContent,
        label: card.querySelector('.label').textContent,
        distance: card.querySelector('.distance').textContent,
        thumbnail: card.querySelector('img.thumb').naturalWidth,
        bars: [...card.querySelectorAll('.space-bars .track')].map(track => ({
            space: track.dataset.space, width: parseFloat(track.firstChild.style.width)})),
    }))""")


def test_paste_a_url_and_see_five_recommendations(page, served: str, music_videos, artifacts: Path) -> None:
    query = held_out(music_videos)[-1]
    page.fill("#url", f"{served}/{query.name}")
    page.click("#go")
    page.wait_for_selector("#progress:not([hidden])")
    cards = wait_for_results(page)
    titles = {path.stem: label for path, label in music_videos.labels.items()}
    assert [card["rank"] for card in cards] == ["#1", "#2", "#3", "#4", "#5"]
    assert all(card["title"] and card["thumbnail"] > 0 and card["distance"].startswith("distance ") for card in cards)
    assert {card["label"] for card in cards} <= set(titles.values())
    assert cards[0]["label"] == music_videos.labels[query]
    assert page.text_content("#query-title") == query.stem
    assert page.is_hidden("#error") and page.is_hidden("#progress")
    save_screenshot(page, artifacts / "results.png")

    # A result's player streams the catalog's media, and can seek (HTTP range requests).
    page.click("#cards .result-card:first-child .play")
    page.wait_for_function("document.querySelector('#cards video')?.readyState >= 1")
    page.eval_on_selector("#cards video", "video => { video.pause(); video.currentTime = 6; }")
    page.wait_for_function("Math.abs(document.querySelector('#cards video').currentTime - 6) < 0.5")
    page.eval_on_selector("#cards video", "video => video.pause()")


def test_drop_a_file_with_multimodal_search(page, music_videos, artifacts: Path) -> None:
    query = held_out(music_videos)[0]
    page.set_input_files("#file", str(query))
    assert query.name in page.text_content("#drop-text")
    page.click("#modality [data-modality=fused]")
    assert page.text_content("#metric option:first-child") == f"Default ({DEFAULT_METRICS['fused']})"
    page.click("#go")
    cards = wait_for_results(page)
    assert len({card["title"] for card in cards}) == 5
    assert "Multimodal · late fusion, equal weights Audio 0.50, Visual 0.50" in page.text_content("#results-heading")
    # A fused result reads as a similarity, with one bar per space saying how close it is there.
    for card in cards:
        assert card["distance"].endswith("% similar") and "-" not in card["distance"]
        assert [bar["space"] for bar in card["bars"]] == ["audio", "visual"]
        assert all(0 <= bar["width"] <= 100 for bar in card["bars"])
    assert page.is_hidden("#tie-badge")
    # The query's own video plays from the chosen file, without another upload.
    assert page.eval_on_selector("#query-player video", "video => video.src").startswith("blob:")
    save_screenshot(page, artifacts / "results-upload.png")

    # Weights chosen in the advanced options replace the catalog's.
    page.click("details.advanced summary")
    page.fill("#weights", "audio=0.8,visual=0.2")
    page.click("#go")
    page.wait_for_function("document.querySelector('#results-heading').textContent.includes('explicit')",
                           timeout=RESULTS_TIMEOUT_MS)
    assert "explicit weights Audio 0.80, Visual 0.20" in page.text_content("#results-heading")


def test_bad_inputs_show_a_clear_message(page, bad_media) -> None:
    page.click("#go")
    assert page.text_content("#error") == "Paste a video URL or drop a video file first."
    page.fill("#url", "ftp://example.com/clip.mp4")
    page.click("#go")
    page.wait_for_selector("#error:has-text('only http and https')")
    page.set_input_files("#file", str(bad_media["not_media"]))
    page.click("#go")
    page.wait_for_selector("#error:has-text('not_media.mp4: not a media file')")
    assert page.is_hidden("#results")


def test_collection_page_filters_by_label_and_finds_similar(page, music_videos, artifacts: Path) -> None:
    page.click("nav a[data-page=collection]")
    page.wait_for_function("document.querySelectorAll('#collection-grid .collection-card').length === 6")
    page.wait_for_function(
        "[...document.querySelectorAll('#collection-grid img.thumb')].every(i => i.complete && i.naturalWidth > 0)")
    save_screenshot(page, artifacts / "collection.png")
    label = sorted(set(music_videos.labels.values()))[0]
    page.select_option("#label-filter", label)
    page.wait_for_function("document.querySelectorAll('#collection-grid .collection-card').length === 3")
    chips = page.eval_on_selector_all("#collection-grid .label", "chips => chips.map(chip => chip.textContent)")
    assert set(chips) == {label}
    assert page.text_content("#collection-count") == "3 videos"
    page.click("#collection-grid .collection-card:first-child .link-button")
    cards = wait_for_results(page)
    assert page.is_visible("#page-search") and cards[0]["label"] == label


def test_evaluation_page_charts_the_latest_results(page, catalog_dir: Path, artifacts: Path) -> None:
    page.click("nav a[data-page=evaluation]")
    page.wait_for_selector("#evaluation-empty:has-text('mvr evaluate')")
    results = catalog_dir / "evaluation.json"
    # The format mvr.evaluation documents: both methods, every modality, a degenerate metric.
    rows = [("mvr", "audio", "euclidean", 0.92), ("mvr", "audio", "cosine", 0.88), ("mvr", "audio", "hamming", None),
            ("study", "audio", "euclidean", 0.9), ("study", "audio", "cosine", 0.5),
            ("mvr", "visual", "euclidean", 0.66), ("mvr", "fused", "braycurtis", 0.71),
            ("study", "fused", "braycurtis", 0.4)]
    results.write_text(json.dumps({"k": 5, "protocol": "loo", "videos": 6, "results": [
        {"method": method, "modality": modality, "metric": metric, "precision": precision, "map": precision,
         "queries": 6, "degenerate": precision is None,
         "labels": None if precision is None else {"industrial": precision, "orchestral": precision}}
        for method, modality, metric, precision in rows]}))
    try:
        page.reload()
        page.wait_for_selector("#charts .chart")
    finally:
        results.unlink()
    assert page.eval_on_selector_all("#charts .chart h2", "titles => titles.map(t => t.textContent)") == [
        "Audio retrieval", "Visual retrieval", "Multimodal retrieval"]
    audio = page.eval_on_selector_all("#charts .chart:first-child .chart-row", """rows => rows.map(row => [
        row.dataset.metric, [...row.querySelectorAll('.value')].map(value => value.textContent), row.className])""")
    assert audio == [["euclidean", ["0.92", "0.90"], "chart-row best"], ["cosine", ["0.88", "0.50"], "chart-row"],
                     ["hamming", ["n/a"], "chart-row degenerate"]]
    assert "industrial 0.92" in page.get_attribute("#charts .chart-row[data-metric=euclidean] .track", "title")
    assert page.text_content("#evaluation-summary") == "precision@5, leave-one-out protocol"
    save_screenshot(page, artifacts / "evaluation.png")
