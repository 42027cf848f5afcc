"""Every page of the dashboard in a real browser at a laptop's size, and the Tour walked as a class would.

One server for the module (tests/e2e/conftest.py), on the shipped demo zoo. Each page's full-page screenshot goes
to test-artifacts/pages/, so whoever changes a view can look at all of them afterwards.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.rerun import settled
from tests.e2e.test_browser import ARTIFACTS
from tests.test_tour import TITLES
from ui import pages as ui_pages
from ui.figures import PROJECTOR_FONT

pytestmark = pytest.mark.browser

SHOTS = ARTIFACTS / "pages"
QUERY = {"landscape": "?step=0.25"}  # 0.1's 121 points: test_browser
# (url path with its query, title in the navigation, heading the page opens with), in the navigation's order
PAGES = tuple((v.url_path + QUERY.get(v.url_path, ""), v.title, v.heading) for v in ui_pages.PAGES)
TOUR_STEPS = TITLES  # the six step titles, as the tour's AppTests name them


@pytest.fixture()
def viewport() -> dict[str, int]:
    """A 14-inch laptop's browser window: what a student follows the class on."""
    return {"width": 1440, "height": 900}


# Streamlit's placeholders: an element whose code is still loading, and one not yet sent by a (re)run
SKELETONS = '[data-testid="stSkeleton"], [data-testid="stSkeletonElement"]'


