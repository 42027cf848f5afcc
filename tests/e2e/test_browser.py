"""The dashboard in a real browser: Debian's Chromium driven by Playwright against `streamlit run`.

Runs on the shipped demo zoo, as a newcomer would see it, one server for the module (tests/e2e/conftest.py).
Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.rerun import settled, slide_to
from tests.e2e.sidebar import open_from_sidebar

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SERVE = ("serve.py",)  # what `make run` starts: streamlit run app.py with the heavy imports begun at once
STREAMLIT_RUN = ("-m", "streamlit", "run", "app.py")  # the plain command, for the cold-start comparison


@contextmanager
def dashboard_server(home: Path, *, command: tuple[str, ...] = SERVE) -> Iterator[tuple[str, subprocess.Popen]]:
    """A fresh dashboard server (`python serve.py`, or `command`) on a free local port with its own MERGELAB_HOME;
    yields (url, process). Its stderr (an app exception's traceback, which the page shows redacted) is kept in
    test-artifacts/servers/server-<port>.log."""
    port = _free_port()
    env = {**os.environ, "MERGELAB_HOME": str(home), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    options = ["--server.port", str(port), "--server.headless", "true", "--server.address", "127.0.0.1"]
    logs = ARTIFACTS / "servers"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"server-{port}.log", "wb") as stderr:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, *command, *options], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    """Polls the server's health until it answers ok; `timeout` is a ceiling (a loaded machine imports torch and
    streamlit slowly), not a measure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=10) as reply:
                if reply.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} not healthy after {timeout} s")


def _engine_mean(
    tasks: list[str], *, lam: float | list[float] | None = None, method: str = "task_arithmetic", **params
) -> float:
    """What the engine computes for these settings, straight from the shipped zoo."""
    from engine.home import ASSETS_DIR
    from engine.workspace import Workspace

    ws = Workspace.open(ASSETS_DIR / "zoo", cache_dir=Path(os.environ["MERGELAB_HOME"]) / "cache")
    return ws.compare(tasks, method, {**params, **({"lam": lam} if lam is not None else {})}).mean_merged


def _merged_title(page) -> str:
    return page.get_by_test_id("stPlotlyChart").first.locator(".gtitle").text_content()


def test_slider_moves_the_bars(server, page):
    """A newcomer's path: four tasks picked, λ moved with the keyboard, the bars follow."""
    from playwright.sync_api import expect

    page.goto(f"{server}/merge?tasks=digits&tasks=colours&tasks=bars&tasks=stripes")
    chart = page.get_by_test_id("stPlotlyChart").first
    expect(chart.locator(".gtitle")).to_contain_text("mean accuracy")
    expect(chart.locator(".xtick text")).to_have_text(["digits", "colours", "bars", "stripes"])
    before = _merged_title(page)
    thumb = page.get_by_test_id("stSlider").first.get_by_role("slider")
    slide_to(page, thumb, 0.6)  # 0.35 → 0.60: six presses, each rerun waited for
    expect(thumb).to_have_attribute("aria-valuetext", "0.60")
    expect(chart.locator(".gtitle")).not_to_have_text(before)
    page.wait_for_url(re.compile(r"[?&]lam=0\.6(&|$)"))
    assert "task_arithmetic.lam" not in page.url
    expected = _engine_mean(["digits", "colours", "bars", "stripes"], lam=0.6)
    expect(chart.locator(".gtitle")).to_have_text(f"Merged: mean accuracy {expected:.1%} (interactive split)")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "merge_after_slider.png"), full_page=True)


