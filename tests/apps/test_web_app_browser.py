"""The web app end to end in a real headless browser: Debian's chromium driven by Selenium through chromedriver.

The app serves a tiny random RGNet (with a tiny random CLIP as its feature encoder) on 127.0.0.1. The test uploads a
generated video, submits without a query (an error must show), then with two queries, reads the moments from the
page and checks them against the pipeline run directly on the same inputs, plays the best moment's clip and then
another one chosen in the list. It saves a screenshot of the page: to `$RGNET_APP_SCREENSHOT` when set (the docs'
picture, docs/images/app.png, is made that way), else into the test's temporary folder.
A last test searches a generated two-video library on the library page (`rgnet-hf app --index`).

Nothing is downloaded: Selenium gets the system chromedriver's path, so it never runs Selenium Manager.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "no headless browser: the web app's browser test needs Debian's chromium and chromedriver "
        "(apt-get install -y chromium chromium-driver)",
        allow_module_level=True,
    )
pytest.importorskip("gradio", reason="the web app needs the app extra (gradio)")
pytest.importorskip("selenium", reason="the browser test needs selenium (dev extra)")

from app_videos import make_stamped_video  # noqa: E402
from conftest import free_port  # noqa: E402
from raw_video_utils import PALETTE, build_tiny_clip, build_tiny_rgnet, make_test_video  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from rgnet_hf.apps.web_app import MOMENT_MIN_PX, GroundingApp, GroundingResult, launch, render_timeline  # noqa: E402

WAIT_S = 30  # every wait on the page is bounded
QUERIES = ["a man opens the door.", "the car drives down the street at night."]
TOP_K = 4


@pytest.fixture(scope="module")
def served_app(tmp_path_factory):
    """The app on 127.0.0.1 (shut down afterwards), its logic object and the test video."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    root = tmp_path_factory.mktemp("app_browser")
    clip = build_tiny_clip(root / "clip")
    model = build_tiny_rgnet(root / "rgnet", clip)
    video = make_test_video(root / "street.mp4", colors=PALETTE[:8], fps=10, size=(160, 96))
    # Ten minutes at 2 frames per second: 1200 features to encode, long enough to watch the progress.
    long_video = make_test_video(root / "long.mp4", colors=PALETTE * 6, seconds_per_color=10, fps=2, size=(64, 48))
    # Small limits, so that the page's refusals can be seen: every video above is far below them.
    app = GroundingApp(model, device="cpu", examples=[video], max_upload_mb=1, max_video_minutes=30)
    page = launch(app, host="127.0.0.1", port=free_port(), block=False, quiet=True)
    try:
        yield app, page.local_url, video, long_video
    finally:
        page.close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1250",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
    ):
        options.add_argument(argument)
    # With the driver's path given, Selenium skips Selenium Manager: nothing is looked up or downloaded.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _clip_state(driver) -> dict | None:
    return driver.execute_script(
        "const v = document.querySelector('#rgnet-clip video');"
        "return v ? {src: v.src, ready: v.readyState, duration: v.duration, error: v.error && v.error.code} : null;"
    )


def _moments_on_page(driver) -> list[list[dict]]:
    rankings = []
    for query in driver.find_elements(By.CSS_SELECTOR, "#rgnet-timeline .rgnet-query"):
        moments = [
            {name: float(bar.get_attribute(f"data-{name}")) for name in ("rank", "start", "end", "score")}
            for bar in query.find_elements(By.CSS_SELECTOR, ".rgnet-moment")
        ]
        rankings.append((query.get_attribute("data-query"), sorted(moments, key=lambda moment: moment["rank"])))
    return rankings