def _settled(page, heading: str) -> None:
    """Wait until the page's script has run to its end and its charts are drawn, then check it shows no error."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stHeading").first).to_contain_text(heading)
    settled(page)
    expect(page.locator(SKELETONS)).to_have_count(0)  # a chart still loading is no stPlotlyChart yet
    for chart in page.get_by_test_id("stPlotlyChart").all():
        expect(chart.locator(".main-svg").first).to_be_attached()
    exceptions = page.get_by_test_id("stException")
    assert exceptions.count() == 0, exceptions.all_inner_texts()
    errors = page.get_by_test_id("stAlertContentError")
    assert errors.count() == 0, errors.all_inner_texts()


# Per chart: the text boxes that leave the chart's element, and the pairs that overlap (tick labels, axis and
# colour-bar titles, the title, legend entries). Plotly never shortens a label; a label that does not fit is
# drawn past the SVG's edge and clipped ("Task arithmetic" shown as "3)"), or drawn over its neighbour.
TEXT_BOXES = """chart => {
  const svg = chart.querySelector('.main-svg').getBoundingClientRect();
  const nodes = chart.querySelectorAll(
    '.xtick text, .ytick text, .g-xtitle text, .g-ytitle text, .g-y2title text, .gtitle, .legendtext, .cbtitle text');
  const boxes = [...nodes].filter(n => n.textContent.trim()).map(n => {
    const r = n.getBoundingClientRect();
    return {text: n.textContent, l: r.left, r: r.right, t: r.top, b: r.bottom};
  }).filter(b => b.r > b.l);
  const outside = boxes.filter(
    b => b.l < svg.left - 1 || b.r > svg.right + 1 || b.t < svg.top - 1 || b.b > svg.bottom + 1);
  const overlaps = [];
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const a = boxes[i], c = boxes[j];
    const w = Math.min(a.r, c.r) - Math.max(a.l, c.l), h = Math.min(a.b, c.b) - Math.max(a.t, c.t);
    if (w > 2 && h > 2) overlaps.push([a.text, c.text]);
  }
  return {outside: outside.map(b => b.text), overlaps: overlaps, count: boxes.length};
}"""


# Per chart: the tick labels drawn that differ from the figure's own, and the figure's names never drawn. The
# figure's own label of a tick is its category (a name axis), its ticktext (a builder's own labels), or, on a
# number axis, the text plotly formatted for it (`_vals`); each drawn <text> carries its tick (d3's __data__).
# A label drawn as several lines (<br>) reads as their concatenation; markup (<b>, &amp;) as its text.
TICK_LABELS = """chart => {
  const el = chart.querySelector('.js-plotly-plot'), full = el._fullLayout;
  const plain = s => new DOMParser().parseFromString(String(s).replace(/<br\\s*\\/?>/gi, ''), 'text/html')
    .body.textContent;
  const own = (ax, tick) => {
    if (ax.tickmode === 'array' && ax.ticktext) {
      const i = (ax.tickvals || []).findIndex(v => Math.abs(ax.d2l(v) - tick.x) < 1e-9);
      return i < 0 ? `(no ticktext at ${tick.x})` : ax.ticktext[i];
    }
    return ax.type === 'category' ? ax._categories[Math.round(tick.x)] : tick.text;
  };
  const wrong = [], missing = [];
  for (const name of Object.keys(full).filter(k => /^[xy]axis\\d*$/.test(k))) {
    const ax = full[name];
    if (!ax.visible || !ax.showticklabels) continue;
    const drawn = [...el.querySelectorAll(`g.${ax._id}tick > text`)];
    for (const node of drawn) {
      const label = plain(own(ax, node.__data__));
      if (node.textContent !== label) wrong.push({axis: ax._id, drawn: node.textContent, label});
    }
    const shown = new Set(drawn.map(n => n.textContent));
    const names = ax.tickmode === 'array' && ax.ticktext ? ax.ticktext : ax.type === 'category' ? ax._categories : [];
    for (const label of names.map(plain)) if (!shown.has(label)) missing.push({axis: ax._id, label});
  }
  return {wrong, missing};
}"""


def _charts_readable(page) -> None:
    """Every chart on the page: each text box inside the chart, none over another, every tick label drawn as
    the figure has it and every name of a name axis drawn (waits for the SVG first)."""
    from playwright.sync_api import expect

    for chart in page.get_by_test_id("stPlotlyChart").all():
        expect(chart.locator(".main-svg").first).to_be_visible()
        expect(chart.locator(".gtitle, .xtick text").first).to_be_attached()
        found = chart.evaluate(TEXT_BOXES)
        assert found["outside"] == [] and found["overlaps"] == [], found
        ticks = chart.evaluate(TICK_LABELS)
        assert ticks["wrong"] == [] and ticks["missing"] == [], ticks


def _screenshot(page, name: str) -> None:
    """A whole page: Streamlit scrolls its main area inside the window, so a full-page shot would stop at the
    window's bottom; the window is stretched to the content's height for the shot, then given back."""
    from playwright.sync_api import expect

    size = page.viewport_size
    charts = page.get_by_test_id("stPlotlyChart")
    count = charts.count()
    height = page.get_by_test_id("stMain").evaluate("main => main.scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": max(height, size["height"])})
    settled(page)
    expect(page.locator(SKELETONS)).to_have_count(0)  # on a loaded machine a shot once caught only placeholders
    expect(charts).to_have_count(count)
    for chart in charts.all():
        expect(chart.locator(".main-svg").first).to_be_visible()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    page.set_viewport_size(size)


def test_the_navigation_lists_every_page(server, page):
    page.goto(server)
    _settled(page, "mergelab")
    links = page.get_by_test_id("stSidebarNavLink")
    shown = [text.split("\n")[-1].strip() for text in links.all_inner_texts()]  # after the icon's ligature
    assert shown == [title for _, title, _ in PAGES]


@pytest.mark.parametrize(("path", "title", "heading"), PAGES, ids=[title for _, title, _ in PAGES])
def test_every_page_opens_without_an_error(server, page, path, title, heading):
    page.goto(f"{server}/{path}")
    _settled(page, heading)
    link = page.get_by_test_id("stSidebarNavLink").filter(has_text=title)
    assert link.count() >= 1  # the page is one of the navigation's
    _charts_readable(page)
    _screenshot(page, path.split("?")[0] or "home")


def _shows_tour_step(page, n: int) -> None:
    from playwright.sync_api import expect

    _settled(page, f"Tour · step {n} of 6: {TOUR_STEPS[n - 1]}")
    expect(page.get_by_test_id("stPlotlyChart").first.locator(".main-svg").first).to_be_visible()
    expect(page.get_by_test_id("stMarkdown").locator(".katex").first).to_be_visible()  # st.latex, typeset
    for formula in page.locator(".katex-display").all():  # a formula wider than the page would be cut
        assert formula.evaluate(FITS_THE_PAGE), formula.text_content()
    assert re.search(rf"[?&]step={n}\b", page.url), page.url


FITS_THE_PAGE = """f => {
  const page = document.querySelector('[data-testid="stMainBlockContainer"]').getBoundingClientRect();
  const box = f.querySelector('.katex-html').getBoundingClientRect();
  return box.left >= page.left - 1 && box.right <= page.right + 1;
}"""


def _press(page, key: str) -> None:
    """A key pressed on the page itself, as a presenter does after clicking away from a slider (which would
    take the arrow keys for itself)."""
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.keyboard.press(key)


def _font_px(text) -> float:
    """Plotly writes the layout's font size into each SVG text's style."""
    return float(re.search(r"font-size:\s*([\d.]+)px", text.get_attribute("style")).group(1))


def test_the_tour_walks_six_steps_and_its_presenter_mode_enlarges(server, page):
    from playwright.sync_api import expect

    page.goto(f"{server}/tour")
    _shows_tour_step(page, 1)
    _charts_readable(page)
    expect(page.get_by_role("button", name="Previous")).to_be_disabled()
    for n in range(2, 7):
        if n % 2:
            page.get_by_role("button", name="Next").click()
        else:
            _press(page, "ArrowRight")
        _shows_tour_step(page, n)
        _charts_readable(page)
    expect(page.get_by_role("button", name="Next")).to_be_disabled()

    page.get_by_role("button", name="Previous").click()  # step 5: a chart with tick labels and a formula
    _shows_tour_step(page, 5)
    ticks = page.get_by_test_id("stPlotlyChart").first.locator(".xtick text").first
    assert _font_px(ticks) < PROJECTOR_FONT
    formula = page.locator(".katex").first.bounding_box()["height"]
    page.get_by_text("Presenter mode").click()
    expect(page.get_by_role("switch", name="Presenter mode")).to_be_checked()
    expect(ticks).to_have_attribute("style", re.compile(rf"font-size: ?{PROJECTOR_FONT}px"))
    _shows_tour_step(page, 5)
    assert page.locator(".katex").first.bounding_box()["height"] > formula
    expect(page).to_have_url(re.compile(r"presenter=true"))
    _screenshot(page, "tour_presenter")
    page.reload()  # in front of the class: a reload keeps presenter mode
    _shows_tour_step(page, 5)
    expect(page.get_by_role("switch", name="Presenter mode")).to_be_checked()
    for key, n in ((None, 5), ("ArrowRight", 6), *(("ArrowLeft", m) for m in (5, 4, 3, 2, 1))):
        if key:  # every step readable at the projector's size, walked with the arrow keys
            _press(page, key)
        _shows_tour_step(page, n)
        expect(page.get_by_test_id("stPlotlyChart").first.locator(".xtick text").first).to_have_attribute(
            "style", re.compile(rf"font-size: ?{PROJECTOR_FONT}px")
        )
        _charts_readable(page)
        _screenshot(page, f"tour_presenter_step{n}")


def test_a_tour_link_opens_its_step(server, page):
    from playwright.sync_api import expect

    page.goto(f"{server}/tour?step=4")
    _shows_tour_step(page, 4)
    expect(page.get_by_role("button", name="Next")).to_be_enabled()


def test_the_landscape_grid_step_is_in_the_link(server, page):
    from playwright.sync_api import expect

    page.goto(f"{server}/landscape?step=0.25")
    _settled(page, "λ landscape of two tasks")
    cells = page.get_by_test_id("stPlotlyChart").first.locator(".scatterlayer .trace").first.locator(".point")
    expect(cells).to_have_count(25)  # λ in 0, 0.25, …, 1 for both tasks


def test_the_merge_page_fits_a_laptop_window(server, page, viewport):
    """At 1440×900 the headline metrics, the bars and their legend are in the window, without scrolling."""
    from playwright.sync_api import expect

    page.goto(f"{server}/merge")
    _settled(page, "Merge task vectors")
    chart = page.get_by_test_id("stPlotlyChart").first
    expect(chart.locator(".legendtext").first).to_be_visible()
    _charts_readable(page)

    def bottom(locator) -> float:
        box = locator.bounding_box()
        return box["y"] + box["height"]

    metrics = page.get_by_test_id("stMetric").all()
    assert len(metrics) == 3 and all(bottom(m) <= viewport["height"] for m in metrics)
    assert bottom(chart.locator(".legend").first) <= viewport["height"]
    assert bottom(chart) <= viewport["height"], bottom(chart)
