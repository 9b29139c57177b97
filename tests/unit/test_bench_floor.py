"""The burst bench's floor: the least time any client could take at the provider's limits."""

from __future__ import annotations

from bench.burst import floor_seconds


def test_every_call_counts_in_waves_of_the_in_flight_cap():
    # 40 jobs of 8 maps and a reduce at 16 in flight, 0.5 s a call: 360 calls are 23 waves, reduces included.
    assert floor_seconds(360, 16) == 11.5
    assert floor_seconds(1800, 16) == 56.5


def test_a_requests_per_minute_cap_lets_the_calls_beyond_the_first_seconds_worth_start_at_its_rate():
    # 1,200 RPM: 20 at once, then 20 a second; the last of 360 starts at 17 s and ends half a second later.
    assert floor_seconds(360, 16, 1200) == 17.5
    assert floor_seconds(10, 16, 1200) == 0.5  # within the first second's worth: the in-flight waves decide
