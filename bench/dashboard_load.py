"""Many users on one dashboard server (issue "many users on one server"); writes bench/results/dashboard_load.json.

One `streamlit run app.py` on the demo zoo (the default collection; a fresh data home whose disk cache of the
zoo's tasks and heads the serial run below filled), one warm-up session that opens the Merge page (--cold: none),
then N browser contexts (separate sessions) in one headless Chromium, all at once. Each context opens the
Merge page by a link naming its method and parameters (slider values bind to the URL:
merge?method=ties&density=0.35&lam=0.9, the engine's names), then moves its method's scale slider two steps with the
keyboard to its own final value, and reads the numbers shown: the "mean accuracy (merged)" and
"mean normalized accuracy" metrics. Checks:

- every context shows its own numbers: its sliders at its own values, and both metrics equal to what the
  engine computes serially in this process for the same settings (`Workspace.compare(..., split="interactive")`,
  formatted as the page formats them, f"{x:.1%}");
- `/_stcore/health` stays responsive: polled from a thread every 0.5 s during the load, max latency recorded;
- the server's RSS stays bounded: VmRSS of the server process and its children from /proc every 0.5 s,
  peak recorded; goal ≤ 3 GiB with 20 contexts.

    python bench/dashboard_load.py [--contexts 20]
    python bench/dashboard_load.py --class 30     # a class: N contexts open one Merge link (key "class")

A class (`run_class`): N contexts open the same Merge link at once on a fresh server, with Chromium limited to
one core at the lowest priority (a wrapper runs it under `taskset -c 1 nice -n 19`, recorded in the JSON) so
the browsers do not starve the server on this 2-core machine. Checks: every context shows the engine's serial
numbers; the server computed the setting once (Home's "This server's shared results": `compare 1`, one merge
and one evaluation); `/_stcore/health` p95 ≤ 2 s.

tests/e2e/test_load.py runs the same functions with a few contexts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tests.e2e.test_browser import CHROMIUM, CHROMIUM_ARGS, dashboard_server  # noqa: E402

RSS_GOAL_GIB = 3.0
HEALTH_GOAL_S = 5.0  # a health check slower than this counts as unresponsive
PRESSES = 2  # keyboard steps each context moves its scale slider after the link opened the page
ZOO = ROOT / "assets" / "zoo"


@dataclass(frozen=True)
class Setting:
    """One context's settings: a method, its parameter values (after the key presses), and which parameter
    the keyboard moves (the link sets it PRESSES steps lower)."""

    method: str
    params: dict[str, float]
    moved: str

    def query(self) -> str:
        from engine.merge import get_method

        method = get_method(self.method)
        step = next(p.step for p in method.params if p.name == self.moved)
        start = {**self.params, self.moved: round(self.params[self.moved] - PRESSES * step, 6)}
        return urlencode({"method": self.method, **{k: f"{v:g}" for k, v in start.items()}})

    def pressed_values(self) -> list[float]:
        """The moved parameter's value after each key press, the last one its setting's."""
        from engine.merge import get_method

        step = next(p.step for p in get_method(self.method).params if p.name == self.moved)
        target = self.params[self.moved]
        return [round(target - (PRESSES - n) * step, 6) for n in range(1, PRESSES + 1)]

    def slider_index(self) -> int:
        from engine.merge import get_method

        return [p.name for p in get_method(self.method).params].index(self.moved)


def settings(n: int) -> list[Setting]:
    """n distinct settings: mostly task arithmetic at distinct λ, every 5th context TIES (density, λ),
    every 5th TSV-M (α)."""
    out = []
    for i in range(n):
        k = i // 5
        if i % 5 == 3:
            out.append(
                Setting("ties", {"density": round(0.15 + 0.05 * (k % 12), 2), "lam": round(0.8 + 0.1 * k, 2)}, "lam")
            )
        elif i % 5 == 4:
            out.append(Setting("tsv_m", {"alpha": round(0.6 + 0.15 * k, 2)}, "alpha"))
        else:
            j = i - 2 * k  # 0, 1, 2 for k = 0; 3, 4, 5 for k = 1; ...
            out.append(Setting("task_arithmetic", {"lam": round(0.15 + 0.05 * j, 2)}, "lam"))
    return out


def expected_numbers(items: list[Setting], cache_dir: Path) -> list[tuple[str, str]]:
    """What the page must show for each setting, computed serially by the engine: (merged, normalized)."""
    from engine.workspace import Workspace

    ws = Workspace.open(ZOO, cache_dir=cache_dir)
    out = []
    for s in items:
        comparison = ws.compare(ws.task_names, s.method, dict(s.params), split="interactive")
        out.append((f"{comparison.mean_merged:.1%}", f"{comparison.mean_normalized:.1%}"))
    return out


def tree_rss_bytes(pid: int) -> int:
    """VmRSS of a process and all its descendants, from /proc (0 for a process gone meanwhile)."""
    total, pending = 0, [pid]
    while pending:
        p = pending.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _descendants(pid: int) -> list[int]:
    out, pending = [], [pid]
    while pending:
        p = pending.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def tree_cpu_seconds(pid: int, *, exclude: int | None = None) -> float:
    """User + system CPU time of a process and its live descendants (without `exclude`'s tree)."""
    skip = set(_descendants(exclude)) if exclude is not None else set()
    ticks = 0
    for p in _descendants(pid):
        if p in skip:
            continue
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Monitor:
    """Polls /_stcore/health and samples the server's RSS every `interval` s on a thread, until stopped."""

    url: str
    pid: int
    interval: float = 0.5
    health_s: list[float] = field(default_factory=list)
    health_at: list[float] = field(default_factory=list)  # seconds since the monitor started
    health_failures: int = 0
    rss_bytes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="load-monitor")

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _loop(self) -> None:
        began = time.monotonic()
        while not self._stop.is_set():
            tick = time.monotonic()
            self.rss_bytes.append(tree_rss_bytes(self.pid))
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=30) as reply:
                    ok = reply.read() == b"ok"
            except OSError:
                ok = False
            self.health_s.append(time.perf_counter() - start)
            self.health_at.append(tick - began)
            self.health_failures += not ok
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - tick)))

    @property
    def health_max_s(self) -> float:
        return max(self.health_s, default=float("nan"))

    @property
    def peak_rss_gib(self) -> float:
        return max(self.rss_bytes, default=0) / 2**30