def test_dragging_iso_c_alpha_redraws_the_bars(server, page):
    """A subspace merge on the Merge page: Iso-C opened by a link as Compare methods writes them, its α
    dragged with the mouse."""
    from playwright.sync_api import expect

    from ui.links import merge_link

    page.goto(f"{server}/{merge_link('iso_c', {'alpha': 1.2})}")
    chart = page.get_by_test_id("stPlotlyChart").first
    expect(chart.locator(".gtitle")).to_contain_text("mean accuracy")
    before = _merged_title(page)
    slider = page.get_by_test_id("stSlider").first
    thumb = slider.get_by_role("slider")
    expect(thumb).to_have_attribute("aria-valuetext", "1.20")
    box = thumb.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 80, box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()
    expect(chart.locator(".gtitle")).not_to_have_text(before)
    settled(page)
    alpha = float(thumb.get_attribute("aria-valuetext"))
    assert alpha > 1.2
    page.wait_for_url(re.compile(rf"[?&]alpha={alpha:g}(&|$)"))  # the rerun with the dropped value writes it
    expected = _engine_mean(
        ["digits", "faces", "textures", "size", "colours", "bars", "position", "stripes"], method="iso_c", alpha=alpha
    )
    expect(chart.locator(".gtitle")).to_have_text(f"Merged: mean accuracy {expected:.1%} (interactive split)")


def test_clicking_a_landscape_cell_opens_merge_with_those_two_lambdas(server, page):
    """λ landscape: the evaluated grid and its preview drawn, a click on cell (λ₁ = 0.3, λ₂ = 0.7) offers that
    merge, and its link opens the Merge page with those two λ and the engine's numbers."""
    from playwright.sync_api import expect

    page.goto(f"{server}/landscape")
    exact = page.get_by_test_id("stPlotlyChart").first
    expect(exact.locator(".gtitle")).to_have_text("exact evaluation (interactive)")
    cells = exact.locator(".scatterlayer .trace").first.locator(".point")
    expect(cells).to_have_count(121)  # 11 × 11 values of λ, rows λ₁ then columns λ₂
    settled(page)  # laid out
    box = cells.nth(3 * 11 + 7).bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    clicked = page.get_by_text("Clicked: λ digits = 0.3, λ faces = 0.7")
    expect(clicked).to_be_visible()
    href = clicked.get_by_role("link", name="open in Merge").get_attribute("href")
    page.goto(f"{server}/{href.lstrip('/')}")
    chart = page.get_by_test_id("stPlotlyChart").first
    expect(chart.locator(".gtitle")).to_contain_text("mean accuracy")
    thumbs = page.get_by_test_id("stSlider").get_by_role("slider")
    expect(thumbs).to_have_count(2)
    expect(thumbs.nth(0)).to_have_attribute("aria-valuetext", "0.30")
    expect(thumbs.nth(1)).to_have_attribute("aria-valuetext", "0.70")
    expected = _engine_mean(["digits", "faces"], lam=[0.3, 0.7])
    expect(chart.locator(".gtitle")).to_have_text(f"Merged: mean accuracy {expected:.1%} (interactive split)")


def test_deep_link_opens_the_right_page_with_its_values(server, page):
    from playwright.sync_api import expect

    page.goto(f"{server}/merge?task_arithmetic.lam=0.65")  # first request to this server
    expect(page.get_by_test_id("stHeading").first).to_contain_text("Merge task vectors")
    thumb = page.get_by_test_id("stSlider").first.get_by_role("slider")
    expect(thumb).to_have_attribute("aria-valuetext", "0.65")
    expect(page.get_by_test_id("stSidebarNavLink").filter(has_text="Merge")).to_be_visible()
    title = page.get_by_test_id("stPlotlyChart").first.locator(".gtitle")
    expect(title).to_contain_text("mean accuracy")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "deep_link.png"), full_page=True)


