"""Dashboard latencies on the demo zoo (issues "Dashboard", "A dashboard a class can follow"); writes
bench/results/dashboard_latency.json.

- engine path: new coefficients → accuracy table (Workspace.compare on the interactive split), target ≤ 2 s;
- browser path: a key press on the Merge page's λ slider → the chart shows the new values, target ≤ 3 s;
- cold start: `streamlit run` launched → first chart drawn in Chromium, target ≤ 10 s, with an empty data
  home (the zoo's tasks and heads are built into the cache on the way) and again with the cache filled;
- a lecture's path, on one fresh server with an empty data home: Home opened, its table drawn, "Zoo" clicked
  in the sidebar → the Zoo's first chart (target ≤ 10 s from launch); the Interference page's λ slider
  stepped → the scatter redrawn (≤ 1 s); the Forgetting page's method, then its task, changed → the chart
  redrawn (≤ 2 s each). The first visit of each page (its one-time computations) is not timed.

- first opens, after `python -m engine warm` on the zoo (key `first_opens`): a cold start, `streamlit run`
  launched → Merge's first chart (≤ 10 s, the process's imports and the workspace's opening included); then every
  page opened by its link in a new browser session, each timed to its first chart or table (≤ 5 s) and to its
  script's end.
- cold start (key `cold_start`): `python serve.py` (what `make run` starts: the heavy imports begun with the server,
  ui/preload.py) against plain `streamlit run app.py`, interleaved, each launch → Merge's first chart after `engine
  warm`, each on its own copy of the warmed data home.

    python bench/dashboard_latency.py                  # the demo zoo's parts above
    python bench/dashboard_latency.py --part first-opens
    python bench/dashboard_latency.py --part cold-start  # serve.py against plain streamlit run, interleaved
    python bench/dashboard_latency.py --part vit-b32   # a λ move on a random ViT-B/32 pool, K = 8 (vit_b32_part)

Each part rewrites only its own keys of the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.e2e.test_browser import CHROMIUM, CHROMIUM_ARGS, SERVE, STREAMLIT_RUN, dashboard_server  # noqa: E402


def engine_path(home: Path, repeats: int = 10) -> list[float]:
    from engine.home import ASSETS_DIR
    from engine.workspace import Workspace

    ws = Workspace.open(ASSETS_DIR / "zoo", cache_dir=home / "cache")
    ws.compare(ws.task_names, "task_arithmetic", {"lam": 0.3})  # baselines cached, as in a running app
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        ws.compare(ws.task_names, "task_arithmetic", {"lam": 0.05 * (i + 1)})
        times.append(time.perf_counter() - start)
    return times


def browser_path(home: Path, presses: int = 5) -> dict:
    from playwright.sync_api import expect, sync_playwright

    launched = time.perf_counter()
    with dashboard_server(home) as (url, _), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(f"{url}/merge", timeout=60_000)
        title = page.get_by_test_id("stPlotlyChart").first.locator(".gtitle")
        expect(title).to_contain_text("mean accuracy", timeout=60_000)
        cold = time.perf_counter() - launched
        thumb = page.get_by_test_id("stSlider").first.get_by_role("slider")
        updates = []
        for _ in range(presses):
            before = title.text_content()
            thumb.focus()
            start = time.perf_counter()
            page.keyboard.press("ArrowRight")
            expect(page.get_by_test_id("stApp")).to_have_attribute(
                "data-test-script-state", "notRunning", timeout=30_000
            )
            expect(title).not_to_have_text(before, timeout=30_000)
            updates.append(time.perf_counter() - start)
        browser.close()
    return {"cold_start_to_first_chart_s": round(cold, 2), "key_press_to_chart_s": updates}


def lecture_path(home: Path, steps: int = 3) -> dict:
    """Launch → Home's table → Zoo's first chart; then λ steps on Interference and method/task changes on
    Forgetting, each from the user's action to the redrawn chart."""
    from playwright.sync_api import expect, sync_playwright

    launched = time.perf_counter()
    with dashboard_server(home) as (url, _), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url, timeout=60_000)
        expect(page.get_by_test_id("stDataFrame").first).to_be_visible(timeout=120_000)
        home_table = time.perf_counter() - launched
        page.get_by_test_id("stSidebarNavLink").filter(has_text="Zoo").click()
        expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible(timeout=120_000)
        zoo_chart = time.perf_counter() - launched
        expect(page.locator(".gtitle").filter(has_text="Cosine similarity")).to_have_count(1, timeout=300_000)
        _wait_idle(page, 300_000)
        zoo_done = time.perf_counter() - launched  # the whole page (workspace opened, tasks and heads built)
        lam_steps = _interference_steps(page, url, steps)
        method_change, task_change = _forgetting_changes(page, url)
        browser.close()
    return {
        "home_table_s": round(home_table, 2),
        "zoo_first_chart_s": round(zoo_chart, 2),
        "zoo_page_complete_s": round(zoo_done, 2),
        "interference_lam_step_s": lam_steps,
        "forgetting_method_change_s": method_change,
        "forgetting_task_change_s": task_change,
    }