def test_app_in_a_browser(served_app, browser, tmp_path):
    app, url, video, _ = served_app
    wait = WebDriverWait(browser, WAIT_S)
    browser.get(url)
    wait.until(expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, "#rgnet-submit")))

    browser.find_element(By.CSS_SELECTOR, "#rgnet-video input[type=file]").send_keys(str(video))
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#rgnet-video video")))

    # No query yet: the page says so instead of grounding.
    browser.find_element(By.CSS_SELECTOR, "#rgnet-submit").click()
    toast = wait.until(expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, "[data-testid=toast-body]")))
    assert "at least one query" in toast.text
    browser.find_element(By.CSS_SELECTOR, "[data-testid=toast-close]").click()
    assert not browser.find_elements(By.CSS_SELECTOR, "#rgnet-timeline .rgnet-moment")

    queries = browser.find_element(By.CSS_SELECTOR, "#rgnet-queries textarea")
    queries.send_keys(QUERIES[0] + Keys.ENTER + QUERIES[1])
    top_k = browser.find_element(By.CSS_SELECTOR, "#rgnet-top-k input[type=number]")
    top_k.send_keys(Keys.CONTROL, "a")
    top_k.send_keys(str(TOP_K) + Keys.TAB)
    browser.find_element(By.CSS_SELECTOR, "#rgnet-submit").click()
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#rgnet-timeline .rgnet-moment")))

    duration = float(browser.find_element(By.CSS_SELECTOR, ".rgnet-timeline").get_attribute("data-duration"))
    assert duration == pytest.approx(8.0, abs=1e-3)
    on_page = _moments_on_page(browser)
    direct = app.pipe({"video": str(video), "text": QUERIES}, top_k=TOP_K)
    assert [query for query, _ in on_page] == QUERIES
    for (_, moments), reference in zip(on_page, direct):
        assert 1 <= len(moments) <= TOP_K
        assert len(moments) == len(reference)
        assert [moment["rank"] for moment in moments] == list(range(1, len(moments) + 1))
        scores = [moment["score"] for moment in moments]
        assert scores == sorted(scores, reverse=True)
        for moment, expected in zip(moments, reference):
            assert 0.0 <= moment["start"] <= moment["end"] <= duration
            # The page rounds seconds to 4 decimals and scores to 6.
            assert moment["start"] == pytest.approx(expected["start"], abs=6e-5)
            assert moment["end"] == pytest.approx(expected["end"], abs=6e-5)
            assert moment["score"] == pytest.approx(expected["score"], abs=6e-7)

    # The best moment of the first query plays: a clip the browser decodes, about as long as the moment.
    wait.until(lambda driver: (_clip_state(driver) or {}).get("ready", 0) >= 2)
    first = _clip_state(browser)
    best = on_page[0][1][0]
    assert first["error"] is None
    assert first["duration"] == pytest.approx(max(best["end"] - best["start"], 0.1), abs=0.25)

    # Another moment, chosen in the list, replaces the clip.
    browser.find_element(By.CSS_SELECTOR, "#rgnet-moment input").click()
    options = wait.until(
        expected_conditions.visibility_of_all_elements_located((By.CSS_SELECTOR, "[data-testid=dropdown-option]"))
    )
    assert len(options) == sum(len(moments) for _, moments in on_page)
    options[len(on_page[0][1])].click()  # the second query's best moment
    wait.until(lambda driver: (_clip_state(driver) or {}).get("src") not in (None, first["src"]))
    wait.until(lambda driver: (_clip_state(driver) or {}).get("ready", 0) >= 2)
    second = _clip_state(browser)
    other = on_page[1][1][0]
    assert second["error"] is None
    assert second["duration"] == pytest.approx(max(other["end"] - other["start"], 0.1), abs=0.25)

    browser.execute_script("window.scrollTo(0, 0); document.activeElement.blur();")
    screenshot = Path(os.environ.get("RGNET_APP_SCREENSHOT") or tmp_path / "app.png")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000


# Records every progress text the page shows, however briefly, from the moment it is installed, and with each change
# the visible progress trackers (Gradio's status overlays) beside the boxes of the app's components.
WATCH_PROGRESS = """
window.rgnetProgress = [];
window.rgnetTrackers = [];
const box = (element) => {
  const r = element.getBoundingClientRect();
  return [r.left, r.top, r.right, r.bottom];
};
new MutationObserver(() => {
  for (const element of document.querySelectorAll('.progress-text, .meta-text, .meta-text-center')) {
    const text = element.textContent.trim();
    if (text && !window.rgnetProgress.includes(text)) window.rgnetProgress.push(text);
  }
  const trackers = [...document.querySelectorAll('.wrap.full:not(.hide), .wrap.minimal:not(.hide)')];
  const texts = [...document.querySelectorAll('.progress-text')].filter((element) => element.offsetParent !== null);
  if (!trackers.length && !texts.length) return;
  window.rgnetTrackers.push({
    trackers: trackers.map((element) => ({owner: element.closest('[id^=rgnet-]')?.id, box: box(element)})),
    texts: texts.length,
    components: [...document.querySelectorAll('[id^=rgnet-]')].map((element) => ({id: element.id, box: box(element)})),
  });
}).observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
"""


def _overlap(a: list[float], b: list[float], tolerance: float = 1.0) -> bool:
    """Whether two `[left, top, right, bottom]` boxes share more than a `tolerance`-pixel sliver."""
    return min(a[2], b[2]) - max(a[0], b[0]) > tolerance and min(a[3], b[3]) - max(a[1], b[1]) > tolerance


