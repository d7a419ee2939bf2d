"""A real browser through the console: Playwright drives Debian's chromium (no browser download)
through sign in -> submit -> follow (live, over server-sent events) -> download -> delete media, against a real
watch daemon, and keeps a screenshot of the finished job that the test checks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.console.consolelib import PASSWORD, ConsoleEnv
from tests.watch.watchlib import WatchEnv, png_variant, wait_for

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

    # Delete the media through the page's form: the daemon deletes it on request, the page says so.
    page.click("text=Delete this job's media")
    page.wait_for_url(f"**/jobs/{ref}")
    for _ in range(100):
        if "The media of this job was deleted on" in page.text_content(".result"):
            break
        page.wait_for_timeout(200)
        page.reload()
    assert "The media of this job was deleted on" in page.text_content(".result")
    assert not out.exists() and page.locator(".preview img").count() == 0
    page.screenshot(path=str(shots / "media-deleted.png"), full_page=True)

    page.goto(env.url + "/jobs")
    row = page.locator(f"tr[data-ref='{ref}']")
    assert row.locator(".badge").text_content().strip() == "Done"
    page.screenshot(path=str(shots / "jobs.png"), full_page=True)
    ctx.close()


def test_removing_a_queued_job_in_chromium(browser, watch_env: WatchEnv, console_env: ConsoleEnv,
                                           tmp_path: Path, hanks_png: Path, t1_jpg: Path) -> None:
    env = console_env
    shots = shots_dir(tmp_path)
    watch_env.start()
    watch_env.wait_ready()
    png_variant(hanks_png, watch_env.inbox / "tom" / "busy__hang__.png", 9)  # holds the only worker
    wait_for(lambda: watch_env.events("started_job"), 30, "the worker to be busy")
    target = png_variant(t1_jpg, tmp_path / "scene-8.png", 8)
    source = tmp_path / "actor.png"
    shutil.copy(hanks_png, source)
    page = browser.new_context(viewport={"width": 1180, "height": 900}).new_page()
    page.goto(env.url + "/login")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/jobs")
    page.goto(env.url + "/submit")
    page.set_input_files("input[name=source]", str(source))
    page.set_input_files("input[name=target]", str(target))
    page.click("form.card button.primary")
    page.wait_for_url("**/jobs/web-*")
    ref = page.url.rsplit("/", 1)[1]
    page.wait_for_selector(".status.s-queued h1", timeout=30_000)
    page.reload()  # the delete form's wording follows the state the page was rendered with
    assert page.text_content(".danger-zone button") == "Remove this job"
    page.screenshot(path=str(shots / "queued.png"), full_page=True)
    page.click(".danger-zone button")
    page.wait_for_url(f"**/jobs/{ref}")
    page.wait_for_selector(".status.s-removed h1", timeout=30_000)  # live, over the event stream
    page.reload()
    assert page.text_content(".status h1") == "Removed"
    assert "removed on request" in page.text_content(".status .why")
    assert page.text_content(".status .lead") == "Removed on request"
    assert page.text_content(".danger-zone button") == "Delete this job's media"
    page.screenshot(path=str(shots / "removed.png"), full_page=True)
    assert [e["requested_by"] for e in watch_env.events("removed")] == ["console:alice"]
