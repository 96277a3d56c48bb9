"""The dashboard end to end, in real headless Chromium driven by Playwright, against a real uvicorn server.

Skipped only where the browser (Debian's ``chromium``) or Playwright for Python is missing. Screenshots of the
results, collection and evaluation pages are saved under ``$MVR_ARTIFACTS`` (or the test's temporary folder), and
their paths printed.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_evaluation import toy_catalog
from test_web import held_out, media_server, uvicorn_server, web_catalog

from mvr.evaluation.run import evaluate
from mvr.retrieval.targets import default_metrics
from mvr.retrieval.tuning import store_tuning, tune_catalog
from mvr.store import Catalog
from mvr.web import ServiceSettings, create_app

DEFAULT_METRICS = default_metrics()

CHROMIUM = Path("/usr/bin/chromium")
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "dashboard.png"
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
def served_release(tmp_path_factory: pytest.TempPathFactory, music_videos) -> Iterator[tuple[str, threading.Event]]:
    """The held-out videos over HTTP, and the event that releases the server's ``/slow/`` paths."""
    folder = tmp_path_factory.mktemp("served")
    for path in held_out(music_videos):
        shutil.copy(path, folder / path.name)
    with media_server(folder) as found:
        yield found


@pytest.fixture(scope="module")
def served(served_release: tuple[str, threading.Event]) -> str:
    return served_release[0]


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


@contextmanager
def open_page(browser, url: str, width: int = 1360, height: int = 900) -> Iterator[object]:
    """A page in a fresh browser context, opened at ``url`` and ready; fails on any script error."""
    context = browser.new_context(viewport={"width": width, "height": height})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(str(error)))
    opened.goto(url)
    opened.wait_for_selector("body[data-ready=true]")
    try:
        yield opened
    finally:
        context.close()
    assert not problems, problems  # no script error on the page


@pytest.fixture
def page(browser, server_url: str) -> Iterator[object]:
    with open_page(browser, server_url) as opened:
        yield opened


def api_get(server_url: str, path: str) -> dict:
    with urllib.request.urlopen(f"{server_url}{path}", timeout=30) as response:
        return json.load(response)


