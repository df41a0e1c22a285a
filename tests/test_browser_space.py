"""The Space in a real browser: Debian's headless Chromium (installed by scripts/setup.sh) driven by selenium renders
the page, submits a prompt and shows the score bars, the highlighted token votes and the streamed answer; a second
prompt clears the first answer at once and shows its whitespace tokens; the chat names the routed expert; the
evaluation shows its confusion matrix.

Set ``IR3DE_SCREENSHOT`` to a PNG path to keep the screenshot of the first answer (docs/space_screenshot.png)."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "space_app"))

import app
from router_snapshots import SessionRouters

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
    demo = app.build_demo(SessionRouters(load_demo_router))
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


CODE_PROMPT = "def add(a, b):\n    return a + b\n\n\nprint(add(1, 2))"


def _settled(selector: str, seconds: float = 2.0):
    """A wait condition: the textarea at ``selector`` holds text that has not changed for ``seconds`` (streamed)."""
    from selenium.webdriver.common.by import By

    seen = {"value": None, "since": time.monotonic()}

    def check(page) -> bool:
        value = page.find_element(By.CSS_SELECTOR, selector).get_attribute("value")
        if value != seen["value"]:
            seen.update(value=value, since=time.monotonic())
            return False
        return bool(value.strip()) and time.monotonic() - seen["since"] >= seconds

    return check


def _open_tab(browser, name: str) -> None:
    from selenium.webdriver.common.by import By

    (tab,) = [tab for tab in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if tab.text.strip() == name]
    tab.click()


def test_a_submitted_prompt_shows_scores_and_token_votes(space_url, browser, tmp_path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(space_url)
    wait = WebDriverWait(browser, 90)
    prompt = wait.until(lambda page: page.find_element(By.CSS_SELECTOR, "#prompt textarea"))
    links = browser.find_element(By.ID, "links")
    assert "arXiv 2606.06098" in links.text and "code (local)" in links.text and "/work" not in links.text
    prompt.send_keys(app.EXAMPLES["legal"])
    compare_with = browser.find_element(By.CSS_SELECTOR, "#compare-with input")
    compare_with.click()
    compare_with.send_keys("fiction\n")  # answer side by side with a forced expert
    browser.find_element(By.ID, "route-button").click()

    wait.until(lambda page: "Routed to legal" in page.find_element(By.ID, "decision").text)
    threshold = load_demo_router().config.min_confidence  # the demo router is calibrated when it is built
    assert f"confident (≥ {threshold:.3g}, the calibrated threshold)" in browser.find_element(By.ID, "decision").text
    bars = wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#scores svg .mark-rect path"))
    assert len(bars) == 6  # one bar per expert
    axis_texts = [text.text for text in browser.find_elements(By.CSS_SELECTOR, "#scores svg text")]
    assert axis_texts.count("expert") == 1  # the axis title once: no legend repeating it
    votes = browser.find_element(By.ID, "votes")
    legend = [item.text for item in votes.find_elements(By.CSS_SELECTOR, "button.legend-item")]
    assert legend == ["code", "legal", "politics", "biomedical", "fiction", "multilingual"]
    assert "sublicense" in votes.text and "Licensor" in votes.text

    # The routed answer streams in (and the expert's model is loaded before the test ends: loading patches torch
    # globally for a moment and must not overlap the next test).
    answer = "#answer textarea"
    wait.until(_settled(answer))
    wait.until(_settled("#compare-answer textarea"))
    screenshot = tmp_path / "space.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 20_000
    if os.environ.get("IR3DE_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["IR3DE_SCREENSHOT"])

    # A new prompt: the previous answer goes at once, before the new decision; whitespace tokens are visible.
    prompt.clear()
    prompt.send_keys(CODE_PROMPT)
    browser.find_element(By.ID, "route-button").click()
    WebDriverWait(browser, 2).until(
        lambda page: page.find_element(By.CSS_SELECTOR, answer).get_attribute("value") == ""
    )
    wait.until(lambda page: "Routed to code" in page.find_element(By.ID, "decision").text)
    chips = [chip.text for chip in browser.find_elements(By.CSS_SELECTOR, "#votes .token.highlighted .text")]
    assert chips and all(chip.strip() for chip in chips), chips  # no empty chip
    assert "⏎" in "".join(chips)
    wait.until(lambda page: page.find_element(By.CSS_SELECTOR, answer).get_attribute("value").strip())

    # The chat names the expert each message went to, with its calibrated probability.
    _open_tab(browser, "Chat")
    message = wait.until(lambda page: page.find_element(By.CSS_SELECTOR, "#chat-input textarea"))
    message.send_keys(app.EXAMPLES["legal"] + "\n")
    wait.until(lambda page: "Routed to legal · probability " in page.find_element(By.ID, "chatbot").text)
    assert "· confident (≥ 0." in browser.find_element(By.ID, "chatbot").text
    browser.save_screenshot(str(tmp_path / "chat.png"))

    # The evaluation's confusion matrix is shown under its own label.
    _open_tab(browser, "Evaluation")
    (button,) = [b for b in browser.find_elements(By.TAG_NAME, "button") if b.text == "Evaluate the current router"]
    button.click()
    wait.until(lambda page: "Accuracy" in page.find_element(By.ID, "evaluation-summary").text)
    wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#confusion img"))
    browser.save_screenshot(str(tmp_path / "evaluation.png"))
