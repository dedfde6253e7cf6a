"""The page in headless Chromium at phone width: pick and drop photos, follow them, compare, download."""

from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest
from PIL import Image

from tests.web.conftest import StartServer

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 375, "height": 812}


def _unavailable(reason: str) -> None:
    if os.environ.get("SR_TEST_STRICT") == "1":
        pytest.fail(f"{reason}; SR_TEST_STRICT=1 makes this an error")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_upload_follow_compare_and_download_on_a_phone(
    browser, start_server: StartServer, shared_photos: Path, tmp_path: Path
) -> None:
    server = start_server()
    with Image.open(shared_photos / "coffee.png") as coffee:
        photo = tmp_path / "coffee.png"
        coffee.convert("RGB").crop((100, 100, 220, 180)).save(photo)  # 120x80
        dropped = io.BytesIO()
        coffee.convert("RGB").crop((0, 0, 90, 60)).save(dropped, format="JPEG")
    notes = tmp_path / "notes.png"
    notes.write_text("this is a shopping list, not a photo\n")

    context = browser.new_context(viewport=PHONE, accept_downloads=True)
    page = context.new_page()
    foreign: list[str] = []
    page.on("request", lambda request: None if request.url.startswith(server.url) or request.url.startswith(("blob:", "data:")) else foreign.append(request.url))
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(server.url + "/")

    # Two files through the picker, one dropped onto the drop zone.
    page.set_input_files("#picker", [str(photo), str(notes)])
    page.evaluate(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], name, { type: "image/jpeg" }));
            document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
        }""",
        [base64.b64encode(dropped.getvalue()).decode(), "dropped.jpg"],
    )

    card = page.locator("li.job", has=page.locator(".name", has_text="coffee.png"))
    bad = page.locator("li.job", has=page.locator(".name", has_text="notes.png"))
    drop_card = page.locator("li.job", has=page.locator(".name", has_text="dropped.jpg"))

    card.locator(".result").wait_for(state="visible", timeout=30_000)
    drop_card.locator(".result").wait_for(state="visible", timeout=30_000)
    bad.locator(".error").wait_for(state="visible", timeout=10_000)
    assert "not a photo" in bad.locator(".error").inner_text()
    assert bad.get_attribute("class").split().count("failed") == 1
    assert "Done" in card.locator(".status").inner_text()

    # Before and after fill the same box; the before image is the original, scaled up by the browser.
    after, before = card.locator("img.after"), card.locator("img.before")
    page.wait_for_function(
        "els => els.every(e => e.complete && e.naturalWidth > 0)", arg=[after.element_handle(), before.element_handle()]
    )
    assert after.evaluate("e => [e.naturalWidth, e.naturalHeight]") == [360, 240]
    assert before.evaluate("e => [e.naturalWidth, e.naturalHeight]") == [120, 80]
    after_box, before_box = after.bounding_box(), before.bounding_box()
    assert after_box == before_box and after_box["width"] > 300
    card.locator(".slider").fill("20")
    assert card.locator(".compare").evaluate("e => e.style.getPropertyValue('--pos')") == "20%"
    clip = before.evaluate("e => getComputedStyle(e).clipPath")
    assert "80%" in clip, clip

    with page.expect_download() as download_info:
        card.locator("a.download").click()
    download = download_info.value
    assert download.suggested_filename == "coffee_x3.png"
    saved = tmp_path / "downloaded.png"
    download.save_as(saved)
    with Image.open(saved) as result:
        assert (result.format, result.size) == ("PNG", (360, 240))
        result.load()

    # Nothing wider than the phone, nothing fetched from elsewhere, no script errors.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert foreign == []
    assert errors == []
    shot = tmp_path / "phone.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("SR_TEST_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["SR_TEST_SCREENSHOT_DIR"]) / "phone.png")
    context.close()