def api_post(server_url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"{server_url}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def catalog_videos(server_url: str) -> list[dict]:
    return api_get(server_url, "/api/videos?limit=500")["items"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ["MVR_ARTIFACTS"]) if os.environ.get("MVR_ARTIFACTS") else tmp_path_factory.mktemp("shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_screenshot(page, path: Path) -> None:
    """Save the whole page as a test artifact, and say where."""
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def wait_for_results(page, count: int = 5) -> list[dict]:
    """Wait for ``count`` result cards, the query done and the thumbnails loaded; return what each card shows."""
    page.wait_for_function(f"document.querySelectorAll('#cards .result-card').length === {count}"
                           " && document.body.dataset.running === 'false'"
                           " && !document.querySelector('#results').hidden",
                           timeout=RESULTS_TIMEOUT_MS)
    page.wait_for_function(
        "[...document.querySelectorAll('#cards img.thumb')].every(i => i.complete && i.naturalWidth > 0)")
    return page.eval_on_selector_all("#cards .result-card", """cards => cards.map(card => ({
        id: Number(card.dataset.videoId),
        rank: card.querySelector('.rank').textContent,
        title: card.querySelector('.title').textContent,
        label: card.querySelector('.label').textContent,
        distance: card.querySelector('.distance').textContent,
        distanceTitle: card.querySelector('.distance').title,
        similarity: card.querySelector('.similar-bar') ? {
            value: parseFloat(card.querySelector('.similar-bar').dataset.similarity),
            width: card.querySelector('.similar-bar div').style.width} : null,
        sameTrack: card.querySelector('.same-track') !== null,
        thumbnail: card.querySelector('img.thumb').naturalWidth,
        bars: [...card.querySelectorAll('.space-bars .track')].map(track => ({
            space: track.dataset.space, width: parseFloat(track.firstChild.style.width)})),
    }))""")


def assert_absolute_similarity(cards: list[dict]) -> None:
    """Each card reads as a similarity, 0-100 %, and its bar is that share of its width, not one relative to the
    other results."""
    for card in cards:
        value = card["similarity"]["value"]
        assert 0 <= value <= 1
        assert card["distance"] == f"{round(100 * value)}% similar"
        assert card["similarity"]["width"] == f"{round(100 * value)}%"
        assert "distance" in card["distanceTitle"]  # the raw distance is still there, in the tooltip
    values = [card["similarity"]["value"] for card in cards]
    assert values == sorted(values, reverse=True)


def sibling_pair(server_url: str) -> tuple[dict, dict]:
    """Two catalog videos of one group (two excerpts of one track)."""
    by_group: dict[str, list[dict]] = {}
    for video in catalog_videos(server_url):
        by_group.setdefault(video["group"], []).append(video)
    pairs = [videos for group, videos in sorted(by_group.items()) if group and len(videos) >= 2]
    assert pairs, "the web catalog holds both excerpts of some track"
    return pairs[0][0], pairs[0][1]


def test_paste_a_url_and_see_five_recommendations(page, served: str, music_videos, artifacts: Path) -> None:
    query = held_out(music_videos)[-1]
    page.fill("#url", f"{served}/{query.name}")
    page.click("#go")
    page.wait_for_selector("#progress:not([hidden])")
    cards = wait_for_results(page)
    titles = {path.stem: label for path, label in music_videos.labels.items()}
    assert [card["rank"] for card in cards] == ["#1", "#2", "#3", "#4", "#5"]
    assert all(card["title"] and card["thumbnail"] > 0 for card in cards)
    # Six candidates, none tied: 100 %, 80 %, ... 20 % of the others are farther away.
    assert_absolute_similarity(cards)
    assert [card["distance"] for card in cards] == ["100% similar", "80% similar", "60% similar", "40% similar",
                                                    "20% similar"]
    assert {card["label"] for card in cards} <= set(titles.values())
    assert cards[0]["label"] == music_videos.labels[query]
    assert page.text_content("#query-title") == query.stem
    assert page.is_hidden("#error") and page.is_hidden("#progress")
    # A URL the catalog does not hold has no group, hence no same-track mark, and no seed for a mix.
    assert not any(card["sameTrack"] for card in cards) and page.is_hidden("#query-mix")
    save_screenshot(page, artifacts / "results.png")

    # The address holds the query and its options; opening it in a fresh page shows the same results.
    link = page.evaluate("location.hash")
    assert link.startswith("#/search?url=") and "modality=audio" in link and "k=5" in link
    assert page.get_attribute("#query-link", "href") == link
    with open_page(page.context.browser, f"{page.url.split('#')[0]}{link}") as fresh:
        again = wait_for_results(fresh)
        assert [card["id"] for card in again] == [card["id"] for card in cards]
        assert fresh.input_value("#url") == f"{served}/{query.name}"

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
    assert_absolute_similarity(cards)
    # The query's own video plays from the chosen file, without another upload; the catalog has no thumbnail of it,
    # so the player shows the frame a second in rather than the black before the first picture.
    assert page.eval_on_selector("#query-player video", "video => video.src").startswith("blob:")
    page.wait_for_function("""(() => { const video = document.querySelector('#query-player video');
        return video.dataset.posterFrame && video.readyState >= 2 && video.currentTime > 0 && video.paused; })()""")
    assert page.get_attribute("#query-link", "hidden") is not None  # an upload has no link
    assert page.evaluate("location.hash") == "#/search"
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


def evaluation_json(folder: Path, *, tuned: bool) -> str:
    """``mvr evaluate``'s JSON of a real catalog: the web catalog (6 videos, too few labels to tune), or the tuned
    toy catalog of test_evaluation (12 videos of 3 labels, tuned by ``mvr tune``'s library call)."""
    folder = toy_catalog(folder, songs=2) if tuned else folder
    with Catalog.open(folder, create=False) as catalog:  # evaluate only reads the catalog
        if tuned:
            store_tuning(catalog, tune_catalog(catalog, k=2))
        return json.dumps(evaluate(catalog, k=2 if tuned else 5, progress=False).to_dict())


def evaluation_view(page) -> dict:
    """What the evaluation page shows: each chart's title, its rows and where its chance line is drawn."""
    return page.eval_on_selector_all("#charts .chart", """charts => charts.map(chart => {
        const line = chart.querySelector('.chance-line');
        const track = chart.querySelector('.chart-row:not(.chart-head) .track')?.getBoundingClientRect();
        return {
            title: chart.querySelector('h2').textContent,
            rows: [...chart.querySelectorAll('.chart-row:not(.chart-head)')].map(row => ({
                metric: row.dataset.metric, kind: row.dataset.kind || '', name: row.querySelector('.chart-name')
                    .firstChild.textContent, default: row.classList.contains('default'),
                tags: [...row.querySelectorAll('.tag')].map(tag => tag.textContent),
                values: [...row.querySelectorAll('.num')].map(cell => cell.textContent),
                grey: row.querySelectorAll('.track.study').length})),
            chance: line ? Number(line.dataset.chance) : null,
            // The line's place on the bars' scale, 0 at their left end and 1 at their right.
            drawnAt: line ? (line.getBoundingClientRect().left - track.left) / track.width : null,
            labels: [...chart.querySelectorAll('.label-table tr[data-label]')].map(row =>
                [...row.children].map(cell => cell.textContent)),
        };
    })""")


def test_evaluation_page_charts_the_latest_results(page, catalog_dir: Path, tmp_path: Path, artifacts: Path) -> None:
    page.click("nav a[data-page=evaluation]")
    page.wait_for_selector("#evaluation-empty:has-text('mvr evaluate')")
    results = catalog_dir / "evaluation.json"
    # The web catalog's own evaluation: not tuned, so equal weights are the fused default.
    results.write_text(evaluation_json(catalog_dir, tuned=False))
    try:
        page.reload()
        page.wait_for_selector("#charts .chart")
        plain = evaluation_view(page)
        assert page.text_content("#evaluation-summary").startswith(
            "precision@5 and mean average precision · leave-one-out protocol · 6 queries")
        # A tuned catalog's evaluation: the tuned fusion is the fused default.
        results.write_text(evaluation_json(tmp_path / "toy", tuned=True))
        page.reload()
        page.wait_for_selector("#charts .chart")
        tuned = evaluation_view(page)
        save_screenshot(page, artifacts / "evaluation.png")
        with open_page(page.context.browser, page.url, width=390, height=844) as narrow:
            narrow.wait_for_selector("#charts .chart .chance-line")
            save_screenshot(narrow, artifacts / "narrow-evaluation-results.png")
            assert narrow.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        results.unlink()
    found = json.loads(evaluation_json(tmp_path / "toy-again", tuned=True))
    assert [chart["title"] for chart in plain] == [
        "Multimodal: which fusion", "Per label: mvr's default searches", "Audio retrieval", "MusiCNN retrieval",
        "Visual retrieval", "Multimodal retrieval"]
    assert [chart["title"] for chart in tuned] == [
        "Multimodal: which fusion", "Per label: mvr's default searches", "Audio retrieval", "Visual retrieval",
        "Multimodal retrieval"]
    fusions = tuned[0]["rows"]
    assert [row["kind"] for row in fusions] == ["tuned", "equal", "adaptive", "study"]
    assert [row["default"] for row in fusions] == [True, False, False, False]
    assert fusions[0]["tags"] == ["mvr default"] and fusions[0]["name"] == "tuned fusion (5-fold cross-validated)"
    assert fusions[0]["values"] == [f"{found['tuned']['result'][key]:.2f}" for key in ("precision", "map")]
    assert [row["default"] for row in plain[0]["rows"]] == [False, True, False, False]  # equal weights
    for view in (plain, tuned):
        for chart in view:
            if chart["title"].startswith("Per label"):
                continue
            # The chance line is drawn where the library put chance, on the bars' scale.
            assert chart["chance"] == pytest.approx(view[0]["chance"]) and chart["chance"] > 0
            assert chart["drawnAt"] == pytest.approx(chart["chance"], abs=0.01)
        by_title = {chart["title"]: chart for chart in view}
        audio, fused = by_title["Audio retrieval"]["rows"], by_title["Multimodal retrieval"]["rows"]
        # mvr's metric marked as its default, the study's as its choice; on one space both methods rank alike, so
        # no grey bar there; the fused search differs, so the study's grey bars are drawn beside mvr's.
        assert [row["metric"] for row in audio if row["default"]] == ["braycurtis"]
        assert [row["metric"] for row in audio if "study's choice" in row["tags"]] == ["euclidean"]
        assert not any(row["grey"] for row in audio) and any(row["grey"] for row in fused)
    assert [row["metric"] for row in by_title["Multimodal retrieval"]["rows"] if row["default"]] == []  # tuned
    # The audio space tuned alone, cross-validated, closes its chart; never a default.
    learned = by_title["Audio retrieval"]["rows"][-1]
    assert learned["kind"] == "learned" and not learned["default"]
    assert learned["values"] == [f"{found['learned']['audio']['result'][key]:.2f}" for key in ("precision", "map")]
    assert not any(row["kind"] == "learned" for row in by_title["Visual retrieval"]["rows"])
    assert [row["metric"] for row in plain[-1]["rows"] if row["default"]] == ["cosine"]
    assert tuned[0]["chance"] == pytest.approx(found["tuned"]["result"]["chance"])
    labels = tuned[1]["labels"]
    assert [row[0] for row in labels] == ["a", "b", "c"]
    braycurtis = next(r for r in found["results"] if (r["method"], r["modality"], r["metric"])
                      == ("mvr", "audio", "braycurtis"))
    assert [row[1] for row in labels] == [f"{braycurtis['labels'][label]:.2f}" for label in "abc"]


def test_a_fused_results_page_for_the_docs(browser, server_url: str, artifacts: Path) -> None:
    """The results page of README.md and docs/dashboard.md: a fused search from a catalog video, as it looks.

    With ``MVR_UPDATE_DOCS_SCREENSHOT=1`` the picture also replaces ``docs/dashboard.png``."""
    query = next(video for video in catalog_videos(server_url) if video["label"])
    with open_page(browser, f"{server_url}/#/search?video={query['id']}&modality=fused&k=5") as opened:
        cards = wait_for_results(opened)
        assert len(cards) == 5 and all(len(card["bars"]) == 2 for card in cards)
        assert opened.text_content("#query-title") == query["title"]
        opened.evaluate("window.scrollTo(0, 0)")
        shot = artifacts / "dashboard.png"
        opened.screenshot(path=str(shot))  # the window, as a person sees it at 1360 x 900
    print(f"screenshot: {shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("MVR_UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copy(shot, DOCS_SCREENSHOT)
        print(f"updated {DOCS_SCREENSHOT}")


def test_a_card_shows_its_matching_keyframe_pair(browser, server_url: str, artifacts: Path) -> None:
    query = next(video for video in catalog_videos(server_url) if video["label"])
    with open_page(browser, f"{server_url}/#/search?video={query['id']}&modality=fused&k=3") as opened:
        wait_for_results(opened, 3)
        first = "#cards .result-card:first-child"
        opened.click(f"{first} .frames-button")
        opened.wait_for_function(f"document.querySelectorAll('{first} .keyframe-pair img').length === 2 && [...document"
                                 f".querySelectorAll('{first} .keyframe-pair img')].every(i => i.naturalWidth > 0)")
        caption = opened.text_content(f"{first} .keyframe-pair figcaption")
        similarity = float(opened.get_attribute(f"{first} .keyframe-pair", "data-similarity"))
        result_id = int(opened.get_attribute(first, "data-video-id"))
        save_screenshot(opened, artifacts / "keyframe-pair.png")
    assert caption.startswith("query keyframe ") and "cosine" in caption and -1.0 <= similarity <= 1.0
    # What the API says for the same pair.
    with urllib.request.urlopen(f"{server_url}/api/videos/{query['id']}/keyframe-match/{result_id}") as response:
        found = json.load(response)
    assert found["similarity"] == pytest.approx(similarity) and f"cosine {found['similarity']:.2f}" in caption


def test_title_filter_in_the_collection(page, server_url: str) -> None:
    everything = catalog_videos(server_url)
    part = everything[-1]["title"][1:-1].upper()
    expected = [video["id"] for video in everything if part.casefold() in video["title"].casefold()]
    page.click("nav a[data-page=collection]")
    page.wait_for_function(f"document.querySelectorAll('#collection-grid .collection-card').length === "
                           f"{len(everything)}")
    page.fill("#title-filter", part)
    page.wait_for_function(f"document.querySelector('#collection-grid').dataset.title === {json.dumps(part)}")
    shown = page.eval_on_selector_all("#collection-grid .collection-card",
                                      "cards => cards.map(c => +c.dataset.videoId)")
    assert shown == expected and 1 <= len(shown) < len(everything)
    assert page.text_content("#collection-count") == f"{len(expected)} video{'' if len(expected) == 1 else 's'}"
    page.fill("#title-filter", "no such title")
    page.wait_for_selector("#page-info:has-text('No videos')")
    page.fill("#title-filter", "")
    page.wait_for_function(f"document.querySelectorAll('#collection-grid .collection-card').length === "
                           f"{len(everything)}")


def test_a_results_link_opens_the_same_results_with_a_poster_and_same_track_marks(
        page, browser, server_url: str, artifacts: Path) -> None:
    query, sibling = sibling_pair(server_url)
    # Options chosen in the form, then Find similar on the collection page.
    page.click("#modality [data-modality=fused]")
    page.click("details.advanced summary")
    page.fill("#k", "4")
    page.click("nav a[data-page=collection]")
    page.click(f"#collection-grid .collection-card[data-video-id='{query['id']}'] .find-similar")
    cards = wait_for_results(page, 4)
    link = f"#/search?video={query['id']}&modality=fused&k=4"
    assert page.evaluate("location.hash") == link
    assert page.is_visible("#page-search") and page.text_content("#query-title") == query["title"]
    assert_absolute_similarity(cards)
    # The other excerpt of the query's track is marked, and only it.
    assert [card["id"] for card in cards if card["sameTrack"]] == [sibling["id"]]
    # The query's player shows the catalog's thumbnail until played.
    poster = page.eval_on_selector("#query-player video", "video => video.poster")
    assert poster.endswith(f"/api/videos/{query['id']}/thumbnail")
    assert urllib.request.urlopen(poster, timeout=30).headers["content-type"] == "image/jpeg"
    save_screenshot(page, artifacts / "results-linked.png")

    expected = [card["id"] for card in cards]
    for opened in (f"{server_url}/{link}", f"{server_url}/#video={query['id']}&modality=fused&k=4"):
        with open_page(browser, opened) as fresh:
            again = wait_for_results(fresh, 4)
            assert [card["id"] for card in again] == expected
            assert fresh.get_attribute("#modality [data-modality=fused]", "aria-checked") == "true"
            assert fresh.input_value("#k") == "4"
            assert "late fusion" in fresh.text_content("#results-heading")

    # A link that names a video the catalog does not hold says so.
    with open_page(browser, f"{server_url}/#/search?video=999&modality=audio&k=5") as fresh:
        fresh.wait_for_selector("#error:has-text('video 999: not in the catalog')")
        assert fresh.is_hidden("#results")


def test_mix_from_here_plays_the_queue_one_video_after_another(page, server_url: str, artifacts: Path) -> None:
    query, _ = sibling_pair(server_url)
    page.goto(f"{server_url}/#/search?video={query['id']}&modality=visual&k=5")
    cards = wait_for_results(page)
    page.click("#query-mix")
    page.wait_for_function("document.querySelectorAll('#mix-queue .mix-item').length > 0"
                           " && document.querySelector('#mix').dataset.loading === 'false'")
    expected = api_post(server_url, "/api/mix", {"seeds": [query["id"]], "n": 20, "modality": "visual"})
    queue = page.eval_on_selector_all("#mix-queue .mix-item", "items => items.map(i => +i.dataset.videoId)")
    assert queue == [item["video"]["id"] for item in expected["items"]] and queue[0] == query["id"]
    assert len(queue) >= 3 and len(set(queue)) == len(queue)
    assert page.text_content("#mix-notes") == "".join(expected["notes"])  # the catalog is shorter than 20
    media = [item["video"]["media_url"] for item in expected["items"]]

    def playing() -> str:
        return page.eval_on_selector("#mix-video", "video => new URL(video.src).pathname")

    assert playing() == media[0]
    assert page.get_attribute("#mix-video", "poster").endswith(expected["items"][0]["video"]["thumbnail_url"])
    assert page.text_content("#mix-queue .mix-item.current .mix-item-title") == expected["items"][0]["video"]["title"]
    save_screenshot(page, artifacts / "mix.png")

    # The "next" control moves the player on to the next video.
    page.click("#mix-next")
    assert playing() == media[1] and page.get_attribute("#mix", "data-index") == "1"
    # The end of a video starts the next: play the last half second for real.
    page.wait_for_function("document.querySelector('#mix-video').readyState >= 1")
    page.eval_on_selector("#mix-video", """video => { video.muted = true; video.currentTime = video.duration - 0.5;
                                                      video.play(); }""")
    page.wait_for_function(f"new URL(document.querySelector('#mix-video').src).pathname === {json.dumps(media[2])}",
                           timeout=30_000)
    assert page.get_attribute("#mix", "data-index") == "2"
    assert page.eval_on_selector_all("#mix-queue .mix-item.played", "items => items.length") == 2

    # A result card starts a mix of its own.
    second = cards[1]["id"]
    page.click(f"#cards .result-card[data-video-id='{second}'] .mix-button")
    page.wait_for_function(f"document.querySelector('#mix-queue .mix-item')?.dataset.videoId === '{second}'")
    assert playing() == f"/api/videos/{second}/media"
    assert page.text_content("#mix-heading").startswith(f"Mix from {cards[1]['title']}")


def test_the_map_draws_every_video_shows_its_title_and_opens_its_search(page, server_url: str,
                                                                         artifacts: Path) -> None:
    videos = {video["id"]: video for video in catalog_videos(server_url)}
    page.click("nav a[data-page=map]")
    page.wait_for_function(f"document.querySelectorAll('#map-points .map-point').length === {len(videos)}")
    page.click("#map-space button[data-modality=visual]")
    page.wait_for_function("document.querySelector('#map-points').dataset.space === 'visual'"
                           f" && document.querySelectorAll('#map-points .map-point').length === {len(videos)}")
    assert "#/map?space=visual" in page.url
    marks = page.eval_on_selector_all("#map-points .map-point", "dots => dots.map(dot => Number(dot.dataset.videoId))")
    assert sorted(marks) == sorted(videos)
    legend = page.text_content("#map-legend")
    assert all(video["label"] in legend for video in videos.values())
    chosen = videos[marks[0]]
    page.hover(f"#map-points .map-point[data-video-id='{chosen['id']}']")
    page.wait_for_selector("#map-tip:not([hidden])")
    page.wait_for_function("(() => { const i = document.querySelector('#map-tip img');"
                           " return i.complete && i.naturalWidth > 0; })()")
    assert page.text_content("#map-tip .map-tip-title") == chosen["title"]
    save_screenshot(page, artifacts / "map.png")
    page.click(f"#map-points .map-point[data-video-id='{chosen['id']}']")
    cards = wait_for_results(page)
    assert f"video={chosen['id']}" in page.url and "modality=visual" in page.url
    assert page.is_visible("#page-search") and page.text_content("#query-title") == chosen["title"]
    assert chosen["id"] not in [card["id"] for card in cards]


def test_a_new_query_cancels_the_previous_one(page, served_release, server_url: str) -> None:
    base, release = served_release
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.evaluate("""() => { window.maxPolls = 0; new MutationObserver(() => {
        window.maxPolls = Math.max(window.maxPolls, Number(document.body.dataset.polls)); })
        .observe(document.body, { attributes: true, attributeFilter: ['data-polls'] }); }""")
    # The first query hangs in its download (the local server holds /slow/ paths until released).
    page.fill("#url", f"{base}/slow/clip.mp4")
    page.click("#go")
    page.wait_for_function("document.body.dataset.queryId && document.body.dataset.polls === '1'")
    first = page.evaluate("document.body.dataset.queryId")
    try:
        page.wait_for_function("document.querySelector('#stage').textContent.startsWith('Downloading')")
        # Meanwhile, Find similar on a catalog video.
        video = catalog_videos(server_url)[0]
        page.click("nav a[data-page=collection]")
        page.click(f"#collection-grid .collection-card[data-video-id='{video['id']}'] .find-similar")
        wait_for_results(page)
        assert page.evaluate("document.body.dataset.generation") == "2"
        assert page.evaluate("document.body.dataset.queryId") != first
        assert page.text_content("#query-title") == video["title"]
        assert page.text_content("#query-source") == video["source"]
        # The first query's poll loop stopped: no more requests for it, one loop at most ever, none left.
        polled = sum(f"/api/queries/{first}" in url for url in requests)
        assert polled >= 1
        time.sleep(1.5)
        assert sum(f"/api/queries/{first}" in url for url in requests) == polled
        assert page.evaluate("window.maxPolls") == 1 and page.evaluate("document.body.dataset.polls") == "0"
    finally:
        release.set()  # the first query's download now fails on the server
    try:
        status = api_get(server_url, f"/api/queries/{first}")
        deadline = time.monotonic() + 30
        while status["status"] not in ("done", "failed") and time.monotonic() < deadline:
            time.sleep(0.2)
            status = api_get(server_url, f"/api/queries/{first}")
        assert status["status"] == "failed"
        time.sleep(1.0)
        # Its failure never reaches the page, which still shows the second query's results.
        assert page.is_hidden("#error") and page.is_hidden("#progress") and page.is_visible("#results")
        assert page.text_content("#query-title") == video["title"]
        assert sum(f"/api/queries/{first}" in url for url in requests) == polled
    finally:
        release.clear()


@pytest.mark.parametrize("where", ["search", "results and mix", "collection", "evaluation", "map"])
def test_a_narrow_screen_never_scrolls_sideways(browser, server_url: str, artifacts: Path, where: str) -> None:
    with open_page(browser, server_url, width=390, height=844) as narrow:
        if where == "results and mix":
            query, _ = sibling_pair(server_url)
            narrow.goto(f"{server_url}/#/search?video={query['id']}&modality=fused&k=5")
            wait_for_results(narrow)
            narrow.click("#query-mix")
            narrow.wait_for_function("document.querySelectorAll('#mix-queue .mix-item').length > 0")
        elif where != "search":
            narrow.click(f"nav a[data-page={where}]")
            narrow.wait_for_selector(f"#page-{where}:not([hidden])")
            if where == "collection":
                narrow.wait_for_selector("#collection-grid .collection-card")
            if where == "map":
                narrow.wait_for_selector("#map-points .map-point")
        else:
            narrow.click("details.advanced summary")
        width = narrow.evaluate("document.documentElement.scrollWidth")
        save_screenshot(narrow, artifacts / f"narrow-{where.replace(' ', '-')}.png")
        assert width <= 390, f"{where}: the page is {width} px wide on a 390 px screen"


# adding videos (mvr serve --allow-indexing) ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def indexing_server_url(catalog_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server started with ``--allow-indexing``, over a copy of the web catalog that it may add videos to."""
    copy = tmp_path_factory.mktemp("indexing") / "catalog"
    shutil.copytree(catalog_dir, copy, ignore=shutil.ignore_patterns("tmp", ".ready"))
    with uvicorn_server(create_app(ServiceSettings(catalog=copy, allow_indexing=True))) as url:
        yield url


def test_add_a_file_to_the_collection_from_the_page(browser, page, indexing_server_url: str, music_videos,
                                                    artifacts: Path) -> None:
    # Without the flag the page offers no way to add videos.
    page.click("nav a[data-page=collection]")
    page.wait_for_selector("body[data-indexing=off]")
    assert page.is_hidden("#index-form")
    new = held_out(music_videos)[0]
    with open_page(browser, f"{indexing_server_url}/#/collection") as adding:
        adding.wait_for_selector("body[data-indexing=allowed]")
        adding.wait_for_function("document.querySelectorAll('#collection-grid .collection-card').length === 6")
        assert adding.is_visible("#index-form")
        adding.set_input_files("#index-file", str(new))
        assert adding.text_content("#index-drop-text").startswith(new.name)
        adding.fill("#index-label", "newcomers")
        adding.fill("#index-title", "Added from the page")
        adding.click("#index-go")
        adding.wait_for_selector("#index-form[data-state=running]")
        adding.wait_for_selector("#index-progress:has-text('Added #7 Added from the page')", timeout=RESULTS_TIMEOUT_MS)
        adding.wait_for_function("document.querySelectorAll('#collection-grid .collection-card').length === 7")
        card = "#collection-grid .collection-card[data-video-id='7']"
        assert adding.text_content(f"{card} .title") == "Added from the page"
        assert adding.text_content(f"{card} .label") == "newcomers"
        adding.wait_for_function(f"document.querySelector(\"{card} img.thumb\")?.naturalWidth > 0")
        assert adding.is_hidden("#index-error") and adding.input_value("#index-label") == ""
        labels = adding.eval_on_selector_all("#label-filter option", "options => options.map(o => o.value)")
        assert "newcomers" in labels
        adding.wait_for_selector("#catalog-info:has-text('7 videos · 3 labels')")
        save_screenshot(adding, artifacts / "collection-added.png")
        # The same file again: reported as the video the collection holds, nothing added.
        adding.set_input_files("#index-file", str(new))
        adding.click("#index-go")
        adding.wait_for_selector("#index-progress:has-text('Already in the collection as #7')",
                                 timeout=RESULTS_TIMEOUT_MS)
        assert adding.eval_on_selector_all("#collection-grid .collection-card", "cards => cards.length") == 7
        # A file that is not a video: its one-line error under the form.
        adding.set_input_files("#index-file", {"name": "notes.mp4", "mimeType": "video/mp4",
                                               "buffer": b"not a video\n"})
        adding.click("#index-go")
        adding.wait_for_selector("#index-error:has-text('notes.mp4: not a media file')")
        assert adding.is_hidden("#index-progress")
    assert len(catalog_videos(indexing_server_url)) == 7
    with open_page(browser, f"{indexing_server_url}/#/collection", width=390, height=844) as narrow:
        narrow.wait_for_selector("#index-form:not([hidden])")
        save_screenshot(narrow, artifacts / "narrow-add-a-video.png")
        assert narrow.evaluate("document.documentElement.scrollWidth") <= 390  # the form reflows too