def _wait_idle(page, timeout_ms: int) -> None:
    """Until the page's script has finished its run."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stApp")).to_have_attribute("data-test-script-state", "notRunning", timeout=timeout_ms)


def _interference_steps(page, url: str, steps: int) -> list[float]:
    """Interference opened (its first visit computes J f(x; θ₀)·τ once), then `steps` presses of its λ slider,
    each timed to the redrawn scatter."""
    from playwright.sync_api import expect

    page.goto(f"{url}/interference", timeout=60_000)
    scatter = page.locator(".gtitle").filter(has_text="Interference:")
    expect(scatter).to_have_count(1, timeout=300_000)
    _wait_idle(page, 300_000)
    thumb = page.get_by_test_id("stSlider").filter(has_text="λ for the accuracy drop").get_by_role("slider")
    times = []
    for _ in range(steps):
        before = scatter.text_content()
        thumb.focus()
        start = time.perf_counter()
        page.keyboard.press("ArrowRight")
        expect(page.locator(".gtitle").filter(has_text=before)).to_have_count(0, timeout=60_000)  # redrawn
        expect(scatter).to_have_count(1, timeout=60_000)
        _wait_idle(page, 60_000)
        times.append(round(time.perf_counter() - start, 3))
    return times


def _forgetting_changes(page, url: str) -> tuple[list[float], list[float]]:
    """Forgetting opened, then its method and its task changed twice each, each timed to the redrawn chart."""
    from playwright.sync_api import expect

    from engine.merge.forgetting import NEGATIONS

    page.goto(f"{url}/forgetting", timeout=60_000)
    expect(page.locator(".gtitle").filter(has_text="Forgetting")).to_have_count(1, timeout=120_000)
    _wait_idle(page, 120_000)

    def choose(label: str, option: str, shown: str) -> float:
        page.get_by_test_id("stSelectbox").filter(has_text=label).click()
        choice = page.get_by_role("option", name=option, exact=True)
        start = time.perf_counter()
        choice.click()
        expect(page.locator(".gtitle").filter(has_text=shown)).to_have_count(1, timeout=120_000)
        _wait_idle(page, 120_000)
        return round(time.perf_counter() - start, 3)

    method_change = [choose("Method", NEGATIONS["sta"], "(m ⊙ τ)")]
    task_change = [choose("Task to forget", "faces", "Forgetting faces")]
    method_change.append(choose("Method", NEGATIONS["task_arithmetic"], "θ₀ − α·τ"))
    task_change.append(choose("Task to forget", "textures", "Forgetting textures"))
    return method_change, task_change


FIRST_OPEN_TARGET_S = 5.0
SHOWN = '[data-testid="stPlotlyChart"], [data-testid="stDataFrame"], [data-testid="stTable"]'


def first_opens(home: Path) -> dict:
    """`engine warm` on the zoo into an empty data home, then on a fresh server each page by its link, in a new
    browser session (the page's own first-open work, not another page's), to its first chart or table."""
    from playwright.sync_api import sync_playwright

    from ui.pages import PAGES

    warm = _warm_zoo(home)
    launched = time.perf_counter()
    pages = {}
    with dashboard_server(home) as (url, _), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        cold = _first_open(browser, next(v for v in PAGES if v.url_path == "merge"), url, since=launched)
        for view in PAGES:  # each in a new session of the running server: its own first-open work
            pages[view.title] = _first_open(browser, view, url, since=launched)
        browser.close()
    slowest = max(pages, key=lambda title: pages[title]["first_chart_or_table_s"])
    return {
        "warm_command_s": warm,
        "cold_start_to_merge_first_chart_s": {
            "after_warm": cold["since_launch_s"],
            "from_navigation": cold["first_chart_or_table_s"],
            "target": 10.0,
        },
        "pages": pages,
        "slowest_first_chart": {"page": slowest, "seconds": pages[slowest]["first_chart_or_table_s"]},
        "target_per_page_s": FIRST_OPEN_TARGET_S,
        "all_within_target": all(v["first_chart_or_table_s"] <= FIRST_OPEN_TARGET_S for v in pages.values()),
    }


FIRST_SHOWN_SCRIPT = (
    "window.__firstShown = null;"
    "new MutationObserver((_, observer) => {"
    f"  if (document.querySelector({json.dumps(SHOWN)})) {{"
    "    window.__firstShown = performance.now(); observer.disconnect(); }"
    "}).observe(document, {childList: true, subtree: true});"
)


NO_RESULT_PAGES = ("finetune", "jobs", "sweeps")  # forms: a chart or table only once a job ran


def _first_open(browser, view, url: str, *, since: float) -> dict:
    """One page opened by its link in a new session: seconds from navigation to its first chart or table (a
    MutationObserver stamps it; a form page: to its heading), and to its script's end after that."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.add_init_script(FIRST_SHOWN_SCRIPT)
    page = context.new_page()
    start = time.perf_counter()
    page.goto(f"{url}/{view.url_path}", timeout=120_000)
    form = view.url_path in NO_RESULT_PAGES
    first = page.get_by_role("heading", name=view.heading) if form else page.locator(SHOWN)
    expect(first.first).to_be_visible(timeout=300_000)
    shown = time.perf_counter() - start
    expect(page.get_by_test_id("stApp")).to_have_attribute("data-test-script-state", "notRunning", timeout=300_000)
    done = time.perf_counter() - start
    stamped = None if form else page.evaluate("window.__firstShown")  # ms since navigation started
    shown = shown if stamped is None else stamped / 1000
    errors = page.get_by_test_id("stException").count() + page.get_by_test_id("stAlertContentError").count()
    context.close()
    return {
        "first_chart_or_table_s": round(shown, 2),
        "what": "heading (a form)" if form else "chart or table",
        "script_done_s": round(max(done, shown), 2),
        "since_launch_s": round(start - since + shown, 2),
        "errors": errors,
    }


