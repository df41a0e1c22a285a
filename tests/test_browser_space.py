"""The Space in a real browser: Debian's headless Chromium (installed by scripts/setup.sh) driven by selenium renders
the page, submits a prompt and shows the score bars, the highlighted token votes and the streamed answer."""

from __future__ import annotations

import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "space_app"))

import app
from router_snapshots import RouterHolder

from ir3de_hf.demo import load_demo_router

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# Flags that work without a display, a GPU, a sandbox or network access beyond the local server.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1400",
]


@pytest.fixture
def space_url(tmp_path, monkeypatch) -> Iterator[str]:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    demo = app.build_demo(RouterHolder(load_demo_router))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    _, url, _ = demo.queue().launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, **app.launch_options()
    )
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture
def browser(tmp_path) -> Iterator:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/setup.sh installs them as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_a_submitted_prompt_shows_scores_and_token_votes(space_url, browser, tmp_path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(space_url)
    wait = WebDriverWait(browser, 90)
    prompt = wait.until(lambda page: page.find_element(By.CSS_SELECTOR, "#prompt textarea"))
    prompt.send_keys(app.EXAMPLES["legal"])
    browser.find_element(By.ID, "route-button").click()

    wait.until(lambda page: "Routed to legal" in page.find_element(By.ID, "decision").text)
    bars = wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#scores svg .mark-rect path"))
    assert len(bars) == 6  # one bar per expert
    votes = browser.find_element(By.ID, "votes")
    legend = [item.text for item in votes.find_elements(By.CSS_SELECTOR, "button.legend-item")]
    assert legend == ["code", "legal", "politics", "biomedical", "fiction", "multilingual"]
    assert "sublicense" in votes.text and "Licensor" in votes.text

    # The routed answer streams in (and the expert's model is loaded before the test ends: loading patches torch
    # globally for a moment and must not overlap the next test).
    wait.until(lambda page: page.find_element(By.CSS_SELECTOR, "#answer textarea").get_attribute("value").strip())
    screenshot = tmp_path / "space.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 20_000
