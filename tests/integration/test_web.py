"""The web page (`genir serve web`) in real headless Chromium against the real stack on tiny models.

One stack for the module (all five services plus the page, with an orchestrator token), one
browser: a three-round search (type, rendering and 10 thumbnails load, feedback, edited
description, found) and the shareable URL reopened. Set GENIR_SCREENSHOTS=DIR to keep the
laptop- and phone-width screenshots (docs/images/ holds the committed ones).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from stack.up import ORDER, Stack
from testkit.images import make_corpus

pytestmark = pytest.mark.timeout(600)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "web-test-token-7f3a"
N_IMAGES = 16
WAIT = 240  # seconds for one round on 2 loaded cores


@pytest.fixture(scope="module")
def stack(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    make_corpus(root / "images", N_IMAGES, seed=3, size=(96, 72), corpus_file=root / "corpus.json")
    s = Stack(tiny_models, root / "stack", corpus=root / "corpus.json", image_root=root / "images",
              collection="webtest", ports="free", services=ORDER, auth_token=TOKEN, startup_timeout=300)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), "Debian chromium + chromium-driver are required"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,900"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def http(stack, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(stack.url() + path.lstrip("/"), data=data,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=WAIT) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def images_loaded(driver, selector) -> int:
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].filter(i => i.complete && i.naturalWidth > 0).length",
        selector)


def wait_for(driver, condition, what, timeout=WAIT):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(lambda d: condition(d))
    except Exception:
        err = driver.find_element("id", "error").text
        raise AssertionError(f"timed out waiting for {what}; page error: {err!r}; status: "
                             f"{driver.find_element('id', 'status').text!r}") from None


def wait_round(driver, number):
    wait_for(driver, lambda d: d.find_element("id", "round-title").text == f"Round {number}"
             and images_loaded(d, "#hits img") == 10 and images_loaded(d, "#rendering") == 1,
             f"round {number} with its rendering and 10 thumbnails")


def screenshot(driver, name, width, tmp_path):
    out = Path(os.environ.get("GENIR_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    driver.set_window_size(width, 900)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(height + 40, 4000))
    driver.execute_script("window.scrollTo(0, 0)")
    path = out / name
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 10_000
    return path


def test_three_round_search_in_chromium(stack, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d = browser
    d.get(stack.url())
    assert d.title.startswith("genir")
    assert d.switch_to.active_element.get_attribute("id") == "query"        # the page starts at the description
    label = d.find_element(By.CSS_SELECTOR, "label[for=query]").text
    assert "Describe the photo" in label

    # round 1: type and press Enter (keyboard only)
    d.find_element(By.ID, "query").send_keys("a red circle on a blue background", Keys.ENTER)
    wait_round(d, 1)
    hits = d.find_elements(By.CSS_SELECTOR, "#hits li")
    assert len(hits) == 10
    ranks = [h.find_element(By.CSS_SELECTOR, ".rank").text.strip() for h in hits]
    assert ranks == [f"#{i}" for i in range(1, 11)]                              # 1-based for people
    corpus = json.loads((stack.corpus).read_text())
    for h in hits:
        img = h.find_element(By.TAG_NAME, "img")
        assert img.get_attribute("title") in corpus                             # the path on hover
        assert img.get_attribute("alt").startswith("Photo ranked ")
    assert "/s/" in d.current_url
    sid = d.current_url.rsplit("/s/", 1)[1]
    assert d.switch_to.active_element.get_attribute("id") == "feedback"

    # round 2: feedback, which the refiner merges into the description
    d.find_element(By.ID, "feedback").send_keys("the circle should be bigger and green")
    d.find_element(By.ID, "next").click()
    wait_round(d, 2)
    history = d.find_elements(By.CSS_SELECTOR, "#history li")
    assert len(history) == 2 and "feedback: the circle should be bigger and green" in history[1].text

    # round 3: an edited description, submitted from the keyboard
    edit = d.find_element(By.ID, "edit")
    edit.clear()
    edit.send_keys("a small green square in the corner")
    d.find_element(By.ID, "next").send_keys(Keys.ENTER)
    wait_round(d, 3)
    history = d.find_elements(By.CSS_SELECTOR, "#history li")
    assert len(history) == 3 and "Round 3: a small green square in the corner" in history[2].text

    # found: the third photo of the last round
    third = d.find_elements(By.CSS_SELECTOR, "#hits li")[2]
    found_id, found_path = third.get_attribute("data-id"), third.find_element(By.TAG_NAME, "img").get_attribute("title")
    third.find_element(By.TAG_NAME, "button").click()
    wait_for(d, lambda d: d.find_element(By.ID, "found-box").is_displayed(), "the found box", 10)
    assert f"?found={found_id}" in d.current_url
    assert f"rank 3: {found_path}" in d.find_element(By.ID, "found-text").text
    assert images_loaded(d, "#found-img") == 1
    laptop = screenshot(d, "web-laptop.png", 1280, tmp_path)

    # focus is visible: Tab from the link field to the copy button draws an outline
    from selenium.webdriver.common.action_chains import ActionChains
    d.execute_script("document.getElementById('share').focus()")
    ActionChains(d).send_keys(Keys.TAB).perform()
    assert d.switch_to.active_element.get_attribute("id") == "copy"
    outline = d.execute_script("const s = getComputedStyle(document.activeElement); "
                               "return s.outlineStyle + ' ' + s.outlineWidth")
    assert outline.startswith("solid") and not outline.endswith(" 0px"), outline

    # the shared URL, opened fresh at phone width, shows the same search and the found photo
    share = d.find_element(By.ID, "share").get_attribute("value")
    assert share.endswith(f"/s/{sid}?found={found_id}")
    d.set_window_size(390, 844)
    d.get(share)
    wait_round(d, 3)
    assert len(d.find_elements(By.CSS_SELECTOR, "#history li")) == 3
    assert d.find_element(By.CSS_SELECTOR, "#hits li.is-found").get_attribute("data-id") == found_id
    wide = d.execute_script("return document.documentElement.scrollWidth")
    assert wide <= 390, f"the page scrolls sideways at phone width ({wide}px)"
    phone = screenshot(d, "web-phone.png", 390, tmp_path)
    assert laptop.exists() and phone.exists()


def test_api_errors_are_clear_and_images_come_through_grpc(stack):
    code, ctype, body = http(stack, "/api/sessions", {"query": "  "})
    assert code == 400 and "describe the photo" in json.loads(body)["error"]
    code, _, body = http(stack, "/api/sessions/no-such-session")
    assert code == 404 and json.loads(body)["error"].startswith("NOT_FOUND")
    code, _, body = http(stack, "/img/corpus/99?max_side=64")
    assert code == 404 and "not in the corpus" in json.loads(body)["error"]
    code, _, body = http(stack, "/img/corpus/1?max_side=5")
    assert code == 400 and "max_side" in json.loads(body)["error"]
    code, ctype, body = http(stack, "/img/corpus/1?max_side=48")
    assert code == 200 and ctype == "image/jpeg" and body[:2] == b"\xff\xd8"
    import io

    from PIL import Image
    assert max(Image.open(io.BytesIO(body)).size) == 48
    code, ctype, body = http(stack, "/img/corpus/1?max_side=0")
    assert code == 200 and body == (stack.image_root / json.loads(stack.corpus.read_text())[1]).read_bytes()


def test_grpcurl_json_has_explicit_ranks_rfc3339_times_and_corpus_photos(stack):
    import base64
    import re

    from testkit.procs import grpcurl

    auth = ["-H", f"authorization: Bearer {TOKEN}"]
    out = grpcurl(stack.target("orchestrator"), "genir.v1.Orchestrator/CreateSession", extra=auth, timeout=WAIT,
                  data={"query": "a blue square", "options": {"image_delivery": "IMAGE_DELIVERY_REFERENCE"}})
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    hits = s["rounds"][0]["hits"]
    assert [h["rank"] for h in hits] == list(range(10))                 # rank 0 is printed, not omitted
    rfc3339 = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$"
    assert re.match(rfc3339, s["created"]) and re.match(rfc3339, s["expires"]) and s["created"] < s["expires"]
    out = grpcurl(stack.target("orchestrator"), "genir.v1.Orchestrator/GetCorpusImage", extra=auth,
                  data={"id": hits[0]["id"], "max_side": 32})
    assert out.returncode == 0, out.stderr
    img = json.loads(out.stdout)
    assert img["mime_type"] == "image/jpeg" and max(img["width"], img["height"]) == 32
    assert base64.b64decode(img["data"])[:2] == b"\xff\xd8"
    out = grpcurl(stack.target("orchestrator"), "genir.v1.Orchestrator/GetCorpusImage",
                  data={"id": hits[0]["id"], "max_side": 32})
    assert out.returncode == 64 + 16 and json.loads(out.stderr)["code"] == 16      # UNAUTHENTICATED


def test_a_page_without_the_orchestrators_token_says_so(stack):
    from starlette.testclient import TestClient

    from genir.client import Client
    from genir.web.app import make_app

    with TestClient(make_app(lambda: Client(stack.target("orchestrator")))) as page:
        r = page.post("/api/sessions", json={"query": "a red kite"})
        assert r.status_code == 502 and r.json()["error"].startswith("UNAUTHENTICATED: authorization")
        r = page.get("/img/corpus/1?max_side=64")
        assert r.status_code == 502
    with TestClient(make_app(lambda: Client(stack.target("orchestrator"), token=TOKEN))) as page:
        r = page.get("/img/corpus/1?max_side=64")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert page.post("/api/sessions", content=b"{not json").status_code == 400
        r = page.post("/api/sessions/x/rounds", json={"query": "a", "feedback": "b"})
        assert r.status_code == 400 and "not both" in r.json()["error"]