def cold_starts(runs: int = 3) -> dict:
    """`serve.py` and plain `streamlit run`, alternating, each launched on a fresh copy of one warmed data home and
    timed from launch to the Merge page's first chart (a new browser each time, started once the server is healthy,
    as a visitor arrives after `make run`)."""
    from playwright.sync_api import sync_playwright

    from ui.pages import PAGES

    merge = next(v for v in PAGES if v.url_path == "merge")
    commands = {"serve_py": SERVE, "streamlit_run": STREAMLIT_RUN}
    times: dict[str, list[float]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory() as tmp:
        warmed = Path(tmp) / "warmed"
        _warm_zoo(warmed)
        for run in range(runs):
            for name, command in commands.items():
                home = Path(tmp) / f"{name}-{run}"
                shutil.copytree(warmed, home, symlinks=True)
                launched = time.perf_counter()
                with dashboard_server(home, command=command) as (url, _), sync_playwright() as pw:
                    browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                    times[name].append(_first_open(browser, merge, url, since=launched)["since_launch_s"])
                    browser.close()
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "launch_to_merge_first_chart_s": times,
        "median_s": medians,
        "serve_py_over_streamlit_run": round(medians["serve_py"] / medians["streamlit_run"], 3),
        "target_s": 10.0,
        "serve_py_within_target": all(t <= 10.0 for t in times["serve_py"]),
    }


def cold_start_part(runs: int) -> dict:
    load_before = _load()
    result = cold_starts(runs)
    return {"cold_start": {**result, "load_average_before_after": [load_before, _load()], "measured": _now()}}


