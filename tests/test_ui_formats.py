"""The shared number formats: percentages, fixed decimals, and no signed zero."""

import pytest

from ui import formats


@pytest.mark.parametrize(
    ("value", "expected"), [(0.4213, "42.1%"), (1.0, "100.0%"), (-0.0001, "0.0%"), (-0.0, "0.0%"), (-0.05, "-5.0%")]
)
def test_percent(value, expected):
    assert formats.percent(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [(0.02, "+2.0%"), (-0.05, "-5.0%"), (0.0, "0.0%"), (-0.0004, "0.0%"), (0.0004, "0.0%")]
)
def test_signed_percent(value, expected):
    assert formats.signed_percent(value) == expected


@pytest.mark.parametrize(
    ("value", "digits", "expected"),
    [(0.1234, 2, "0.12"), (-0.001, 2, "0.00"), (-0.0, 3, "0.000"), (-0.02, 2, "-0.02"), (-10.0, 1, "-10.0")],
)
def test_fixed(value, digits, expected):
    assert formats.fixed(value, digits) == expected


@pytest.mark.parametrize(("value", "expected"), [(1.8, "1.8"), (2.0, "2"), (0.05, "0.05"), (-0.0, "0")])
def test_short_number(value, expected):
    assert formats.short_number(value) == expected


def test_fixed_grid_has_no_signed_zero():
    assert formats.fixed_grid([[1.0, -0.0004], [0.5, -0.25]]) == [["1.00", "0.00"], ["0.50", "-0.25"]]


def test_a_job_time_reads_like_a_clock():
    from engine.jobs.progress import JobTiming

    assert [formats.clock(s) for s in (5.2, 125, 3725)] == ["0:05", "2:05", "1:02:05"]
    assert formats.job_time(JobTiming(42.0, 70.4)) == "0:42 elapsed · about 1:10 left"
    assert formats.job_time(JobTiming(3.0, None)) == "0:03 elapsed"
    assert formats.job_time(None) == ""
