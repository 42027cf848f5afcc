"""The URL of a page, synced by hand so a copied link reproduces the numbers on it.

`bind="query-params"` writes a select box's label (`method=DARE+%2B+task+arithmetic`) and silently drops values
the widget does not accept, so every page with settings (and the sidebar) declares its URL instead: one `Link` per
value, named as the engine names it (`method=ties&lam=0.5`). Before its widget exists a link's
value is read from the URL and checked (an unknown or out-of-range value leaves the widget as it was and adds
a notice naming it); after the widgets, `publish` writes every value that differs from its default, so URLs stay
short and state a page did not change is left out.

The URL is read only on the first run of a page (a link opened, a reload, a switch from another page), never on
the reruns a widget triggers: the query string a rerun arrives with can be older than the value the user just
set (slider key presses outrun the URL updates), and applying it would snap the widget back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode

import streamlit as st

Value = str | float | bool | list[str]
PUBLISHED = "_links_published"  # {URL name: [values]} this session last wrote
PAGE = "_links_page"  # (this run's page, whether it is that page's first run, whether it is the session's first)
KEPT = "_links_kept"  # {state key: value} as last published: a page's widgets are dropped while another runs
NOTICES = "_links_notices"  # {scope: Notices} of the link last opened, until the user changes the URL


class LinkValueError(ValueError):
    """A URL value a link cannot take; the message names the value and what it accepts."""


@dataclass(frozen=True)
class Link:
    """One value in the URL: `name` there, `key` in session state, left out of the URL at `default`.
    `aliases` are older names links still carry (`task_arithmetic.lam` for `lam`)."""

    name: str
    key: str
    default: Value
    read: Callable[[list[str]], Value]
    write: Callable[[Value], list[str]]
    aliases: tuple[str, ...] = ()
    blank_is_default: bool = False  # an empty text box means the default (the collection box: the demo zoo)


def choice(
    name: str, key: str, options: Sequence[str | float], default: str | float, *, aliases: tuple[str, ...] = ()
) -> Link:
    """One of `options`, by its engine name (numbers written shortest: `step=0.1`)."""
    by_text = {_word(o): o for o in options}

    def read(raw: list[str]) -> str | float:
        if raw[-1] not in by_text:
            raise LinkValueError(f"`{name}={raw[-1]}` is not one of {', '.join(by_text)}")
        return by_text[raw[-1]]

    return Link(name, key, default, read, lambda v: [_word(v)], aliases)


def _word(option: str | float) -> str:
    return f"{option:.6g}" if isinstance(option, float) else str(option)


def subset(name: str, key: str, options: Sequence[str], *, default: Sequence[str] | None = None) -> Link:
    """Some of `options` in the order picked (repeated in the URL: `tasks=a&tasks=b`); all of them by default
    (or `default`: none for the calibrators after a merge)."""

    def read(raw: list[str]) -> list[str]:
        unknown = [v for v in raw if v not in options]
        if unknown:
            raise LinkValueError(f"`{name}={unknown[0]}` is not one of {', '.join(options)}")
        return list(dict.fromkeys(raw))  # the link's order, as the user picked them

    return Link(name, key, list(options if default is None else default), read, lambda v: list(v))


def number(name: str, key: str, *, low: float, high: float, default: float, aliases: tuple[str, ...] = ()) -> Link:
    """A number inside [low, high], written shortest (`0.3`, not `0.30000000000000004`)."""

    def read(raw: list[str]) -> float:
        try:
            value = float(raw[-1])
        except ValueError:
            raise LinkValueError(f"`{name}={raw[-1]}` is not a number") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise LinkValueError(f"`{name}={raw[-1]}` is outside its range {low:g} to {high:g}")
        return value

    return Link(name, key, float(default), read, lambda v: [f"{float(v):.6g}"], aliases)


def flag(name: str, key: str, *, default: bool = False) -> Link:
    """On or off (`true`/`false`, also `1`/`0`)."""

    def read(raw: list[str]) -> bool:
        word = raw[-1].lower()
        if word not in ("true", "false", "1", "0"):
            raise LinkValueError(f"`{name}={raw[-1]}` is not true or false")
        return word in ("true", "1")

    return Link(name, key, default, read, lambda v: ["true" if v else "false"])


def text(name: str, key: str, *, default: str = "", blank_is_default: bool = False) -> Link:
    """Free text (a path), checked by whoever uses it."""
    return Link(name, key, default, lambda raw: raw[-1], lambda v: [str(v)], blank_is_default=blank_is_default)


def begin_run(page: str) -> None:
    """Called by app.py at the start of every run with the page about to run: `restore` reads the URL only
    on that page's first run (or, for the sidebar, on the session's)."""
    previous = st.session_state.get(PAGE)
    st.session_state[PAGE] = (page, previous is None or page != previous[0], previous is None)


def entering(*, per_session: bool = False) -> bool:
    """Whether this run opens the page (a link, a reload, a switch from another page): the only run whose URL
    is the user's (`per_session`: the session's first run)."""
    return st.session_state.get(PAGE, (None, True, True))[2 if per_session else 1]


def restore(links: Iterable[Link], *, scope: str, per_session: bool = False) -> None:
    """Put what the URL names into session state before the links' widgets exist; values it does not name
    keep the session's: the widget's, else the value last published (Streamlit drops a page's widget state
    while another page runs, so coming back to a page would otherwise reset it), else the default. A bad
    value becomes a notice of `scope` (`show_notices`). `per_session`: read the URL on the session's first run
    only (the sidebar's values: a later page switch carries what this session wrote, or older values)."""
    entry = entering(per_session=per_session)
    for link in links:
        name, raw = _in_url(link)
        kept = _valid(link, st.session_state.get(link.key, st.session_state.get(KEPT, {}).get(link.key, link.default)))
        # Assigned even when unchanged: a widget the last run did not draw (an error stopped the page) is
        # otherwise redrawn at its own default (no tasks, λ at its minimum) while the chart uses this value.
        st.session_state[link.key] = kept
        if raw is None or not entry:
            continue
        try:
            st.session_state[link.key] = link.read(raw)
        except LinkValueError as exc:
            notice(f"{exc}: kept {_shown(link, kept)}.", scope=scope)


def publish(links: Iterable[Link], *, owned: Callable[[str], bool]) -> None:
    """Write the links' current values into the URL (those at their default left out) and drop every other
    parameter `owned` claims (a previous method's, an old-style alias), leaving other widgets' alone."""
    links = list(links)
    wanted = _wanted(links)
    for name in [n for n in st.query_params if owned(n) and n not in wanted]:
        del st.query_params[name]
    for name, values in wanted.items():
        if st.query_params.get_all(name) != values:
            st.query_params[name] = values if len(values) != 1 else values[0]
    published = st.session_state.get(PUBLISHED, {})
    st.session_state[PUBLISHED] = {**{n: v for n, v in published.items() if not owned(n)}, **wanted}
    kept = st.session_state.setdefault(KEPT, {})
    kept.update({link.key: _copy(st.session_state[link.key]) for link in links if link.key in st.session_state})


def owned_by(links: Sequence[Link]) -> Callable[[str], bool]:
    """`publish`'s `owned` for a page that claims only its links' names (and their aliases)."""
    names = {n for link in links for n in (link.name, *link.aliases)}
    return names.__contains__


def unclaimed(claimed: Callable[[str], bool]) -> list[str]:
    """Parameters of the URL nothing on this page reads (a typo, another method's value), as `name=value`."""
    return [f"`{n}={st.query_params.get(n)}`" for n in st.query_params if not claimed(n)]


def notice(message: str, *, scope: str) -> None:
    """Tell the user what of the link was not applied; shown by `show_notices(scope)`."""
    notes = st.session_state.setdefault(NOTICES, {}).setdefault(scope, Notices())
    if message not in notes.messages:
        notes.messages.append(message)


def show_notices(scope: str, *, links: Iterable[Link]) -> None:
    """The notices of `scope`, while the values of `links` (every value the scope restores) are those the
    link gave: once the user changes one, they have moved on from the link and the notices go."""
    _settle_notices(scope, _wanted(links))
    for message in getattr(st.session_state.get(NOTICES, {}).get(scope), "messages", ()):
        st.warning(message, icon=":material/link_off:")


def _settle_notices(scope: str, wanted: dict[str, list[str]]) -> None:
    notes = st.session_state.get(NOTICES, {}).get(scope)
    if notes is not None:
        if notes.pinned is None:
            notes.pinned = wanted
        elif notes.pinned != wanted:
            del st.session_state[NOTICES][scope]


def _wanted(links: Iterable[Link]) -> dict[str, list[str]]:
    """The URL values of `links` now, those at their default left out."""
    return {
        link.name: link.write(st.session_state[link.key])
        for link in links
        if link.key in st.session_state and not _at_default(link, st.session_state[link.key])
    }


@dataclass
class Notices:
    """The notices of one scope and the values its links had when they were first shown (None: not yet)."""

    messages: list[str] = field(default_factory=list)
    pinned: dict | None = None


def forget(key: str) -> None:
    """Drop a value so the next `restore` gives its link's default (a setting that opens at a computed value)."""
    st.session_state.pop(key, None)
    st.session_state.get(KEPT, {}).pop(key, None)


def _valid(link: Link, value: Value) -> Value:
    """`value` if the link still accepts it (a kept task of another collection is not), else its default."""
    try:
        return link.read(link.write(value))
    except (LinkValueError, IndexError, TypeError, ValueError):
        return _copy(link.default)


def _in_url(link: Link) -> tuple[str, list[str] | None]:
    for name in (link.name, *link.aliases):
        if name in st.query_params:
            return name, st.query_params.get_all(name)
    return link.name, None


def _shown(link: Link, value: Value) -> str:
    return f"{link.name}={','.join(link.write(value))}"


def _at_default(link: Link, value: Value) -> bool:
    if link.blank_is_default and isinstance(value, str) and not value.strip():
        return True
    default = link.default
    if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return abs(float(value) - default) < 1e-9
    return value == default


def _copy(value: Value) -> Value:
    return list(value) if isinstance(value, list) else value


def merge_link(method: str, params: Mapping[str, float], *, base: Sequence[tuple[str, str]] = ()) -> str:
    """A deep link opening the Merge page on `method` (a pipeline's name `tsv_m+svc` opens with its
    calibrators) with these parameter values (`svc.alpha` as named), after `base` (the sidebar's part of the URL:
    collection and checkpoints, so the link shows the same numbers)."""
    base_method, *calibrate = method.split("+")  # a pipeline's name: `tsv_m+svc` (engine/merge/pipeline.py)
    pairs = [*base, ("method", base_method), *(("calibrate", c) for c in calibrate)]
    pairs += [(k, f"{v:.6g}") for k, v in params.items()]
    return "merge?" + urlencode(pairs)


def two_task_merge_link(tasks: Sequence[str], lambdas: Sequence[float], *, base: Sequence[tuple[str, str]] = ()) -> str:
    """A deep link opening the Merge page on task arithmetic of `tasks` with one λ each (after `base`, as
    in `merge_link`)."""
    pairs = [*base, *(("tasks", t) for t in tasks), ("per_task", "true")]
    pairs += [(f"lam.{t}", f"{v:.6g}") for t, v in zip(tasks, lambdas)]
    return "merge?" + urlencode(pairs)