def test_a_background_job_survives_navigation_and_can_be_cancelled(server, page):
    from playwright.sync_api import expect

    page.goto(f"{server}/merge?tasks=digits&tasks=faces")
    expect(page.get_by_test_id("stPlotlyChart").first.locator(".gtitle")).to_contain_text("mean accuracy")
    page.get_by_role("button", name="λ sweep on test as a job").click()
    started = page.get_by_text(re.compile(r"Started job #\d+"))
    expect(started).to_be_visible()
    job_id = int(re.search(r"#(\d+)", started.text_content()).group(1))  # other tests may have started jobs
    open_from_sidebar(page, "Jobs & runs")
    bar = page.locator(f".st-key-job-{job_id}")
    expect(bar).to_contain_text("running")
    open_from_sidebar(page, "Zoo")
    expect(page.get_by_test_id("stHeading").first).to_contain_text("Checkpoints and tasks")
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible()  # the zoo still open, no error
    expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)
    open_from_sidebar(page, "Jobs & runs")
    expect(bar).to_contain_text("lam =")  # still running, further along
    page.get_by_role("button", name="Cancel").click()
    expect(bar).to_contain_text("cancelled")
    ARTIFACTS.mkdir(exist_ok=True)
    page.reload()
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "jobs_after_cancel.png"), full_page=True)
    from engine.runs.log import RunLog

    runs = RunLog(Path(os.environ["MERGELAB_HOME"]) / "runs" / "runs.sqlite3").runs(kind="sweep", job_id=job_id)
    assert [r.status for r in runs] == ["cancelled"] and runs[0].outputs["curve"]["values"]


def test_clicking_a_taujp_cell_shows_that_pair_per_layer(server, page):
    """The Interference heatmap's cells are clickable: the per-layer chart follows the clicked pair."""
    from playwright.sync_api import expect

    page.goto(f"{server}/interference")
    heatmap = page.get_by_test_id("stPlotlyChart").first
    expect(heatmap.locator(".gtitle")).to_contain_text("τJp")
    titles = page.locator(".gtitle").filter(has_text="per layer")  # a rerun may briefly show the old chart too
    expect(titles).to_have_count(1)
    expect(titles).to_have_text("τ_digits on stripes inputs, per layer")  # the page's default pair
    cells = heatmap.locator(".scatterlayer .point")
    expect(cells).to_have_count(56)  # 8 × 8 without the diagonal
    settled(page)  # laid out
    box = cells.nth(8).bounding_box()  # row faces (cells 7-13): digits, then textures
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    clicked = page.locator(".gtitle").filter(has_text="τ_faces on textures inputs, per layer")
    expect(clicked).to_have_count(1)
    settled(page)
    expect(titles).to_have_count(1)
    expect(titles).to_have_text("τ_faces on textures inputs, per layer")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "interference_cell_click.png"), full_page=True)


def test_a_task_vectors_pool_opens_by_path(server, page, data_home):
    """A researcher's pool (pickled task_vectors encoders and heads, image folders), typed into the URL:
    the merge page shows what the engine computes on it; the Zoo page offers the conversion."""
    from urllib.parse import quote

    from playwright.sync_api import expect

    from engine.pool.collection import load_collection
    from engine.workspace import Workspace
    from tests.builders import TINY_ARCH
    from tests.foreign import tiny_source, write_image_folders, write_pool

    tasks = {"colour": ("red", "green", "blue"), "shape": ("round", "square")}
    source = tiny_source(TINY_ARCH, tasks, seed=3)
    root = write_pool(
        data_home / "pools" / "tv",
        "task_vectors",
        architecture=TINY_ARCH,
        pretrained=source["pretrained"],
        finetuned=source["finetuned"],
        heads=source["heads"],
    )
    write_image_folders(root, tasks)
    page.goto(f"{server}/merge?collection={quote(str(root))}")
    title = page.get_by_test_id("stPlotlyChart").first.locator(".gtitle")
    expect(title).to_contain_text("mean accuracy")
    settled(page)
    ws = Workspace.from_collection(load_collection(root), cache_dir=data_home / "cache")
    lam = float(page.get_by_test_id("stSlider").first.get_by_role("slider").get_attribute("aria-valuetext"))
    expected = ws.compare(ws.task_names, "task_arithmetic", {"lam": lam}).mean_merged
    expect(title).to_have_text(f"Merged: mean accuracy {expected:.1%} (interactive split)")
    open_from_sidebar(page, "Zoo")
    expect(page.get_by_text("Convert this pool to safetensors")).to_be_visible()
    expect(page.get_by_test_id("stTextInput").first.locator("input")).to_have_value(str(root))  # kept across pages
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "pool_zoo.png"), full_page=True)
