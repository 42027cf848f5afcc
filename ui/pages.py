"""The dashboard's pages, listed once: app.py builds the navigation from this list, Home links every page from
it, and the tests (AppTest and the browser sweep) iterate it, so a new view is one entry here and one file in
views/."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class View:
    """One page: its file, its name in the navigation, its URL path ("" for Home), the section it is listed
    under, the heading it opens with and the line Home shows next to its link."""

    file: str
    title: str
    icon: str
    url_path: str
    section: str
    heading: str
    blurb: str


PAGES = (
    View("views/home.py", "Home", ":material/home:", "", "", "mergelab", "what mergelab is and where its data lives"),
    View(
        "views/tour.py",
        "Tour",
        ":material/school:",
        "tour",
        "Explore",
        "Tour",
        "start here: a guided lecture in six steps, one live chart each",
    ),
    View(
        "views/zoo.py",
        "Zoo",
        ":material/inventory_2:",
        "zoo",
        "Explore",
        "Checkpoints and tasks",
        "checkpoints, sample images, task similarity",
    ),
    View(
        "views/merge.py",
        "Merge",
        ":material/merge:",
        "merge",
        "Explore",
        "Merge task vectors",
        "pick tasks and a method, move λ, see every task",
    ),
    View(
        "views/compare.py",
        "Compare methods",
        ":material/leaderboard:",
        "compare",
        "Explore",
        "Compare merge methods",
        "every method at its best setting, side by side",
    ),
    View(
        "views/benchmark.py",
        "Benchmark",
        ":material/table_chart:",
        "benchmark",
        "Explore",
        "Benchmark: the papers' table on your checkpoints",
        "the papers' table: chosen on val, reported on test",
    ),
    View(
        "views/landscape.py",
        "λ landscape",
        ":material/landscape:",
        "landscape",
        "Explore",
        "λ landscape of two tasks",
        "accuracy over one λ per task for a pair of tasks",
    ),
    View(
        "views/forgetting.py",
        "Forgetting",
        ":material/remove_circle:",
        "forgetting",
        "Explore",
        "Forget a task",
        "subtract a task vector and watch the others hold",
    ),
    View(
        "views/sta.py",
        "STA importance",
        ":material/filter_alt:",
        "sta",
        "Explore",
        "STA importance maps",
        "what each task's loss is sensitive to",
    ),
    View(
        "views/interference.py",
        "Interference (τJp)",
        ":material/grid_on:",
        "interference",
        "Explore",
        "Interference between tasks (τJp)",
        "τJp between every pair of tasks, and the accuracy it costs",
    ),
    View(
        "views/subspaces.py",
        "Subspaces",
        ":material/stacked_line_chart:",
        "subspaces",
        "Explore",
        "Task vectors in subspaces",
        "singular spectra and how much the tasks' subspaces overlap",
    ),
    View(
        "views/finetune.py",
        "Fine-tune",
        ":material/model_training:",
        "finetune",
        "Train",
        "Fine-tune a task",
        "train a task's checkpoint (standard, linearized, τJp)",
    ),
    View(
        "views/learned.py",
        "aTLAS & DV-BASI",
        ":material/tune:",
        "learned",
        "Train",
        "Learned coefficients: aTLAS and DV-BASI",
        "learn one coefficient per task and block",
    ),
    View(
        "views/jobs.py",
        "Jobs & runs",
        ":material/monitoring:",
        "jobs",
        "Track",
        "Jobs and runs",
        "background work and the run log",
    ),
    View(
        "views/sweeps.py",
        "Sweeps",
        ":material/scatter_plot:",
        "sweeps",
        "Track",
        "Sweeps and searches",
        "searches over settings, their Pareto front and best trial",
    ),
)


def page(url_path: str) -> View:
    """The page at `url_path` ("" for Home); KeyError names the path and the known ones."""
    for view in PAGES:
        if view.url_path == url_path:
            return view
    raise KeyError(f"no page at {url_path!r}; pages: {', '.join(repr(v.url_path) for v in PAGES)}")


def heading(url_path: str) -> str:
    """The heading the page at `url_path` opens with (views call this, the browser tests wait on it)."""
    return page(url_path).heading


def sections() -> dict[str, list[View]]:
    """The pages grouped by section, in list order, as st.navigation takes them."""
    grouped: dict[str, list[View]] = {}
    for view in PAGES:
        grouped.setdefault(view.section, []).append(view)
    return grouped
