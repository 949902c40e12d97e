"""The console in a real browser: Debian's Chromium, headless, driven by Selenium through
/usr/bin/chromedriver (both from ``scripts/system-deps.sh``; nothing is downloaded).

One walk through what a newcomer does: sign in (a bad key first), upload the demo template,
wait for it, change a text and a colour and see the preview change, render, see the progress
reach 100, and play the MP4 through its signed URL. Every control is found by its accessible
name as the browser computes it. Screenshots of each step go to ``VELOCITY_TEST_ARTIFACTS``
(default ``var/test-artifacts/console``), never into the repository.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, load_fixtures_module
from tests.integration.test_render_support import LiveServer, RenderEnv

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WIDTH, HEIGHT, FPS, FRAMES = 320, 180, 30, 30  # a one-second video
CONTROLS = "input,button,a,select,progress,video,textarea"


def _need_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    if missing:
        message = f"browser test needs {', '.join(missing)} (scripts/system-deps.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def artifacts() -> Path:
    root = Path(os.environ.get("VELOCITY_TEST_ARTIFACTS", ROOT / "var" / "test-artifacts"))
    folder = root / "console"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def browser() -> Iterator[Any]:
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="velocity-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1280,720",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def by_name(driver: Any, name: str, timeout: float = 30) -> Any:
    """The first control whose computed accessible name is ``name`` (waits for it)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def find(d: Any) -> Any:
        for el in d.find_elements(By.CSS_SELECTOR, CONTROLS):
            try:
                if el.accessible_name == name:
                    return el
            except StaleElementReferenceException:
                continue
        return False

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        find, f"no control named {name!r}"
    )