def _warm_zoo(home: Path) -> float:
    """`python -m engine warm` on the zoo with MERGELAB_HOME=home, as a teacher runs it before class; its seconds."""
    start = time.perf_counter()
    env = {**os.environ, "MERGELAB_HOME": str(home)}
    subprocess.run(
        [sys.executable, "-m", "engine", "warm", "--collection", "assets/zoo"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    return round(time.perf_counter() - start, 2)


def first_opens_part() -> dict:
    load_before = _load()
    with tempfile.TemporaryDirectory() as tmp:
        result = first_opens(Path(tmp))
    return {"first_opens": {**result, "load_average_before_after": [load_before, _load()], "measured": _now()}}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _summary(times: list[float], target: float | None) -> dict:
    return {"median": round(statistics.median(times), 3), "max": round(max(times), 3), "all": times, "target": target}


def _load() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages (other work on the CPU inflates every number here)."""
    import os

    return [round(v, 2) for v in os.getloadavg()]


def zoo_part() -> dict:
    load_before = _load()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        lecture = lecture_path(home / "lecture")  # empty data home
        browser = browser_path(home / "browser")  # empty data home: tasks and heads built on the way
        warm = browser_path(home / "browser", presses=1)  # restarted server, caches filled
        engine = engine_path(home / "engine")
    updates = browser["key_press_to_chart_s"]
    out = {
        "benchmark": "dashboard latency on the demo zoo (CPU)",
        "engine_new_coefficients_to_table_s": {
            "median": round(statistics.median(engine), 3),
            "max": round(max(engine), 3),
            "target": 2.0,
        },
        "browser_key_press_to_chart_s": {
            "median": round(statistics.median(updates), 3),
            "max": round(max(updates), 3),
            "target": 3.0,
        },
        "cold_start_to_first_chart_s": {
            "empty_cache": browser["cold_start_to_first_chart_s"],
            "warm_cache": warm["cold_start_to_first_chart_s"],
            "target": 10.0,
        },
        "lecture_cold_start_s": {
            "home_table": lecture["home_table_s"],
            "zoo_first_chart_from_home": lecture["zoo_first_chart_s"],
            "zoo_page_complete": lecture["zoo_page_complete_s"],
            "target": 10.0,
        },
        "interference_lam_step_s": _summary(lecture["interference_lam_step_s"], 1.0),
        "forgetting_method_change_s": _summary(lecture["forgetting_method_change_s"], 2.0),
        "forgetting_task_change_s": _summary(lecture["forgetting_task_change_s"], 2.0),
        "load_average_before_after": [load_before, _load()],
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return out


# ---- the ViT-B/32 part: a λ move end to end on a big pool (issue "A slider move costs only what it changed") ----

VIT_ARCHITECTURE = "ViT-B-32"
VIT_TASKS = tuple(f"task{i}" for i in range(8))
VIT_CLASSES = ("cat", "dog")
VIT_IMAGES_PER_CLASS = 4
"""Per class and split: 8 val images per task, so the interactive split (min(128, val) per task) holds 8 per task,
64 per evaluation. The product's 128 per task would make one exact move ~16× longer on these 2 cores (minutes),
which the per-image figures let a reader extrapolate."""
VIT_METHODS = ("task_arithmetic", "ties", "dare", "magnitude", "sta", "iso_c")
VIT_FORMAT = "open_clip"
VIT_KEY = "vit_b32_lam_move"
FREE_GB_NEEDED = 15


def write_vit_pool(home: str, architecture: str = VIT_ARCHITECTURE) -> dict:
    """The pool tests/test_pool_vitb32.py serves (random ViT-B/32, K = 8, one format) under the data home; another
    `architecture` (tests/builders.py TINY_ARCH) runs the same path in seconds."""
    from tests.foreign import random_pool, write_image_folders, write_pool

    start = time.perf_counter()
    pretrained, finetuned, heads = random_pool(architecture, VIT_TASKS)
    root = write_pool(
        Path(home) / "pool",
        VIT_FORMAT,
        architecture=architecture,
        pretrained=pretrained,
        finetuned=finetuned,
        heads=heads,
    )
    del pretrained, finetuned
    write_image_folders(root, {task: VIT_CLASSES for task in VIT_TASKS}, per_class=VIT_IMAGES_PER_CLASS, size=32)
    return {"root": str(root), "write_s": round(time.perf_counter() - start, 1)}


def _default_params(method_name: str) -> dict[str, float]:
    from engine.merge import get_method

    return {p.name: p.default for p in get_method(method_name).params}


def _moved(method_name: str, steps: int) -> dict[str, float]:
    """The default setting with the method's scale `steps` slider steps to the right (what ArrowRight does)."""
    from engine.merge import get_method

    scale = get_method(method_name).scale
    return {**_default_params(method_name), scale.name: round(scale.default + steps * scale.step, 6)}


def _timed(compute: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = compute()
    return time.perf_counter() - start, value


def engine_lam_move(root: str, home: str, moves: int = 2) -> dict:
    """The engine's share of a λ move, per method, on the workspace the dashboard would open (same data home,
    so what is computed here once, importance maps, Iso-C's factors and the tangent features, is read there).
    Pieces: Workspace.merge from the cached parts; loading θ into the model (`unflatten`: views, the swap itself
    is part of every functional_call); the evaluation of the interactive split; the rest of `compare`."""
    from engine.cache.memory import ComputeCache
    from engine.home import DataHome
    from engine.merge import get_method
    from engine.pool.access import open_for_user
    from engine.workspace import Workspace

    data_home = DataHome(Path(home)).ensure()
    opened, ws = _timed(
        lambda: Workspace.from_collection(
            open_for_user(root, home=data_home, policy=data_home.dashboard_policy()),
            cache_dir=data_home.cache,
            cache=ComputeCache(data_home.cache_budget_bytes()),
        )
    )
    tasks, split = ws.task_names, "interactive"
    once = {"open_workspace_s": opened}
    once["reopen_collection_s"], _ = _timed(  # what the sidebar's checkpoint picker does on every rerun
        lambda: open_for_user(root, home=data_home, policy=data_home.dashboard_policy())
    )
    once["zero_shot_eval_s"], _ = _timed(lambda: ws.zero_shot(split))
    once["finetuned_eval_s"], reference = _timed(lambda: ws.finetuned(split))
    once["sta_importance_maps_s"], _ = _timed(lambda: ws.importance.codes(get_method("sta").importance))
    once["iso_c_parts_s"], _ = _timed(lambda: ws.merges.parts(tasks, "iso_c", _default_params("iso_c")))
    once["tangent_features_s"], _ = _timed(lambda: ws.taujp.tangent_preview(split))
    methods = {name: _method_moves(ws, name, split=split, reference=reference, moves=moves) for name in VIT_METHODS}
    images = sum(len(ws.suite.tasks[t].split(split)) for t in tasks)
    eval_median = statistics.median(m["lam_move_s"]["evaluate"]["median"] for m in methods.values())
    return {
        "once_s": {k: round(v, 2) for k, v in once.items()},
        "methods": methods,
        "interactive_images": images,
        "evaluate_images_per_s": round(images / eval_median, 2),
        "parameters": ws.matrix.spec.numel,
    }


def _method_moves(ws, name: str, *, split: str, reference: dict, moves: int) -> dict:
    """One method's first merge and evaluation, then `moves` λ moves, each split into its pieces (the merge from
    the cached parts, loading θ, the evaluation, the rest of `compare`); task arithmetic's tangent preview too."""
    from engine.eval.evaluate import evaluate
    from engine.params import unflatten

    tasks = ws.task_names
    first, _ = _timed(lambda: ws.compare(tasks, name, _default_params(name), split=split))
    pieces: dict[str, list[float]] = {"merge_from_cached_parts": [], "load_theta": [], "evaluate": [], "other": []}
    preview = []
    for step in range(1, moves + 1):
        params = _moved(name, step)
        merge_s, theta = _timed(lambda: ws.merge(tasks, name, params))
        load_s, _ = _timed(lambda: unflatten(theta, ws.suite.spec))
        eval_s, _ = _timed(lambda: evaluate(theta, ws.suite, split, tasks=tasks, reference=reference))
        compare_s, _ = _timed(lambda: ws.compare(tasks, name, params, split=split))  # merge + eval again
        for piece, seconds in zip(pieces, (merge_s, load_s, eval_s - load_s, compare_s - merge_s - eval_s)):
            pieces[piece].append(round(seconds, 4))
        if name == "task_arithmetic":
            preview.append(round(_timed(lambda: ws.taujp.preview(tasks, params, split=split))[0], 4))
    medians = {piece: statistics.median(times) for piece, times in pieces.items()}
    return {
        "first_merge_and_eval_s": round(first, 2),
        "lam_move_s": {piece: {"median": round(medians[piece], 4), "all": pieces[piece]} for piece in pieces},
        "dominant": max(medians, key=medians.get),
        **({"tangent_preview_s": preview} if preview else {}),
    }


MOVE_MARKS = """() => {
  if (window.__lamObserver) window.__lamObserver.disconnect();
  const marks = {key: null, running: null, preview: null, done: null};
  window.__lamMove = marks;
  const app = document.querySelector('[data-testid="stApp"]');
  const titled = (text) => [...document.querySelectorAll('.gtitle')].some((t) => t.textContent.includes(text));
  document.addEventListener('keydown', () => { if (marks.key === null) marks.key = performance.now(); },
                            {capture: true, once: true});
  const check = () => {
    if (marks.key === null) return;
    const now = performance.now(), state = app.getAttribute('data-test-script-state');
    if (marks.running === null && state === 'running') marks.running = now;
    if (marks.preview === null && titled('Tangent-space preview')) marks.preview = now;
    if (marks.running !== null && marks.done === null && state === 'notRunning' && titled('Merged: mean accuracy'))
      marks.done = now;
  };
  window.__lamObserver = new MutationObserver(check);
  window.__lamObserver.observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
}"""
"""In-page marks of one key press (the page's own clock, so the polling of Playwright adds nothing): the key
down, the rerun starting, the tangent-preview bars drawn (their title appears only while the exact evaluation
runs) and the run ended with the exact bars drawn."""


def browser_lam_move(root: str, home: Path, presses: int = 3) -> dict:
    """Per method: the Merge page opened by deep link on the pool, its first merge awaited, then `presses`
    ArrowRight presses on the scale slider, each timed to the preview bars (task arithmetic with the
    tangent-space preview on) and to the exact bars (run over, chart redrawn)."""
    from urllib.parse import urlencode

    from playwright.sync_api import expect, sync_playwright

    from engine.merge import get_method

    results = {}
    with dashboard_server(home) as (url, _), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        for name in VIT_METHODS:
            query = {"collection": root, "method": name, **({"preview": "true"} if name == "task_arithmetic" else {})}
            opened = time.perf_counter()
            page.goto(f"{url}/merge?{urlencode(query)}", timeout=60_000)
            title = page.locator(".gtitle").filter(has_text="Merged: mean accuracy")
            expect(title).to_have_count(1, timeout=900_000)
            expect(page.get_by_test_id("stApp")).to_have_attribute(
                "data-test-script-state", "notRunning", timeout=900_000
            )
            first = time.perf_counter() - opened
            thumb = page.get_by_test_id("stSlider").filter(has_text=get_method(name).scale.label).get_by_role("slider")
            to_preview, to_exact, changed, values = [], [], [], []
            for _ in range(presses):
                before = title.text_content()
                page.evaluate(MOVE_MARKS)
                thumb.focus()
                page.keyboard.press("ArrowRight")
                page.wait_for_function("() => window.__lamMove.done !== null", timeout=900_000)
                marks = page.evaluate("() => window.__lamMove")
                to_exact.append(round((marks["done"] - marks["key"]) / 1000, 3))
                if marks["preview"] is not None:
                    to_preview.append(round((marks["preview"] - marks["key"]) / 1000, 3))
                changed.append(title.text_content() != before)
                values.append(thumb.get_attribute("aria-valuetext"))  # the slider's value as the page shows it
            results[name] = {
                "first_visit_s": round(first, 2),
                "key_press_to_exact_bars_s": _summary(to_exact, None),
                **({"key_press_to_preview_bars_s": _summary(to_preview, None)} if to_preview else {}),
                "metric_changed": changed,
                "slider": get_method(name).scale.label,
                "slider_values_after_presses": values,
            }
        browser.close()
    return results


def _in_child(function: str, *args: str | int) -> dict:
    """Run this module's `function(*args)` in a fresh interpreter: a ViT-B/32 workspace (and the pool's writing)
    takes GBs that a finished phase must hand back before the dashboard opens its own."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from bench.dashboard_latency import {function}; "
        f"print('RESULT ' + json.dumps({function}(*{list(args)!r})))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if run.returncode != 0:
        raise RuntimeError(f"{function} failed:\n{run.stderr[-3000:]}")
    return json.loads(next(line for line in run.stdout.splitlines() if line.startswith("RESULT "))[7:])


def _available_gb() -> float:
    """MemAvailable of /proc/meminfo in GB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("/proc/meminfo has no MemAvailable line")


def vit_b32_part(*, presses: int = 3, moves: int = 2, architecture: str = VIT_ARCHITECTURE) -> dict:
    """Pool written, engine pieces timed, the dashboard driven: one λ move of each method end to end."""
    load_before = _load()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        pool = _in_child("write_vit_pool", str(home), architecture)
        engine = _in_child("engine_lam_move", pool["root"], str(home), moves)
        browser = browser_lam_move(pool["root"], home, presses=presses)
    dominant = {name: m["dominant"] for name, m in engine["methods"].items()}
    summary = {name: _move_summary(browser[name], engine["methods"][name]) for name in VIT_METHODS}
    return {
        "benchmark": "a λ (α) move on a random ViT-B/32 pool, K = 8, in the dashboard and in the engine (CPU)",
        "pool": {
            "architecture": architecture,
            "tasks": len(VIT_TASKS),
            "format": VIT_FORMAT,
            "parameters": engine["parameters"],
            "write_s": pool["write_s"],
        },
        "images": {
            "interactive_per_task": engine["interactive_images"] // len(VIT_TASKS),
            "interactive_total": engine["interactive_images"],
            "val_per_task": 2 * VIT_IMAGES_PER_CLASS,
            "train_per_task": 2 * VIT_IMAGES_PER_CLASS,
        },
        "sta": "importance maps (|τ ⊙ ∇L|, 8 batches of the 8 train images per task) computed once into the data home",
        "subspace": "iso_c: its SVD factors computed once into the data home (the page's job would do the same)",
        "summary_median_s": summary,
        "dominant_piece_of_a_move": dominant,
        "browser": browser,
        "engine": engine,
        "machine": {"cpu_cores": os.cpu_count(), "torch_threads": _torch_threads(), "device": "cpu"},
        "load_average_before_after": [load_before, _load()],
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _move_summary(browser: dict, engine: dict) -> dict:
    """One method's move: the browser's two figures and the engine's pieces (medians); `dashboard_rest` is
    what the page adds to the engine's merge + evaluation (the rerun of the script, the chart's drawing)."""
    pieces = {piece: times["median"] for piece, times in engine["lam_move_s"].items()}
    exact = browser["key_press_to_exact_bars_s"]["median"]
    preview = browser.get("key_press_to_preview_bars_s", {}).get("median")
    return {
        "key_press_to_preview_bars": preview,
        "key_press_to_exact_bars": exact,
        "engine_merge_from_cached_parts": pieces["merge_from_cached_parts"],
        "engine_evaluate": pieces["evaluate"],
        "engine_load_theta_and_other": round(pieces["load_theta"] + pieces["other"], 4),
        "dashboard_rest": round(exact - sum(pieces.values()), 3),
        "evaluate_share_of_exact": round(pieces["evaluate"] / exact, 2),
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


RESULTS = ROOT / "bench" / "results" / "dashboard_latency.json"


def write_results(update: dict) -> None:
    """Merge one part's keys into the results file, keeping the other parts' keys."""
    existing = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    RESULTS.write_text(json.dumps({**existing, **update}, indent=2, ensure_ascii=False) + "\n")


def wait_for_memory(*, needed_gb: float = FREE_GB_NEEDED, checks: int = 20, every_s: float = 60.0) -> float:
    """Wait (up to `checks` × `every_s`) until `needed_gb` are available: the machine's memory is shared."""
    for _ in range(checks):
        available = _available_gb()
        if available >= needed_gb:
            return available
        print(f"{available:.1f} GB available, {needed_gb} GB needed: waiting {every_s:.0f} s", flush=True)
        time.sleep(every_s)
    raise RuntimeError(f"fewer than {needed_gb} GB available after {checks * every_s:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("zoo", "first-opens", "cold-start", "vit-b32"), default="zoo")
    parser.add_argument("--runs", type=int, default=3, help="cold-start: launches of each command")
    args = parser.parse_args()
    if args.part == "zoo":
        update = zoo_part()
    elif args.part == "cold-start":
        update = cold_start_part(args.runs)
    elif args.part == "first-opens":
        update = first_opens_part()
    else:
        available = wait_for_memory()
        update = {VIT_KEY: {**vit_b32_part(), "memory_available_at_start_gb": round(available, 1)}}
    write_results(update)
    print(json.dumps(update, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
