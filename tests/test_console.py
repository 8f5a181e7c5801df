"""sg2ada.console.format_time: NVIDIA's compact elapsed time."""

import pytest

from sg2ada.console import format_time


@pytest.mark.parametrize("sec,text", [(0.4, "0s"), (42, "42s"), (59.6, "1m 00s"), (187, "3m 07s"),
                                      (7509, "2h 05m 09s"), (93780, "1d 02h 03m")])
def test_format_time(sec, text):
    assert format_time(sec) == text