def wait(driver: Any, predicate: Any, timeout: float, what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(predicate, what)


PREVIEW_DIGEST = """
const done = arguments[arguments.length - 1];
const img = document.getElementById('preview-image');
fetch(img.src).then(r => r.arrayBuffer()).then(b => crypto.subtle.digest('SHA-256', b))
  .then(d => done(Array.from(new Uint8Array(d)).map(x => x.toString(16)).join('')),
        e => done('error ' + e));
"""


def preview_state(driver: Any) -> tuple[str, str]:
    """(state of the preview: scheduled/busy/idle, sequence number of the shown image)."""
    state, seq = driver.execute_script(
        "const f = document.querySelector('.preview-frame');"
        "const i = document.getElementById('preview-image');"
        "return [f ? f.dataset.state || '' : '', i ? i.dataset.seq || '' : ''];"
    )
    return str(state), str(seq)


def settled_preview(driver: Any, after_seq: str) -> str:
    """Wait until a preview newer than ``after_seq`` is shown and none is pending; its hash."""

    def current(d: Any) -> bool:
        state, seq = preview_state(d)
        return state == "idle" and seq not in ("", after_seq)

    wait(driver, current, 60, "an up-to-date preview")
    digest = str(driver.execute_async_script(PREVIEW_DIGEST))
    assert not digest.startswith("error"), digest
    return digest


def test_console_walkthrough_in_chromium(browser: Any, artifacts: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    fx = load_fixtures_module()
    folder = fx.make_demo_template(
        tmp_path / "demo", width=WIDTH, height=HEIGHT, fps=FPS, frames=FRAMES
    )
    zip_path = fx.zip_folder(folder, tmp_path / "console-demo.zip")
    wav = tmp_path / "tone.wav"
    fx.make_audio(wav, 0.5, freq=440.0, fmt="wav", volume=0.3)
    chime = tmp_path / "chime.wav"
    fx.make_audio(chime, 0.5, freq=880.0, fmt="wav", volume=0.3)
    env = RenderEnv(tmp_path / "svc", tmp_path / "cache")
    _uid, key = env.user("browser")
    d = browser
    shot = iter(range(1, 100))

    def snap(name: str) -> None:
        d.save_screenshot(str(artifacts / f"{next(shot):02d}-{name}.png"))

    def viewport(width: int, height: int, mobile: bool = False) -> None:
        d.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )

    viewport(1280, 720)
    with LiveServer(env.app) as server:
        # 1. Sign in: a bad key is refused with a message, the real one opens the console.
        d.get(server.url + "/")
        by_name(d, "API key").send_keys("vel_this-is-not-a-valid-key-000000000")
        by_name(d, "Sign in").click()
        alert = wait(
            d,
            lambda d: d.find_element(By.CSS_SELECTOR, ".alert.error:not([hidden])"),
            20,
            "bad-key message",
        )
        assert "not accepted" in alert.text
        snap("signin-bad-key")
        field = by_name(d, "API key")
        field.clear()
        field.send_keys(key)
        by_name(d, "Sign in").click()

        # 2. Upload the demo ZIP: the upload bar fills, the template becomes ready.
        upload = by_name(d, "Upload template")
        snap("templates-empty")
        upload.send_keys(str(zip_path))
        wait(
            d,
            lambda d: by_name(d, "Upload progress").get_attribute("value") == "100",
            60,
            "upload progress 100",
        )
        ready = wait(
            d,
            lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-status="ready"]'),
            180,
            "template ready",
        )
        assert "Velocity demo" in ready[0].text
        gauge = d.find_element(By.CSS_SELECTOR, "#gauge-storage .gauge-text")
        wait(d, lambda d: " of " in gauge.text, 20, "storage gauge filled in")
        snap("template-ready")

        # 3. The template page: a preview of frame 0, then the last frame (keyboard: End).
        by_name(d, "Open Velocity demo").click()
        first = settled_preview(d, "")
        scrubber = by_name(d, "Frame")
        scrubber.send_keys(Keys.END)
        _, seq = preview_state(d)
        last = settled_preview(d, seq)
        assert last != first
        snap("template-page")

        # 4. A new text, then a new colour: each changes the preview image.
        text = by_name(d, "headline text")
        text.clear()
        text.send_keys("Hi from Chromium")
        _, seq = preview_state(d)
        with_text = settled_preview(d, seq)
        assert with_text != last
        color = by_name(d, "band color")
        d.execute_script(
            "arguments[0].value = '#e11d48';"
            "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));",
            color,
        )
        _, seq = preview_state(d)
        with_color = settled_preview(d, seq)
        assert with_color != with_text
        by_name(d, "Preview").click()  # the explicit button renders the same frame again
        _, seq = preview_state(d)
        assert settled_preview(d, seq) == with_color
        snap("personalised")

        # 5. An encoder setting the API refuses: its 400 detail appears beside the field.
        d.find_element(By.CSS_SELECTOR, "details.encoder > summary").click()
        by_name(d, "GOP (frames)").send_keys("4")
        idr = by_name(d, "IDR interval (frames)")
        idr.send_keys("6")
        by_name(d, "Render").click()
        wait(d, lambda d: idr.get_attribute("aria-invalid") == "true", 30, "IDR error")
        error = d.find_element(By.ID, f"{idr.get_attribute('id')}-error")
        assert "multiple" in error.text and "gop" in error.text, error.text
        snap("encoder-error")
        idr.clear()

        # 6. Render: the long-polled progress reaches 100 and a player appears.
        by_name(d, "Render").click()
        progress = by_name(d, "Render progress")
        wait(d, lambda d: progress.get_attribute("value") == "100", 180, "render progress 100")
        video = by_name(d, "Rendered video", timeout=60)
        src = video.get_attribute("src")
        assert "/download?expires=" in src and "signature=" in src
        assert by_name(d, "Download").get_attribute("href") == src

        # 7. The <video> loads its metadata through the signed URL and plays.
        wait(
            d,
            lambda d: d.execute_script("return arguments[0].readyState", video) >= 1,
            60,
            "metadata",
        )
        duration = d.execute_script("return arguments[0].duration", video)
        assert abs(duration - FRAMES / FPS) < 0.1, duration
        played = d.execute_async_script(
            "const done = arguments[arguments.length - 1]; const v = arguments[0];"
            "v.muted = true; v.play().then(() => done('ok'), e => done(String(e)));",
            video,
        )
        assert played == "ok", played
        wait(
            d,
            lambda d: d.execute_script("return arguments[0].currentTime", video) > 0.1,
            30,
            "playback advancing",
        )
        snap("rendered")

        # 8. The renders page lists it.
        d.get(server.url + "/#/renders")
        wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, ".badge.completed"), 30, "history row")
        snap("renders")

        # 9. Audio: create a group, upload a WAV into it, play it through its signed URL.
        d.get(server.url + "/#/audio")
        by_name(d, "Group name").send_keys("Music")
        by_name(d, "Create group").click()
        by_name(d, "Upload audio to Music").send_keys(str(wav))
        by_name(d, "Play tone.wav", timeout=120).click()
        player = wait(
            d,
            lambda d: d.find_element(By.CSS_SELECTOR, 'audio[aria-label="Audio tone.wav"]'),
            30,
            "audio player",
        )
        assert "signature=" in player.get_attribute("src")
        wait(
            d,
            lambda d: d.execute_script("return arguments[0].readyState", player) >= 1,
            30,
            "audio",
        )
        assert abs(d.execute_script("return arguments[0].duration", player) - 0.5) < 0.1
        # Another upload makes the list refresh while it processes: the open player is moved
        # into the rebuilt row, not dropped.
        by_name(d, "Upload audio to Music").send_keys(str(chime))
        by_name(d, "Play chime.wav", timeout=120)
        assert d.execute_script("return arguments[0].isConnected", player), "player was dropped"
        assert d.find_element(By.CSS_SELECTOR, 'audio[aria-label="Audio tone.wav"]') == player
        snap("audio")

        # 10. The layout holds at phone width.
        viewport(390, 844, mobile=True)
        d.get(server.url + "/#/templates")
        by_name(d, "Upload template")
        overflow = d.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"page scrolls sideways by {overflow}px at phone width"
        snap("phone-templates")
        by_name(d, "Open Velocity demo").click()
        settled_preview(d, "")
        overflow = d.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"template page scrolls sideways by {overflow}px at phone width"
        snap("phone-template")
