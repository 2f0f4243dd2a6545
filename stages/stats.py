"""How much of a difference is noise: binomial intervals, McNemar's exact test, Holm's correction,
and Student's t interval of a mean. Standard library only (no SciPy): exact binomial sums with
integers, and the closed form of Student's t distribution for integer degrees of freedom.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

Z95 = NormalDist().inv_cdf(0.975)  # 1.959964: two-sided 95% quantile of the standard normal


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default); (0, 1) when n is 0.

    Unlike p +- z*se it stays inside [0, 1] and keeps its coverage at 0% or 100% accuracy.
    """
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in 0..n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At 0 or n successes the bound is exactly 0 or 1; the formula leaves rounding dust there.
    return (0.0 if successes == 0 else centre - half), (1.0 if successes == n else centre + half)


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs (right only in one run, only in the other).

    Under "no difference" each of the n = b + c discordant images is equally likely to fall either
    way, so min(b, c) is Binomial(n, 1/2): p = min(1, 2 * P(X <= min(b, c))), summed exactly in integers.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got {b} and {c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = term = 1  # C(n, 0); then C(n, i + 1) = C(n, i) * (n - i) / (i + 1), exact in integers
    for i in range(min(b, c)):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / 2**n)  # int / int: Python rounds the exact ratio correctly, even for huge n


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order: reject where adjusted <= alpha, with the family-wise
    error rate over all the tests held at alpha. Step-down: the i-th smallest (from 0) is multiplied by
    m - i, and the adjusted values are made non-decreasing in that order."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def t_two_sided_cdf(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer df >= 1 (Abramowitz & Stegun 26.7.3-4, a finite sum)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 1:
        term, series = 1.0, 1.0 if df > 1 else 0.0
        for k in range(3, df - 1, 2):  # 1 + 2/3 cos^2 + (2*4)/(3*5) cos^4 + ... up to cos^(df-3)
            term *= (k - 1) / k * c2
            series += term
        return 2 / math.pi * (theta + s * math.cos(theta) * series)
    term, series = 1.0, 1.0
    for k in range(2, df - 1, 2):  # 1 + 1/2 cos^2 + (1*3)/(2*4) cos^4 + ... up to cos^(df-2)
        term *= (k - 1) / k * c2
        series += term
    return s * series


def t_quantile(confidence: float, df: int) -> float:
    """t such that P(|T| <= t) = confidence for Student's t with df degrees of freedom (bisection)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    low, high = 0.0, 1.0
    while t_two_sided_cdf(high, df) < confidence:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if t_two_sided_cdf(mid, df) < confidence else (low, mid)
        if high - low < 1e-12 * high:
            break
    return (low + high) / 2


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, sample standard deviation, low, high): the t interval of the mean of independent runs.
    With one value the spread is unknown: sd and the bounds are NaN."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = math.fsum(values) / n
    if n == 1:
        return mean, math.nan, math.nan, math.nan
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half
