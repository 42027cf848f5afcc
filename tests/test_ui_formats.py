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
