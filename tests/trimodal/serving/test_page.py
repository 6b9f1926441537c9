"""The demo page (GET /) in headless Chromium (Debian's package, driven by Playwright as the system browser): pick
an image, ask, see the model's answer; the screenshot of it is kept in test-output/demo-page.png."""
from __future__ import annotations

import shutil

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.stage_runner import REPO
from tests.trimodal.conftest import png

pytestmark = pytest.mark.slow  # trains the models it serves, then drives chromium

SCREENSHOT = REPO / "test-output" / "demo-page.png"


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "no chromium on PATH: infra/setup.sh installs Debian's package (apt-get install chromium)"
    return path


def test_the_demo_page_answers_a_question_about_an_uploaded_image(server, tmp_path):
    image = tmp_path / "red.png"
    image.write_bytes(png((48, 48)))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 720})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server + "/")
            # GET /v1/models fills the list, in --model order
            expect(page.locator("#model option")).to_have_text(["teacher", "student-int8"])
            page.select_option("#model", "student-int8")
            page.set_input_files("#image-input", str(image))
            expect(page.locator("#image-preview")).to_be_visible()
            page.fill("#question", "what color is it?")
            page.click("#ask")
            expect(page.locator("#answer")).to_have_text("red", timeout=60_000)
            expect(page.locator("#caption")).not_to_be_empty()
            expect(page.locator("#labels .bar")).to_have_count(2)
            expect(page.locator("#meta")).to_contain_text("inputs: image")
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            # a bad file shows the server's reason on the page, not a crash
            broken = tmp_path / "broken.png"
            broken.write_bytes(b"<html>not an image</html>")
            page.set_input_files("#image-input", str(broken))
            page.click("#ask")
            expect(page.locator("#error")).to_have_text("image undecodable: not a recognised image format")
            assert errors == []
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
    print(f"screenshot of the answer: {SCREENSHOT}")
