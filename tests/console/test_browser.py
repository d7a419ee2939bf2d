"""A real browser through the console: Playwright drives Debian's chromium (no browser download)
through sign in -> submit -> follow (live, over server-sent events) -> download, against a real
watch daemon, and keeps a screenshot of the finished job that the test checks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.console.consolelib import PASSWORD, ConsoleEnv
from tests.watch.watchlib import WatchEnv, png_variant

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def shots_dir(tmp_path: Path) -> Path:
    """Screenshots go to the test's tmp dir, or to $SEALFUSE_CONSOLE_SHOTS to look at them."""
    d = Path(os.environ.get("SEALFUSE_CONSOLE_SHOTS") or tmp_path / "shots")
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_sign_in_submit_follow_and_download_in_chromium(browser, watch_env: WatchEnv, console_env: ConsoleEnv,
                                                        tmp_path: Path, hanks_png: Path, t1_jpg: Path) -> None:
    env = console_env
    shots = shots_dir(tmp_path)
    watch_env.start()
    target = png_variant(t1_jpg, tmp_path / "scene-7.png", 7)
    source = tmp_path / "actor.png"
    shutil.copy(hanks_png, source)
    ctx = browser.new_context(accept_downloads=True, viewport={"width": 1180, "height": 900})
    page = ctx.new_page()
    page.goto(env.url + "/jobs")
    assert page.url.endswith("/login")  # no session: the sign-in page
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.screenshot(path=str(shots / "login.png"))
    page.click("button[type=submit]")
    page.wait_for_url("**/jobs")
    assert "My jobs" in page.text_content("h1")

    page.goto(env.url + "/submit")
    page.set_input_files("input[name=source]", str(source))
    page.set_input_files("input[name=target]", str(target))
    page.fill("input[name=label]", "Scene 7, take 2")
    page.screenshot(path=str(shots / "submit.png"), full_page=True)
    page.click("form.card button.primary")
    page.wait_for_url("**/jobs/web-*")
    ref = page.url.rsplit("/", 1)[1]

    # Follow: the page updates itself from the event stream and shows "Done" with the result.
    page.wait_for_selector(".status.s-done h1", timeout=120_000)
    state = page.text_content(".status h1")
    assert state == "Done"
    assert "result ready" in page.text_content(".status .lead")
    page.wait_for_selector(".preview img")
    page.wait_for_function("document.querySelector('.preview img').naturalWidth > 0")
    shot = shots / "job-done.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000

    with page.expect_download() as info:
        page.click("#download")
    saved = tmp_path / "downloaded.png"
    info.value.save_as(saved)
    job = json.loads(env.request("GET", f"/api/v1/jobs/{ref}", token=env.login("alice")).body)
    out = env.spool / "outbox" / job["job_id"] / job["output"]
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == hashlib.sha256(out.read_bytes()).hexdigest()
    assert saved.read_bytes() != target.read_bytes()

    page.goto(env.url + "/jobs")
    row = page.locator(f"tr[data-ref='{ref}']")
    assert row.locator(".badge").text_content().strip() == "Done"
    page.screenshot(path=str(shots / "jobs.png"), full_page=True)
    ctx.close()