def test_long_video_shows_encoding_progress(served_app, browser):
    _, url, _, long_video = served_app
    wait = WebDriverWait(browser, WAIT_S)
    browser.get(url)
    wait.until(expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, "#rgnet-submit")))
    browser.find_element(By.CSS_SELECTOR, "#rgnet-video input[type=file]").send_keys(str(long_video))
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#rgnet-video video")))
    browser.find_element(By.CSS_SELECTOR, "#rgnet-queries textarea").send_keys(QUERIES[0])
    browser.execute_script(WATCH_PROGRESS)
    browser.find_element(By.CSS_SELECTOR, "#rgnet-submit").click()
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#rgnet-timeline .rgnet-moment")))
    shown = browser.execute_script("return window.rgnetProgress")
    # The encoder's progress bar, relayed by Gradio: "done/total frame" counts part way through the video.
    counts = [re.match(r"([\d.]+k?)/([\d.]+k?) frame", text) for text in shown]
    partial = [match.groups() for match in counts if match and match.group(1) != match.group(2)]
    assert partial, f"no encoding progress was shown; the page showed {shown}"
    # One progress bar, drawn on the timeline, inside its box and over no other box, at every moment.
    snapshots = browser.execute_script("return window.rgnetTrackers")
    assert snapshots, "no progress tracker was seen"
    for snapshot in snapshots:
        assert len(snapshot["trackers"]) <= 1 and snapshot["texts"] <= 1, snapshot
        for tracker in snapshot["trackers"]:
            assert tracker["owner"] == "rgnet-timeline", snapshot
            for component in snapshot["components"]:
                if component["id"] != tracker["owner"]:
                    assert not _overlap(tracker["box"], component["box"]), (component["id"], snapshot)
    duration = float(browser.find_element(By.CSS_SELECTOR, ".rgnet-timeline").get_attribute("data-duration"))
    assert duration == pytest.approx(600.0, abs=1e-3)


# Every moment bar of the timeline with its track's box, its own box and whether its rank number fits in it.
MOMENT_BOXES = """
return [...document.querySelectorAll('#rgnet-timeline .rgnet-moment')].map((moment) => {
  const own = moment.getBoundingClientRect();
  const track = moment.closest('.rgnet-track').getBoundingClientRect();
  return {rank: moment.textContent, left: own.left, right: own.right, width: own.width, track_left: track.left,
          track_right: track.right, fits: moment.scrollWidth <= moment.clientWidth};
});
"""


def test_a_short_moment_at_the_end_of_a_long_video_stays_visible_and_labelled(served_app, browser):
    _, url, _, _ = served_app
    wait = WebDriverWait(browser, WAIT_S)
    browser.get(url)
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#rgnet-timeline")))
    # The page's own timeline markup and style, for a 0.5 s moment in the last second of a 2-hour video (and two more).
    moments = [
        {"start": 7199.5, "end": 7200.0, "score": 0.9},
        {"start": 0.0, "end": 0.5, "score": 0.5},
        {"start": 3600.0, "end": 5400.0, "score": 0.4},
    ]
    page = render_timeline(GroundingResult("movie.mp4", 7200.0, ["the credits roll"], [moments]))
    browser.execute_script("document.querySelector('#rgnet-timeline').innerHTML = arguments[0];", page)
    boxes = browser.execute_script(MOMENT_BOXES)
    assert [box["rank"] for box in boxes] == ["1", "2", "3"]
    for box in boxes:
        assert box["track_left"] - 0.5 <= box["left"] and box["right"] <= box["track_right"] + 0.5, box
        assert box["width"] >= MOMENT_MIN_PX - 0.5 and box["fits"], box
    track_width = boxes[2]["track_right"] - boxes[2]["track_left"]
    assert boxes[2]["width"] == pytest.approx(track_width / 4, abs=1.0)  # a long moment keeps its share


def _toast(browser, wait) -> str:
    toast = wait.until(expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, "[data-testid=toast-body]")))
    text = toast.text
    browser.find_element(By.CSS_SELECTOR, "[data-testid=toast-close]").click()
    return text