@dataclass
class ContextResult:
    index: int
    setting: Setting
    expected: tuple[str, str]
    shown: tuple[str, str] | None = None
    slider_values: dict[str, float] | None = None
    time_to_first_numbers_s: float | None = None  # the link's settings shown
    time_to_numbers_s: float | None = None  # after the key presses, its own final numbers
    error: str = ""

    @property
    def correct(self) -> bool:
        return (
            not self.error
            and self.shown == self.expected
            and self.slider_values is not None
            and all(abs(self.slider_values[k] - v) < 1e-6 for k, v in self.setting.params.items())
        )


def _url_value(url: str, key: str) -> float | None:
    values = parse_qs(urlparse(url).query).get(key)
    return round(float(values[0]), 6) if values else None


async def _press_to(page, app, thumb, value: float, name: str, ms: float, *, tries: int = 3) -> None:
    """One ArrowRight, waited on until the slider, the URL and the script show `value`: a press is sent only
    once the previous one's rerun has finished, as a person watching the slider would. Under load a rerun can
    redraw the slider and take its focus with it, swallowing a press: then (the script idle, the value not
    moved) the thumb is focused and pressed again, up to `tries` times."""
    from playwright.async_api import expect

    for _ in range(tries):
        before = await thumb.get_attribute("aria-valuetext")
        await thumb.focus()
        await page.keyboard.press("ArrowRight")
        await expect(app).to_have_attribute("data-test-script-state", "notRunning", timeout=ms)
        try:
            await expect(thumb).to_have_attribute("aria-valuetext", f"{value:.2f}", timeout=10_000)
            break
        except AssertionError:
            await expect(app).to_have_attribute("data-test-script-state", "notRunning", timeout=ms)
            now = await thumb.get_attribute("aria-valuetext")
            if now == f"{value:.2f}":
                break
            if now != before:
                raise  # the press moved the slider somewhere else: a real failure, not a swallowed press
    await expect(thumb).to_have_attribute("aria-valuetext", f"{value:.2f}", timeout=ms)
    await page.wait_for_url(lambda u: _url_value(u, name) == value, timeout=ms)
    await expect(app).to_have_attribute("data-test-script-state", "notRunning", timeout=ms)


