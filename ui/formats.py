"""Number formats every page shares: accuracies as percentages, fixed decimals, and never a "-0.0".

Python formats a tiny negative number as "-0.00" (and -0.0 as "-0.0%"); on a projected slide that reads
as a real loss. A value that rounds to zero is shown unsigned.
"""

from __future__ import annotations

from collections.abc import Sequence


def _unsigned_zero(text: str) -> str:
    """'-0.00' → '0.00', '-0.0%' → '0.0%', '+0.0%' → '0.0%'; other numbers unchanged."""
    if text[:1] in "+-" and not any(c in "123456789" for c in text):
        return text[1:]
    return text


def fixed(value: float, digits: int = 2) -> str:
    """`value` with `digits` decimals, e.g. 0.1234 → '0.12'; -0.001 → '0.00'."""
    return _unsigned_zero(f"{value:.{digits}f}")


def percent(value: float, digits: int = 1) -> str:
    """An accuracy (a fraction) as a percentage, e.g. 0.4213 → '42.1%'; -0.0001 → '0.0%'."""
    return _unsigned_zero(f"{value:.{digits}%}")


def signed_percent(value: float, digits: int = 1) -> str:
    """A change of accuracy with its sign, e.g. -0.05 → '-5.0%', 0.02 → '+2.0%'; a change that rounds to
    zero has no sign ('0.0%')."""
    return _unsigned_zero(f"{value:+.{digits}%}")


def short_number(value: float) -> str:
    """A setting such as α or λ in its shortest form ('%g'), e.g. 1.8 → '1.8', 2.0 → '2'; -0.0 → '0'."""
    return _unsigned_zero(f"{value:g}")


def fixed_grid(rows: Sequence[Sequence[float]], digits: int = 2) -> list[list[str]]:
    """`fixed` of every cell of a matrix given as rows (heatmap cell labels)."""
    return [[fixed(v, digits) for v in row] for row in rows]


def clock(seconds: float) -> str:
    """A duration as a clock reads it: 5.2 → '0:05', 125 → '2:05', 3725 → '1:02:05'."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def job_time(timing) -> str:
    """A job's elapsed time and estimate (engine/jobs/progress.JobTiming) for its progress bar; '' before it
    started."""
    if timing is None:
        return ""
    if timing.left_s is None:
        return f"{clock(timing.elapsed_s)} elapsed"
    return f"{clock(timing.elapsed_s)} elapsed · about {clock(timing.left_s)} left"