def test_videos_beyond_the_limits_are_refused_with_a_message(served_app, browser, tmp_path):
    _, url, _, _ = served_app
    wait = WebDriverWait(browser, WAIT_S)
    browser.get(url)
    wait.until(expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, "#rgnet-submit")))
    # A 1.5 KB file stamped to last 20 hours: refused from its declared duration, before any decoding.
    stamped = make_stamped_video(tmp_path / "twenty_hours.mp4", 20 * 3600)
    browser.find_element(By.CSS_SELECTOR, "#rgnet-video input[type=file]").send_keys(str(stamped))
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#rgnet-video video")))
    browser.find_element(By.CSS_SELECTOR, "#rgnet-queries textarea").send_keys(QUERIES[0])
    browser.find_element(By.CSS_SELECTOR, "#rgnet-submit").click()
    message = _toast(browser, wait)
    assert "lasts 1200.0 minutes" in message and "limit of 30 minutes" in message, message
    assert "--max-video-minutes" in message
    assert not browser.find_elements(By.CSS_SELECTOR, "#rgnet-timeline .rgnet-moment")
    # A file over the upload limit never reaches the server: Gradio refuses it in the page.
    big = tmp_path / "big.mp4"
    big.write_bytes(stamped.read_bytes() + bytes(3 * 1024 * 1024 // 2))
    browser.get(url)
    wait.until(expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, "#rgnet-submit")))
    browser.find_element(By.CSS_SELECTOR, "#rgnet-video input[type=file]").send_keys(str(big))
    message = _toast(browser, wait)
    assert "exceed the maximum allowed size of 1.0 Mb" in message and "big.mp4" in message, message
    assert not browser.find_elements(By.CSS_SELECTOR, "#rgnet-video video")


def test_library_search_in_a_browser(browser, tmp_path):
    """`rgnet-hf app --index`: a search over a generated two-video library shows one timeline per video with results,
    the moments the pipeline finds, and plays the best one."""
    import sys

    import numpy as np

    pytest.importorskip("faiss", reason="library search needs the search extra (faiss-cpu)")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "search"))
    from library_utils import write_cache
    from raw_video_utils import CLIP_PROJECTION_DIM

    from rgnet_hf import RGNetForVideoGrounding
    from rgnet_hf.apps.library_app import LibrarySearchApp
    from rgnet_hf.search import LibraryIndex

    clip = build_tiny_clip(tmp_path / "clip")
    model = build_tiny_rgnet(tmp_path / "rgnet", clip)
    make_test_video(tmp_path / "kitchen.mp4", colors=PALETTE[:6], seconds_per_color=2.0, fps=10)
    make_test_video(tmp_path / "street.mp4", colors=PALETTE[:4], seconds_per_color=2.0, fps=10)
    generator = np.random.default_rng(0)
    videos = {
        key: generator.normal(size=(length, CLIP_PROJECTION_DIM)) for key, length in (("kitchen", 24), ("street", 16))
    }
    cache = write_cache(tmp_path / "features.h5", videos, encoder=str(clip.resolve()), rate=0.5)
    LibraryIndex.update(tmp_path / "index", [cache], RGNetForVideoGrounding.from_pretrained(model).config)
    app = LibrarySearchApp(tmp_path / "index", model, device="cpu")
    app.pipe.engine.top_k_windows = 100  # every window decoded: both videos get moments
    page = launch(app, host="127.0.0.1", port=free_port(), block=False, quiet=True)
    try:
        wait = WebDriverWait(browser, WAIT_S)
        browser.get(page.local_url)
        wait.until(expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, "#rgnet-submit")))
        browser.find_element(By.CSS_SELECTOR, "#rgnet-queries textarea").send_keys(QUERIES[0])
        browser.find_element(By.CSS_SELECTOR, "#rgnet-exhaustive input").click()
        browser.find_element(By.CSS_SELECTOR, "#rgnet-submit").click()
        wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#rgnet-timeline .rgnet-moment")))
        direct = app.pipe({"library": str(tmp_path / "index"), "text": QUERIES[0]}, top_k=10, exhaustive=True)
        blocks = browser.find_elements(By.CSS_SELECTOR, "#rgnet-timeline .rgnet-video")
        keys = [block.get_attribute("data-key") for block in blocks]
        assert sorted(keys) == sorted({moment["key"] for moment in direct}) == ["kitchen", "street"]
        assert keys[0] == direct[0]["key"]  # the video of the best moment first
        on_page = {}
        for block in blocks:
            for bar in block.find_elements(By.CSS_SELECTOR, ".rgnet-moment"):
                rank = int(bar.get_attribute("data-rank"))
                assert bar.text == f"#{rank}"
                on_page[rank] = (block.get_attribute("data-key"), float(bar.get_attribute("data-score")))
        assert sorted(on_page) == list(range(1, len(direct) + 1))
        for rank, moment in enumerate(direct, 1):
            assert on_page[rank][0] == moment["key"]
            assert on_page[rank][1] == pytest.approx(moment["score"], abs=6e-7)
        wait.until(lambda driver: (_clip_state(driver) or {}).get("ready", 0) >= 2)
        played = _clip_state(browser)
        assert played["error"] is None
        assert played["duration"] == pytest.approx(max(direct[0]["end"] - direct[0]["start"], 0.1), abs=0.25)
    finally:
        page.close()