async def _one_context(browser, url: str, index: int, setting: Setting, expected, timeout_s: float) -> ContextResult:
    from playwright.async_api import expect

    from engine.merge import get_method

    result = ContextResult(index, setting, expected)
    ms = timeout_s * 1000
    context = await browser.new_context(viewport={"width": 1280, "height": 1000})
    try:
        page = await context.new_page()
        start = time.perf_counter()
        await page.goto(f"{url}/merge?{setting.query()}", timeout=ms)
        merged = (
            page.get_by_test_id("stMetric").filter(has_text="mean accuracy (merged)").get_by_test_id("stMetricValue")
        )
        normalized = (
            page.get_by_test_id("stMetric").filter(has_text="mean normalized accuracy").get_by_test_id("stMetricValue")
        )
        await expect(merged).to_be_visible(timeout=ms)  # the link's settings merged and shown
        result.time_to_first_numbers_s = time.perf_counter() - start
        thumb = page.get_by_test_id("stSlider").nth(setting.slider_index()).get_by_role("slider")
        app = page.get_by_test_id("stApp")
        for value in setting.pressed_values():
            await _press_to(page, app, thumb, value, setting.moved, ms)
        try:  # the rerun of the last press may still be on its way: wait for the numbers to settle on ours
            await expect(merged).to_have_text(expected[0], timeout=ms)
            await expect(normalized).to_have_text(expected[1], timeout=ms)
        except AssertionError:
            pass  # recorded below as what the page shows
        await expect(app).to_have_attribute("data-test-script-state", "notRunning", timeout=ms)
        result.time_to_numbers_s = time.perf_counter() - start
        result.shown = ((await merged.text_content()).strip(), (await normalized.text_content()).strip())
        sliders = page.get_by_test_id("stSlider").get_by_role("slider")
        names = [p.name for p in get_method(setting.method).params]
        result.slider_values = {
            name: float(await sliders.nth(i).get_attribute("aria-valuetext")) for i, name in enumerate(names)
        }
    except Exception as exc:  # noqa: BLE001 - one context's failure is reported, the others go on
        result.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        await context.close()
    return result


async def _drive(
    url: str, items: list[Setting], expected, timeout_s: float, *, server: int
) -> tuple[list[ContextResult], float, float]:
    """All contexts at once in one Chromium; returns their results, the wall time and the CPU seconds the
    browser side (Playwright's driver and Chromium, this process's children other than the server) used."""
    from playwright.async_api import async_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: apt-get install chromium"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            start, cpu = time.perf_counter(), tree_cpu_seconds(os.getpid(), exclude=server)
            results = await asyncio.gather(
                *(_one_context(browser, url, i, s, e, timeout_s) for i, (s, e) in enumerate(zip(items, expected)))
            )
            wall = time.perf_counter() - start
            return list(results), wall, tree_cpu_seconds(os.getpid(), exclude=server) - cpu
        finally:
            await browser.close()


def warm_up(url: str, timeout_s: float = 120.0) -> float:
    """One session opens the Merge page at its defaults, so the workspace is built before the load."""
    from playwright.sync_api import expect, sync_playwright

    start = time.perf_counter()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"{url}/merge", timeout=timeout_s * 1000)
        expect(page.get_by_test_id("stMetricValue").first).to_be_visible(timeout=timeout_s * 1000)
        browser.close()
    return time.perf_counter() - start


