"""How a background job's state is drawn, the same on every page: a coloured badge with its own icon and word,
and a bar only where a fraction means something (a full blue bar for a queued, a cancelled and a finished
job alike read as "done").

- queued: grey badge, an empty bar (nothing ran yet);
- running: blue badge, the bar at step / total;
- cancelled: orange badge, the bar where it stopped (how far it got);
- failed: red badge, no bar (the error is shown under it);
- done: green badge, no bar;
- interrupted (its server died): violet badge, no bar.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from engine.jobs import progress
from ui import formats


@dataclass(frozen=True)
class JobLook:
    """One state's drawing: badge colour and icon, what it says, and the bar's fraction (None: no bar)."""

    state: str
    colour: str
    icon: str
    fraction: float | None

    @property
    def badge(self) -> str:
        """Streamlit markdown of the badge, e.g. ':blue-badge[:material/play_arrow: running]'."""
        return f":{self.colour}-badge[{self.icon} {self.state}]"


LOOKS = {  # state → (badge colour, icon)
    "queued": ("gray", ":material/hourglass_empty:"),
    "running": ("blue", ":material/play_arrow:"),
    "cancelled": ("orange", ":material/cancel:"),
    "failed": ("red", ":material/error:"),
    "done": ("green", ":material/check_circle:"),
    "interrupted": ("violet", ":material/power_off:"),
}


def job_look(state: str, *, step: int, total: int) -> JobLook:
    """The drawing of a job in `state` that reached `step` of `total`; an unknown state reads as itself, grey."""
    colour, icon = LOOKS.get(state, ("gray", ":material/help:"))
    reached = min(1.0, step / total) if total else 0.0
    fraction = {"queued": 0.0, "running": reached, "cancelled": reached}.get(state)
    return JobLook(state, colour, icon, fraction)


def job_bar(
    container,
    *,
    job_id: int,
    name: str,
    state: str,
    step: int,
    total: int,
    message: str = "",
    timing: str = "",
) -> None:
    """The job's badge, number, name, message and `timing` ("0:42 elapsed · about 1:10 left", ui/formats.job_time)
    on one line, then its bar where its state has one; in a container keyed `job-<id>` (the browser finds it as
    `.st-key-job-<id>`)."""
    look = job_look(state, step=step, total=total)
    box = container.container(key=f"job-{job_id}")
    box.markdown(f"{look.badge} **#{job_id}** {name}" + "".join(f" · {part}" for part in (message, timing) if part))
    if look.fraction is not None:
        reached = f"step {step} of {total}" if total else "no step yet"
        box.progress(look.fraction, text=reached + (" (stopped here)" if state == "cancelled" else ""))


def show_jobs_of(records, *, header: str | None = None) -> None:
    """`records` (JobRecords) one under the other, e.g. the sweeps a page's button started."""
    if records and header:
        st.caption(header)
    for record in records:
        job_bar(
            st,
            job_id=record.id,
            name=record.name,
            state=record.state,
            step=record.step,
            total=record.total,
            message=record.message,
            timing=formats.job_time(progress.of_record(record)),
        )
