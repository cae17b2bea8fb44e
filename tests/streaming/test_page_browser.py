"""The operator's page (streaming/page.py) in a real headless chromium against the real service on one local Ray.

One service for the module: the demo camera (`demo://street?seed=0`, a vehicle crossing every 20 s) behind a
token, mounted at a route prefix so that every link must honour it; it learns with the tiny schedule, so the
Learning page's test records, learns and swaps the new bundle in within a minute or so. Chromium (Debian's `chromium` and
`chromium-driver`, driven by selenium) loads the page on 127.0.0.1; its network log must show no other host.
Screenshots go to the test's tmp folder; with VAD_UPDATE_SCREENSHOTS=1 also to docs/screenshots/ (the README's).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from PIL import Image

from tests.streaming.service_support import SERVE_PORT, demo_bundle, ensure_ray, wait_for

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
ORIGIN = f"http://127.0.0.1:{SERVE_PORT}"
PREFIX = "/vadpage"
BASE = ORIGIN + PREFIX
TOKEN = "page-t0ken-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    from ray import serve

    from streaming.app import build_app

    bundle = demo_bundle(tmp_path_factory.mktemp("page"))
    ensure_ray()
    args = {
        "cameras": [{"name": "demo", "url": "demo://street?seed=0", "fps": 10}],
        "scorer": {"bundle": str(bundle), "build_demo_bundle": False, "num_cpus": 0.5, "max_wait_ms": 50},
        "alerts": {"min_duration_s": 0.5, "hysteresis": 0.1},  # the shipped config's: threshold from the bundle
        "events": {"path": str(tmp_path_factory.mktemp("ev") / "events.db")},
        # 9 s segments: a recording of 18 s gives one clip to train on (its tail calibrates) and one kept unseen
        "recordings": {"segment_minutes": 0.15, "min_free_bytes": 0},
        "learn": {"schedule": "tiny"},
        "http": {"token": TOKEN, "port": SERVE_PORT},
        "namespace": "vadpage",
    }
    serve.run(build_app(args), name="vadpage", route_prefix=PREFIX)
    yield BASE
    serve.delete("vadpage")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for tool in ("chromium", "chromedriver"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: install Debian's chromium and chromium-driver (deploy/install.sh --test)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1024,768",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--disable-domain-reliability", "--disable-extensions"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def requested() -> set[str]:
    """Every URL the browser asked for during the module (filled from chromium's network log)."""
    return set()


def api(path: str) -> dict | list:
    """GET a JSON route of the service with the bearer token (200 expected, else the answer is shown)."""
    r = requests.get(f"{BASE}{path}", headers=BEARER, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json", (path, r.status_code, r.text[:300])
    return r.json()


def drain_network_log(driver, seen: set[str]) -> set[str]:
    """Add the URLs of every request chromium sent since the last call (DevTools Network events) to `seen`."""
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            seen.add(msg["params"]["request"]["url"])
    return seen


def assert_only_this_service(driver, seen: set[str]) -> None:
    """Every request the page made (network log and the page's own resource timing) went to 127.0.0.1."""
    drain_network_log(driver, seen)
    timing = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    urls = seen | set(timing) | {driver.current_url}
    foreign = {u for u in urls if not u.startswith("data:") and urlsplit(u).hostname != "127.0.0.1"}
    assert not foreign, foreign
    assert any("/ui/static/page.js" in u for u in urls) and any("/ui/static/page.css" in u for u in urls), urls


def screenshot(driver, tmp_path: Path, name: str) -> Path:
    """PNG of the window into the test's tmp folder (and, with VAD_UPDATE_SCREENSHOTS=1, docs/screenshots/)."""
    out = tmp_path / f"{name}.png"
    driver.save_screenshot(str(out))
    assert Image.open(out).size[0] >= 800
    if os.environ.get("VAD_UPDATE_SCREENSHOTS") == "1":
        dest = REPO / "docs" / "screenshots" / f"{name}.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        Image.open(out).convert("RGB").quantize(colors=96).save(dest, optimize=True)  # small: a flat UI palette
    return out


def fits_a_phone(driver) -> bool:
    """No horizontal scrolling at a phone's width (390 CSS px)."""
    driver.set_window_size(390, 844)
    try:
        return wait_for(lambda: driver.execute_script(
            "return window.innerWidth <= 420 && document.documentElement.scrollWidth <= window.innerWidth"), 10,
            "the phone layout")
    finally:
        driver.set_window_size(1024, 768)


def test_page_refuses_without_the_token_and_opens_with_it(service, browser, requested, tmp_path):
    from selenium.webdriver.common.by import By

    r = requests.get(f"{service}/", timeout=30)
    assert r.status_code == 401 and 'name=token' in r.text and "text/html" in r.headers["content-type"]
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert requests.get(f"{service}/?token=wrong", timeout=30).status_code == 401
    assert requests.get(f"{service}/ui/events", timeout=30).status_code == 401
    assert requests.get(f"{service}/cameras/demo/scores", timeout=30).status_code == 401
    assert requests.get(f"{service}/cameras/demo/scores", headers=BEARER, timeout=30).status_code == 200

    # the login form: a wrong token is refused, the right one opens the cameras page
    browser.get(f"{service}/ui/events")
    assert browser.title.startswith("Token needed")
    browser.find_element(By.NAME, "token").send_keys("wrong")
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait_for(lambda: "Wrong token" in browser.page_source, 10, "the refusal")
    browser.find_element(By.NAME, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait_for(lambda: browser.title.startswith("Events"), 20, "the events page after logging in")
    assert browser.current_url == f"{service}/ui/events"

    # ?token= once: a redirect to the page without it, setting an HttpOnly SameSite=Strict cookie (not the token)
    browser.delete_all_cookies()
    browser.get(f"{service}/")
    assert browser.title.startswith("Token needed")
    browser.get(f"{service}/?token={TOKEN}")
    wait_for(lambda: browser.title.startswith("Cameras"), 20, "the cameras page")
    assert browser.current_url == f"{service}/" and TOKEN not in browser.current_url
    (cookie,) = browser.get_cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == PREFIX
    assert TOKEN not in cookie["value"]
    sess = {cookie["name"]: cookie["value"]}  # the cookie is what the page's data calls carry
    assert requests.get(f"{service}/cameras/demo", cookies=sess, timeout=30).status_code == 200
    assert requests.get(f"{service}/cameras/demo", cookies={cookie["name"]: "0" * 64}, timeout=30).status_code == 401
    assert_only_this_service(browser, requested)


def test_cameras_page_shows_the_stream_and_its_chart_moves(service, browser, requested, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(f"{service}/")
    card = browser.find_element(By.CSS_SELECTOR, 'section.camera[data-camera="demo"]')
    wait_for(lambda: "streaming" in card.find_element(By.CSS_SELECTOR, ".state").text, 60, "state streaming")
    chart = card.find_element(By.CSS_SELECTOR, "canvas.chart")
    first = wait_for(lambda: int(chart.get_attribute("data-points") or 0) > 0 and float(chart.get_attribute("data-last")),
                     60, "the first score points on the chart")
    n0 = int(chart.get_attribute("data-points"))
    wait_for(lambda: float(chart.get_attribute("data-last")) > first and int(chart.get_attribute("data-points")) > n0,
             30, "newer score points on the chart")
    frame = card.find_element(By.CSS_SELECTOR, "img.frame")
    wait_for(lambda: browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", frame) >= 256,
             20, "the live frame")
    data = api("/cameras/demo/scores?seconds=60")
    assert 0 < data["threshold"] < 1 and len(data["points"]) > 0 and all(len(p) == 2 for p in data["points"])
    assert float(chart.get_attribute("data-threshold")) == data["threshold"]  # the chart draws the threshold line
    r = requests.get(f"{service}/cameras/demo/scores?seconds=0", headers=BEARER, timeout=30)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.seconds"
    assert requests.get(f"{service}/cameras/nobody/frame", headers=BEARER, timeout=30).status_code == 404
    assert fits_a_phone(browser)
    assert_only_this_service(browser, requested)


def test_a_demo_alert_is_listed_with_its_snapshot_and_labelled_from_the_page(service, browser, requested, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(f"{service}/ui/events")
    # the list refreshes itself (page.js re-renders the live region every 5 s): the vehicle crossing appears
    item = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "li.event"), 90, "the demo alert in the list")[-1]
    eid = int(item.get_attribute("data-event"))
    thumb = item.find_element(By.CSS_SELECTOR, "img.thumb")
    wait_for(lambda: browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", thumb) > 0,
             20, "the snapshot thumbnail")
    assert "demo" in item.text and "peak" in item.text
    screenshot(browser, tmp_path, "events")
    assert fits_a_phone(browser)

    item.find_element(By.CSS_SELECTOR, "h2 a").click()
    wait_for(lambda: browser.title.startswith(f"Event {eid}"), 20, "the event page")
    snap = browser.find_element(By.CSS_SELECTOR, "img.snapshot")
    wait_for(lambda: browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", snap) > 0,
             20, "the snapshot")
    trace = browser.find_element(By.CSS_SELECTOR, "canvas.trace")
    wait_for(lambda: int(trace.get_attribute("data-points") or 0) > 10, 20, "the score trace around the alert")
    # the page follows the event: it closes, and its trace is completed up to 5 s after the end
    wait_for(lambda: trace.get_attribute("data-end") and float(trace.get_attribute("data-last") or 0)
             >= float(trace.get_attribute("data-end")) + 4.5, 40, "the completed trace on the page")
    stored = api(f"/events/{eid}/scores")
    ev = api(f"/events/{eid}")
    assert stored["points"][0][0] <= ev["start_s"] - 9 and max(v for _, v in stored["points"]) >= stored["threshold"]
    assert ev["label"] is None

    for label, text in (("false_alarm", "false alarm"), ("anomaly", "anomaly")):
        browser.find_element(By.CSS_SELECTOR, f'.buttons .label-button[data-label="{label}"]').click()
        wait_for(lambda: api(f"/events/{eid}")["label"] == label, 20, f"the API to return label {label}")
        wait_for(lambda: f"label-{label}" in browser.find_element(By.CSS_SELECTOR, f'[data-live="event-{eid}"]')
                 .get_attribute("innerHTML"), 20, "the page to show the label")
        ids = lambda q: [e["id"] for e in api(f"/events?label={q}")]  # noqa: E731
        assert eid in ids(label) and eid not in ids("none")
    assert "chosen" in browser.find_element(By.CSS_SELECTOR, '.label-button[data-label="anomaly"]').get_attribute("class")
    screenshot(browser, tmp_path, "event")
    assert fits_a_phone(browser)

    r = requests.post(f"{service}/events/{eid}/label", json={"label": "maybe"}, headers=BEARER, timeout=30)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.label", r.text
    r = requests.post(f"{service}/events/99999/label", json={"label": "anomaly"}, headers=BEARER, timeout=30)
    assert r.status_code == 404
    assert requests.post(f"{service}/events/{eid}/label", json={"label": "anomaly"}, timeout=30).status_code == 401
    r = requests.get(f"{service}/events?label=maybe", headers=BEARER, timeout=30)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.label"
    assert_only_this_service(browser, requested)


def test_docs_work_offline_and_the_token_stays_out_of_the_logs(service, browser, requested, tmp_path):
    from selenium.webdriver.common.by import By

    # the cameras page again, a minute into the stream: a full chart, the alert on it, live numbers
    browser.get(f"{service}/")
    chart = browser.find_element(By.CSS_SELECTOR, "canvas.chart")
    wait_for(lambda: int(chart.get_attribute("data-points") or 0) >= 100, 30, "a longer chart")
    stats = browser.find_element(By.CSS_SELECTOR, '[data-live="camera-demo"]')
    wait_for(lambda: "warming up" not in stats.text and " s" in stats.text, 30, "live numbers (score, lag)")
    screenshot(browser, tmp_path, "cameras")

    browser.get(f"{service}/docs")
    assert browser.title.startswith("API")
    assert "/events/{event_id}/label" in browser.find_element(By.TAG_NAME, "table").text
    link = browser.find_element(By.CSS_SELECTOR, 'a[href$="/openapi.json"]').get_attribute("href")
    assert requests.get(link, timeout=30).json()["paths"]["/events/{event_id}/label"]["post"]
    screenshot(browser, tmp_path, "docs")
    assert_only_this_service(browser, requested)

    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    hits = [p for p in logs.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert not hits, hits
    ready = [p for p in logs.rglob("*") if p.is_file() and b"vad service ready" in p.read_bytes()]
    assert ready, "no 'vad service ready' line in the Ray logs"


def test_learning_page_records_learns_and_swaps_the_new_bundle_in(service, browser, requested, tmp_path):
    """Last in the module: the demo camera ends up scoring with the tiny bundle learned here."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(f"{service}/?token={TOKEN}")  # logged in already, unless this test runs alone
    browser.find_element(By.LINK_TEXT, "Learning").click()
    wait_for(lambda: browser.title.startswith("Learning"), 20, "the Learning page from the navigation")
    assert browser.current_url == f"{service}/ui/learning"
    card = browser.find_element(By.CSS_SELECTOR, 'section.learning[data-camera="demo"]')
    default = api("/cameras/demo")["bundle"]
    assert default["default"] and default["sha256"] in card.find_element(By.CSS_SELECTOR, '[data-live="model-demo"]').text
    error = card.find_element(By.CSS_SELECTOR, ".api-error")
    minutes = card.find_element(By.CSS_SELECTOR, "form.record input[name=minutes]")
    record = card.find_element(By.CSS_SELECTOR, "form.record button")
    learn = card.find_element(By.CSS_SELECTOR, "form.learn button")

    def refused(status: int, *words: str) -> str:
        text = wait_for(lambda: error.is_displayed() and f"HTTP {status}" in error.text and error.text, 20,
                        f"the page to show the API's {status}")
        assert f"HTTP {status}" in text and all(w in text for w in words), text
        return text

    # the API's refusals reach the operator: nothing recorded yet (409), a bad field named (422), busy (409)
    assert Select(card.find_element(By.NAME, "schedule")).first_selected_option.get_attribute("value") == "tiny"
    learn.click()
    refused(409, "no recordings")
    minutes.clear()
    minutes.send_keys("0")
    record.click()
    refused(422, "body.minutes")
    minutes.clear()
    minutes.send_keys("0.3")
    record.click()
    wait_for(lambda: not error.is_displayed(), 10, "the error to clear")
    item = wait_for(lambda: card.find_elements(By.CSS_SELECTOR, "li.recording"), 20, "the recording in the list")[0]
    rid = item.get_attribute("data-recording")
    record.click()
    refused(409, "already recording", rid)
    bar = lambda: card.find_element(By.CSS_SELECTOR, f'li.recording[data-recording="{rid}"]')  # noqa: E731 - re-rendered
    wait_for(lambda: 0 < float(bar().find_element(By.TAG_NAME, "progress").get_attribute("value")) < 1, 30,
             "the recording's progress bar moving")
    wait_for(lambda: bar().get_attribute("data-state") == "done", 60, "the recording done on the page")
    rec = api(f"/recordings/{rid}")
    assert rec["state"] == "done" and rec["segments"] >= 2 and rec["recorded_s"] >= 17.5, rec
    assert float(bar().find_element(By.TAG_NAME, "progress").get_attribute("value")) == 1.0
    assert f"{rec['recorded_s']:.1f} s of 18.0 s" in bar().text and f"{rec['segments']} segment(s)" in bar().text

    # learn (tiny schedule, spatial AE only, a false-alert target) and follow the job to its figures
    card.find_element(By.NAME, "max_false_alerts_per_hour").send_keys("60")
    motion = card.find_element(By.NAME, "temporal")
    assert motion.is_selected()  # learn.temporal's default: the flow AE too; untick it to learn in seconds
    motion.click()
    learn.click()
    job_el = lambda: card.find_element(By.CSS_SELECTOR, "li.job")  # noqa: E731 - the newest, re-rendered
    jid = wait_for(lambda: job_el().get_attribute("data-job"), 20, "the learn job in the list")
    assert "disabled" in job_el().find_element(By.CSS_SELECTOR, ".api-button").get_attribute("outerHTML")
    wait_for(lambda: job_el().get_attribute("data-state") in ("done", "failed"), 150, "the learn job finished")
    job = api(f"/jobs/{jid}")
    assert job["state"] == "done" and not job["swapped"] and job["temporal"] is False, job
    assert job["result"]["temporal"] is None
    unseen, choice = job["result"]["unseen"], job["result"]["threshold_choice"]
    assert unseen["seconds"] > 0 and choice["target_per_hour"] == 60
    shown = job_el()
    q = unseen["score_quantiles"]
    assert shown.find_element(By.CSS_SELECTOR, ".quantiles").text == (
        f"median {q['0.5']:.3f}, 90% {q['0.9']:.3f}, 99% {q['0.99']:.3f}, max {q['1.0']:.3f}")
    assert shown.find_element(By.CSS_SELECTOR, ".chosen-threshold").text.startswith(f"{choice['threshold']:.3f}, expected")
    fa = unseen["false_alerts"]["chosen"]
    assert shown.find_element(By.CSS_SELECTOR, ".false-alerts-chosen").text == f"{fa['alerts']} = {fa['per_hour']:.3g}/h"

    # swap the job's bundle in: the camera scores with it, and the button says so
    swap = shown.find_element(By.CSS_SELECTOR, ".api-button")
    assert swap.text == "swap in" and swap.is_enabled()
    swap.click()
    wait_for(lambda: api("/cameras/demo")["bundle"]["path"] == job["bundle"], 60, "the camera on the job's bundle")
    cam = api("/cameras/demo")
    assert not cam["bundle"]["default"] and cam["threshold"]["source"] == "bundle_learned", cam
    wait_for(lambda: job_el().find_element(By.CSS_SELECTOR, ".api-button").text == "in use", 20, "the button in use")
    assert not job_el().find_element(By.CSS_SELECTOR, ".api-button").is_enabled()
    model = card.find_element(By.CSS_SELECTOR, '[data-live="model-demo"]')
    wait_for(lambda: cam["bundle"]["sha256"] in model.text and "its own" in model.text, 20, "the new bundle shown")
    assert f"{cam['threshold']['threshold']:.3f}" in model.text
    assert not error.is_displayed()
    browser.set_window_size(1024, 1100)  # the whole card: the model, the forms, the recording and the job
    browser.execute_script("window.scrollTo(0, 0)")
    screenshot(browser, tmp_path, "learning")
    browser.set_window_size(1024, 768)
    assert fits_a_phone(browser)
    assert_only_this_service(browser, requested)