def run_load(home: Path, contexts: int, *, timeout_s: float = 300.0, warm: bool = True) -> dict:
    """The whole check: serial expectations, a server, the warm-up (one session opens the Merge page first,
    unless not `warm`: then all contexts find the workspace unbuilt), N concurrent contexts; returns the report."""
    items = settings(contexts)
    start = time.perf_counter()
    # the data home's disk cache (the zoo's built tasks and heads) is filled here and found by the server;
    # merges and their accuracies are computed in each process's memory, so the two stay independent
    expected = expected_numbers(items, home / "server-home" / "cache")
    serial_s = time.perf_counter() - start
    with dashboard_server(home / "server-home") as (url, proc):
        idle_rss = tree_rss_bytes(proc.pid) / 2**30
        warm_s = warm_up(url) if warm else None
        cpu_before = tree_cpu_seconds(proc.pid)
        with Monitor(url, proc.pid) as monitor:
            results, wall_s, browser_cpu_s = asyncio.run(_drive(url, items, expected, timeout_s, server=proc.pid))
            final_rss = tree_rss_bytes(proc.pid) / 2**30
        server_cpu_s = tree_cpu_seconds(proc.pid) - cpu_before
        server_alive = proc.poll() is None
    return {
        "benchmark": "many users on one dashboard server: N browser contexts on the Merge page (demo zoo, CPU)",
        "command": f"python bench/dashboard_load.py --contexts {contexts}",
        "contexts": contexts,
        "methods": {m: sum(s.method == m for s in items) for m in dict.fromkeys(s.method for s in items)},
        "all_correct": all(r.correct for r in results) and server_alive,
        "correct_contexts": sum(r.correct for r in results),
        **_times_to_numbers(results),
        "all_contexts_wall_s": round(wall_s, 2),
        "cpu_s_during_load": {
            "server": round(server_cpu_s, 1),
            "browser": round(browser_cpu_s, 1),
            "note": "the server's and Chromium's share of the machine while all contexts ran; the benchmark "
            "process's own (Playwright client) time is in the browser figure",
        },
        "warm_up_first_page_s": round(warm_s, 2) if warm_s is not None else None,
        "serial_engine_s": round(serial_s, 2),
        "health": _health(monitor),
        "server_rss_gib": {
            "idle": round(idle_rss, 3),
            "peak": round(monitor.peak_rss_gib, 3),
            "after": round(final_rss, 3),
            "samples": len(monitor.rss_bytes),
        },
        "goal": {"server_peak_rss_gib_max": RSS_GOAL_GIB, "contexts": 20, "collection": "demo zoo (assets/zoo)"},
        "goal_met": monitor.peak_rss_gib <= RSS_GOAL_GIB,
        "failures": [_failure(r) for r in results if not r.correct],
        "machine": _machine(),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _times_to_numbers(results: list) -> dict:
    """The spread over contexts of the time until each showed its own numbers, and the link's first ones."""
    times = [r.time_to_numbers_s for r in results if r.time_to_numbers_s is not None]
    firsts = [r.time_to_first_numbers_s for r in results if r.time_to_first_numbers_s is not None]
    return {
        "time_to_numbers_s": _spread(
            times, note="per context: page opened by its link, two key presses, until its own numbers are shown"
        ),
        "time_to_first_numbers_s": _spread(
            firsts, note="per context: page opened by its link until the link's numbers are shown"
        ),
    }


def _spread(values: list[float], *, note: str) -> dict:
    """Median and max of per-context times (None when no context got there)."""
    return {
        "median": round(statistics.median(values), 2) if values else None,
        "max": round(max(values), 2) if values else None,
        "note": note,
    }


def _health(monitor: Monitor) -> dict:
    """The server's /_stcore/health polls while the contexts ran: latencies, failures, the five slowest."""
    slowest = sorted(zip(monitor.health_s, monitor.health_at), reverse=True)[:5]
    return {
        "polls": len(monitor.health_s),
        "max_latency_s": round(monitor.health_max_s, 3),
        "median_latency_s": round(statistics.median(monitor.health_s), 3) if monitor.health_s else None,
        "failures": monitor.health_failures,
        "slowest_polls": [{"latency_s": round(d, 3), "at_s": round(t, 1)} for d, t in slowest],
        "goal_max_s": HEALTH_GOAL_S,
        "responsive": monitor.health_failures == 0 and monitor.health_max_s <= HEALTH_GOAL_S,
    }


def _failure(result) -> dict:
    """What one context that did not show its own numbers expected and showed."""
    return {
        "context": result.index,
        "method": result.setting.method,
        "params": result.setting.params,
        "expected": result.expected,
        "shown": result.shown,
        "sliders": result.slider_values,
        "error": result.error,
    }


def _machine() -> dict:
    return {
        "cores": os.cpu_count(),
        "load_average_1min_after": round(os.getloadavg()[0], 1),
        "chromium": CHROMIUM,
        "python": sys.version.split()[0],
    }


CLASS_LINK = {"method": "task_arithmetic", "lam": 0.35}  # not the page's default: no session computed it before
HEALTH_P95_GOAL_S = 2.0
BROWSER_LIMITS = {"cores": "1", "nice": 19}


def run_class(home: Path, contexts: int, *, timeout_s: float = 300.0) -> dict:
    """N contexts open one Merge link at once (see the module docstring); returns the report."""
    setting = Setting(CLASS_LINK["method"], {"lam": CLASS_LINK["lam"]}, "lam")
    expected = expected_numbers([setting], home / "server-home" / "cache")[0]
    chromium = _limited_chromium(home)
    with dashboard_server(home / "server-home") as (url, proc):
        with Monitor(url, proc.pid) as monitor:
            results, wall_s = asyncio.run(_class_drive(url, contexts, expected, chromium, timeout_s))
        counts = _server_counts(url, chromium)
        alive = proc.poll() is None
    health = sorted(monitor.health_s)
    p95 = health[min(len(health) - 1, int(0.95 * len(health)))] if health else None
    firsts = [r[0] for r in results if r[0] is not None]
    return {
        "command": f"python bench/dashboard_load.py --class {contexts}",
        "contexts": contexts,
        "link": f"merge?{urlencode(CLASS_LINK)}",
        "correct_contexts": sum(r[1] == expected for r in results),
        "all_correct": all(r[1] == expected for r in results) and alive,
        "errors": [r[2] for r in results if r[2]],
        "server_computed": counts,
        "one_merge_and_one_evaluation": counts.get("compare") == 1,
        "time_to_numbers_s": {"median": round(statistics.median(firsts), 2), "max": round(max(firsts), 2)}
        if firsts
        else None,
        "all_contexts_wall_s": round(wall_s, 2),
        "health": {
            "polls": len(health),
            "p95_s": round(p95, 3) if p95 is not None else None,
            "max_s": round(max(health), 3) if health else None,
            "failures": monitor.health_failures,
            "goal_p95_s": HEALTH_P95_GOAL_S,
            "met": p95 is not None and p95 <= HEALTH_P95_GOAL_S and monitor.health_failures == 0,
        },
        "browser_limits": {**BROWSER_LIMITS, "how": f"Chromium run as taskset -c {BROWSER_LIMITS['cores']} nice -n 19"},
        "machine": {"cores": os.cpu_count(), "load_average_1min_after": round(os.getloadavg()[0], 1)},
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _limited_chromium(folder: Path) -> str:
    """A wrapper Playwright launches as its browser: Chromium, and every process it starts, on one core at the
    lowest priority."""
    wrapper = folder / "chromium-limited"
    wrapper.write_text(
        f'#!/bin/sh\nexec taskset -c {BROWSER_LIMITS["cores"]} nice -n {BROWSER_LIMITS["nice"]} {CHROMIUM} "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper)


async def _class_drive(url: str, contexts: int, expected, chromium: str, timeout_s: float):
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            start = time.perf_counter()
            students = (_class_context(browser, url, expected, timeout_s) for _ in range(contexts))
            results = await asyncio.gather(*students)
            return list(results), time.perf_counter() - start
        finally:
            await browser.close()


async def _class_context(browser, url: str, expected, timeout_s: float):
    """(seconds to the numbers, the numbers shown, error) of one student opening the class link."""
    from playwright.async_api import expect

    context = await browser.new_context(viewport={"width": 1280, "height": 1000})
    try:
        page = await context.new_page()
        start = time.perf_counter()
        await page.goto(f"{url}/merge?{urlencode(CLASS_LINK)}", timeout=timeout_s * 1000)
        metric = page.get_by_test_id("stMetric")
        merged = metric.filter(has_text="mean accuracy (merged)").get_by_test_id("stMetricValue")
        normalized = metric.filter(has_text="mean normalized accuracy").get_by_test_id("stMetricValue")
        await expect(merged).to_have_text(expected[0], timeout=timeout_s * 1000)
        seconds = time.perf_counter() - start
        shown = ((await merged.text_content()).strip(), (await normalized.text_content()).strip())
        return seconds, shown, ""
    except Exception as exc:  # noqa: BLE001 - one context's failure is reported, the others go on
        return None, None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        await context.close()


def _server_counts(url: str, chromium: str) -> dict[str, int]:
    """What the server computed, by kind, as Home's "This server's shared results" says it."""
    import re

    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(url, timeout=120_000)
        page.get_by_test_id("stExpander").filter(has_text="This server").click()
        caption = page.get_by_test_id("stCaptionContainer").filter(has_text="served again from memory")
        expect(caption).to_be_visible(timeout=60_000)
        text = caption.text_content()
        browser.close()
    computed = text.split("computed:", 1)[1].split(";", 1)[0]
    return {kind: int(n) for kind, n in re.findall(r"(\w+) (\d+)", computed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=300.0, help="per context step, seconds")
    parser.add_argument("--cold", action="store_true", help="no warm-up session: the contexts find an empty cache")
    parser.add_argument("--class", dest="class_size", type=int, help="a class: N contexts open one Merge link")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dashboard_load.json")
    args = parser.parse_args()
    stored = json.loads(args.out.read_text()) if args.out.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.class_size:  # the class's key only; the rest as it was
            report = run_class(Path(tmp), args.class_size, timeout_s=args.timeout)
            update = {**stored, "class": report}
        else:  # the load's keys; a class measured before stays
            report = run_load(Path(tmp), args.contexts, timeout_s=args.timeout, warm=not args.cold)
            update = {**report, **({"class": stored["class"]} if "class" in stored else {})}
    args.out.write_text(json.dumps(update, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
