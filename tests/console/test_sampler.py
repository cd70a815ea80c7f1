"""Rates and lag over time from once-a-second samples (console/sampler.py), without a broker."""

from __future__ import annotations

from logstore.server.console.sampler import Rates, Sample, Sampler


def sampler_with(*samples: Sample) -> Sampler:
    sampler = Sampler(broker=None, metrics=None)  # type: ignore[arg-type]  # reading only
    sampler.samples.extend(samples)
    return sampler


def test_rates_are_differences_over_the_interval():
    sampler = sampler_with(
        Sample(10.0, {"orders": (100, 1000, 50, 500)}),
        Sample(12.0, {"orders": (300, 5000, 150, 900), "menu": (4, 40, 0, 0)}),
    )
    assert sampler.rates("orders") == Rates(100.0, 2000.0, 50.0, 200.0)
    assert sampler.rates() == Rates(102.0, 2020.0, 50.0, 200.0)  # a new topic counts from zero


def test_one_sample_has_no_rate_yet():
    assert sampler_with(Sample(1.0, {"orders": (5, 5, 5, 5)})).rates() == Rates()


def test_a_topic_recreated_with_lower_totals_never_gives_a_negative_rate():
    sampler = sampler_with(Sample(1.0, {"t": (100, 100, 100, 100)}), Sample(2.0, {"t": (3, 3, 3, 3)}))
    assert sampler.rates("t") == Rates()


def test_history_has_one_point_per_interval():
    sampler = sampler_with(*(Sample(float(s), {"t": (s * 10, 0, s * 5, 0)}) for s in range(4)))
    assert sampler.rate_history("t") == [(1.0, 10.0, 5.0), (2.0, 10.0, 5.0), (3.0, 10.0, 5.0)]


def test_lag_history_skips_samples_without_the_group():
    sampler = sampler_with(Sample(1.0, {}, {"a": 5}), Sample(2.0, {}, {}), Sample(3.0, {}, {"a": 7}))
    assert sampler.lag_history("a") == [(1.0, 5), (3.0, 7)]
