"""The dashboard in a real frontend: JupyterLab on 127.0.0.1 in headless Chromium runs
notebooks/04_live_dashboard.ipynb and the widget is drawn and moves.

nbclient proves the widget's final model state, not that anything was drawn or updated
while the run went on. Here a real JupyterLab page runs the notebook, the test samples the
rendered progress bar's width and the panel's counts during the run, compares the final
figures with the store, and saves a screenshot to artifacts/frontend_dashboard.png.

Needs Debian's Chromium (``apt-get install -y chromium``) and ``pip install jupyterlab
playwright`` (Playwright is only the client: its own browser download is not used).
Run it alone with ``python -m pytest -m frontend``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import batchkit as bk

pytestmark = [pytest.mark.frontend, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "04_live_dashboard.ipynb"
SCREENSHOT = REPO / "artifacts" / "frontend_dashboard.png"
CHROMIUM = Path("/usr/bin/chromium")
# headless as root on a small machine, and no requests to the outside
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-dev-shm-usage"]
DEADLINE_S = 55.0  # the whole check; it takes about 15-20 s here
DASH = ".batchkit-dashboard"
_PR_SET_CHILD_SUBREAPER = 36

SAMPLE_JS = """() => {
    const box = document.querySelector('.batchkit-dashboard');
    if (!box) return null;
    const bar = box.querySelector('.widget-hprogress .progress-bar');
    const text = box.querySelector('.widget-html-content');
    return {width: bar ? bar.style.width : null, cls: bar ? bar.className : '',
            text: text ? text.innerText : ''};
}"""
PROMPTS_JS = """() => Array.from(document.querySelectorAll(
    '.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')).map(p => p.textContent.trim())"""


def _requirements() -> None:
    """Fail (never skip) with the install command when something the check needs is missing."""
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's package with "
                    "`apt-get install -y chromium` (the real-frontend test needs it)")
    missing = [m for m in ("jupyterlab", "playwright") if not _importable(m)]
    if missing:
        pytest.fail(f"{missing} not installed: `pip install -e '.[test]'` (or pip install "
                    f"{' '.join(missing)})")


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _reaping() -> Iterator[None]:
    """Make this process a child subreaper while the browser runs, then reap what is left.

    Chromium's helpers outlive it as orphans; where init does not reap them they stay as
    zombies. As a subreaper they become our children and are reaped here.
    """
    import psutil

    me = psutil.Process()
    # children from before (loky's resource tracker and workers of earlier tests) are
    # not ours to reap or kill: killing them breaks the tests that run after this one
    before = {c.pid for c in me.children()}

    def adopted() -> list[psutil.Process]:
        return [c for c in me.children() if c.pid not in before]

    libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
    if libc is not None:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        if libc is not None:
            end = time.monotonic() + 5
            while adopted() and time.monotonic() < end:
                for child in adopted():
                    with contextlib.suppress(psutil.Error):
                        if child.status() == psutil.STATUS_ZOMBIE:
                            with contextlib.suppress(ChildProcessError):
                                os.waitpid(child.pid, os.WNOHANG)
                time.sleep(0.05)
            for child in adopted():  # still alive after 5 s: an orphaned helper
                with contextlib.suppress(psutil.Error):
                    child.kill()
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(child.pid, 0)
            libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@contextlib.contextmanager
def _jupyterlab(root: Path, store: Path) -> Iterator[str]:
    """JupyterLab on 127.0.0.1 with an empty token, serving ``root``; yields its URL."""
    port = _free_port()
    settings = root.parent / "lab-settings"
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # draw every cell: with windowing, cells out of view are not rendered
    tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    env = {**os.environ, "BATCHKIT_STORE": str(store),
           "JUPYTER_RUNTIME_DIR": str(root.parent / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(root.parent / "workspaces")}
    log = (root.parent / "jupyterlab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         "--IdentityProvider.token=", "--ServerApp.password=",
         f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
         f"--LabApp.user_settings_dir={settings}",
         f"--LabApp.workspaces_dir={root.parent / 'workspaces'}",
         "--LabApp.news_url=", "--LabApp.extension_manager=readonly",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > end:
                log.flush()
                pytest.fail("JupyterLab did not start:\n"
                            + (root.parent / "jupyterlab.log").read_text()[-3000:])
            time.sleep(0.2)
        yield url
    finally:
        server.send_signal(signal.SIGINT)  # shuts its kernels down, then itself
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)
        log.close()


def _state(sample: dict) -> str | None:
    """The run state the panel shows ("running", "completed", ...)."""
    found = re.search(r"state\s*([a-z]+)", sample["text"])
    return found[1] if found else None


def _progress(text: str) -> tuple[int, int] | None:
    """``(ended, total)`` from the panel's "progress  123 / 600 (20.5%)" row."""
    found = re.search(r"progress\s*([\d,]+) / ([\d,]+)", text)
    return None if not found else (int(found[1].replace(",", "")),
                                   int(found[2].replace(",", "")))


