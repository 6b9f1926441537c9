"""Interleaved timing and paired ratios (trimodal/evaluation/latency.py), on callables that record their order."""
import pytest

from trimodal.evaluation.latency import interleaved_ms, interleaved_rounds, paired_ratio


def test_rounds_rotate_the_order_and_time_every_variant_once_per_round():
    calls = []
    runs = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = interleaved_rounds(runs, repeats=4)
    assert calls[:3] == ["a", "b", "c"]  # warm-up, then rounds starting at a, b, c, a
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    assert {name: len(t) for name, t in times.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(ms >= 0 for t in times.values() for ms in t)
    assert set(interleaved_ms(runs, repeats=1)) == {"a", "b", "c"}


def test_paired_ratio_is_the_quartiles_of_the_per_round_ratios():
    # ratios 1, 2, 3, 4: inclusive quartiles at positions 0.75, 1.5, 2.25 of the sorted ratios
    assert paired_ratio([2, 8, 6, 4], [2, 4, 2, 1]) == {"q1": 1.75, "median": 2.5, "q3": 3.25}
    # pairing matters: the same times, unpaired, would give other ratios
    assert paired_ratio([10, 20], [10, 20]) == {"q1": 1.0, "median": 1.0, "q3": 1.0}
    assert paired_ratio([3], [2]) == {"q1": 1.5, "median": 1.5, "q3": 1.5}
    with pytest.raises(ValueError):
        paired_ratio([1, 2], [1])
    with pytest.raises(ValueError):
        paired_ratio([], [])