def _outcome(text: str, word: str) -> int:
    found = re.search(rf"{word} ([\d,]+)", text)
    assert found, f"no {word!r} in the panel: {text!r}"
    return int(found[1].replace(",", ""))


def test_dashboard_renders_and_moves_in_jupyterlab(tmp_path):
    """In headless Chromium, JupyterLab runs the live-dashboard notebook: the rendered bar's
    width and the panel's counts change at least three times during the run, the final
    figures match batch.counts() read from the store, the bar ends green, and a screenshot
    is saved."""
    _requirements()
    from playwright.sync_api import sync_playwright

    began = time.monotonic()
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    store = tmp_path / "live.duckdb"
    samples: list[dict] = []
    with _reaping(), _jupyterlab(root, store) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(f"{url}/lab/tree/{NOTEBOOK.name}")
            # the toolbar's idle circle shows before the kernel started: wait for the
            # status bar's text, or the run command is lost
            page.get_by_text(re.compile(r"\| Idle")).first.wait_for()
            # start the cells; not awaiting the command's promise (it ends with the cells)
            page.evaluate("() => { window.jupyterapp.commands.execute("
                          "'notebook:run-all-cells'); }")
            end = began + DEADLINE_S
            while time.monotonic() < end:
                sample = page.evaluate(SAMPLE_JS)
                if sample is not None and (not samples or sample != samples[-1]):
                    samples.append(sample)
                if sample is not None and _state(sample) not in (None, "running"):
                    break
                page.wait_for_timeout(100)
            else:
                pytest.fail(f"the run did not complete in time; last samples: {samples[-3:]}")
            dash = page.locator(DASH)
            dash.scroll_into_view_if_needed()
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
            print(f"\nscreenshot of the dashboard: {SCREENSHOT}")
            while time.monotonic() < end:  # the remaining cells, up to batch.close()
                prompts = page.evaluate(PROMPTS_JS)
                if prompts and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts):
                    break
                page.wait_for_timeout(200)
            else:
                pytest.fail(f"the notebook did not finish in time: prompts {prompts}")
            outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
            final = samples[-1]
        finally:
            browser.close()
    elapsed = time.monotonic() - began
    print(f"real-frontend check took {elapsed:.1f} s with {len(samples)} distinct samples")

    assert not [o for o in outputs if "Traceback" in o], "a cell raised"
    assert not [o for o in outputs if "IntProgress(" in o or "VBox(" in o], (
        "the widget fell back to its plain-text repr: the frontend did not render it")
    running = [s for s in samples if _state(s) == "running"]
    widths = [s["width"] for s in running]
    ended = [p[0] for s in running if (p := _progress(s["text"])) is not None]
    assert len(set(widths)) >= 3, f"the bar's width changed too rarely: {widths}"
    assert len(set(ended)) >= 3 and ended == sorted(ended), f"counts moved too rarely: {ended}"
    with bk.Batch("leads", store=store, read_only=True) as batch:
        counts = batch.counts()
    total = sum(counts.values())
    assert _state(final) == "completed"
    assert _progress(final["text"]) == (total, total) == (600, 600)
    assert _outcome(final["text"], "succeeded") == counts["done"]
    assert _outcome(final["text"], "failed") == counts["failed"] > 0
    assert final["width"] == "100%" and "progress-bar-success" in final["cls"]
    assert elapsed < DEADLINE_S + 10
