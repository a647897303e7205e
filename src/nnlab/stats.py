"""How sure a comparison is: the statistics behind `make compare`'s intervals and verdicts.

Pure functions of per-seed scores (accuracies as fractions); compare.py reads the runs and calls
them. Every interval and p-value is scipy.stats' own, on the arrays given, so a test can check it
against scipy on the same arrays. Two kinds of noise are reported apart:
  - seed noise: init, data order and (spiral) the data draw change with the seed; the t-interval of
    the mean over seeds covers it, and only it decides verdicts;
  - test-set noise: a finite test set scores a fixed model to within its binomial standard error,
    sqrt(p (1 - p) / n): about ±0.3 pt at 91% on MNIST's 10,000 images, ±0.8 pt at 98% on 300 spiral
    points. Each seed's score already carries it, so it is shown, not added.
"""
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95  # of every interval
ALPHA = 0.05  # a verdict is called when Holm's adjusted p is below it
POWER = 0.80  # of the seed-count estimate given with a "no detectable difference" verdict


def t_interval(x, bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float] | None:
    """95% t-interval of the mean of x, clipped to `bounds` (an accuracy's [0, 1]: the t-interval
    around a mean of 0.99 with a wide spread reaches past 1, where no accuracy lies); None below 2
    values (no spread to scale it by)."""
    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        return None
    mean, sem = x.mean(), stats.sem(x)
    if sem == 0:  # every seed scored the same: the interval is that point
        return float(mean), float(mean)
    low, high = stats.t.interval(LEVEL, len(x) - 1, loc=mean, scale=sem)
    return max(float(low), bounds[0]), min(float(high), bounds[1])


def bootstrap_interval(x) -> tuple[float, float] | None:
    """95% percentile-bootstrap interval of the mean (rliable's kind), from 5 values up: below
    that the resamples are too few to mean anything. Seeded, so the same scores give the same bounds."""
    x = np.asarray(x, dtype=float)
    if len(x) < 5:
        return None
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    ci = stats.bootstrap((x,), np.mean, confidence_level=LEVEL, method="percentile",
                         rng=np.random.default_rng(0)).confidence_interval
    return float(ci.low), float(ci.high)


def binomial_se(acc: float, n_test: int) -> float:
    """Standard error of an accuracy measured on n_test independent examples."""
    return math.sqrt(acc * (1 - acc) / n_test)


@dataclass
class Difference:
    """A - B in test accuracy between two contenders, over their seeds."""
    a: str
    b: str
    n: int                     # paired seeds, or the smaller group when unpaired
    paired: bool
    mean: float                # mean difference (fraction)
    interval: tuple[float, float]
    p: float                   # paired t (ttest_rel), or Welch's t when unpaired
    p_sign_flip: float | None  # exact sign-flip permutation test (paired only)
    p_min_sign_flip: float | None  # the smallest p that test can give with n pairs: 2 / 2**n
    p_better: float            # P(A > B): paired, the share of seeds A wins; unpaired, over all pairs
    sd: float                  # spread of the paired differences (or the pooled spread, unpaired)
    p_holm: float = math.nan   # set by holm() across every pair compared


def difference(a: str, b: str, scores_a: dict[int, float], scores_b: dict[int, float]) -> Difference:
    """Compare two contenders' per-seed scores {seed: test/acc}. Paired by seed when both ran the same
    seeds (the same seed gives both the same data draw, split and order, so the pair's difference
    cancels that noise); otherwise Welch's t-test, which assumes neither equal spreads nor pairs."""
    if set(scores_a) == set(scores_b) and len(scores_a) >= 2:
        seeds = sorted(scores_a)
        x, y = np.array([scores_a[s] for s in seeds]), np.array([scores_b[s] for s in seeds])
        d = x - y
        flips = stats.permutation_test((x, y), lambda u, v, axis: np.mean(u - v, axis=axis), vectorized=True,
                                       permutation_type="samples", n_resamples=np.inf)  # all 2**n sign flips
        if np.ptp(d) == 0:  # the same difference on every seed: no spread, the t-test is undefined, and
            # the exact sign-flip test is what is left (3 seeds: p = 0.25 at best, however large the gap)
            interval, p = (float(d[0]), float(d[0])), 1.0 if d[0] == 0 else float(flips.pvalue)
        else:
            test = stats.ttest_rel(x, y)
            ci = test.confidence_interval(LEVEL)
            interval, p = (float(ci.low), float(ci.high)), float(test.pvalue)
        return Difference(a, b, len(d), True, float(d.mean()), interval, p, float(flips.pvalue),
                          2 / 2 ** len(d), float(np.mean(np.sign(d) + 1) / 2), float(d.std(ddof=1)))
    x, y = np.array(sorted(scores_a.values())), np.array(sorted(scores_b.values()))
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"{a} vs {b}: a comparison needs at least 2 seeds on each side (has {len(x)} and {len(y)})")
    test = stats.ttest_ind(x, y, equal_var=False)
    ci = test.confidence_interval(LEVEL)
    wins = np.mean(np.sign(x[:, None] - y[None, :]) + 1) / 2  # ties count half
    sd = math.sqrt((x.var(ddof=1) + y.var(ddof=1)) / 2)
    return Difference(a, b, min(len(x), len(y)), False, float(x.mean() - y.mean()), (float(ci.low), float(ci.high)),
                      float(test.pvalue) if not math.isnan(test.pvalue) else 1.0, None, None, float(wins), sd)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment: the i-th smallest of m p-values is multiplied by (m - i + 1),
    and the adjusted values are kept non-decreasing in that order. Controls the chance of any
    false call across all the pairs compared, without assuming they are independent."""
    m, adjusted, running = len(pvalues), [0.0] * len(pvalues), 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def seeds_needed(delta: float, sd: float, paired: bool = True, limit: int = 1000) -> int | None:
    """Seeds per side for a two-sided t-test at ALPHA to detect a true difference `delta` with
    probability POWER, given the seed-to-seed spread `sd` (of the paired differences, or of each
    group); from the noncentral t. None when more than `limit` would be needed."""
    if delta == 0 or sd == 0:  # no spread: the sign-flip test decides, and 2 / 2**n must fall below ALPHA
        return None if delta == 0 else math.ceil(math.log2(2 / ALPHA))
    for n in range(2, limit + 1):
        df = n - 1 if paired else 2 * n - 2
        nc = abs(delta) / sd * math.sqrt(n if paired else n / 2)
        crit = stats.t.ppf(1 - ALPHA / 2, df)
        if stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc) >= POWER:
            return n
    return None


def pt(x: float, sign: bool = True) -> str:
    """A fraction in percentage points: 0.0193 -> '+1.9'."""
    return f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}"


def verdict(d: Difference) -> str:
    """One line: who wins, by how much with its 95% interval, the test and its seeds; or, when Holm's
    adjusted p is not below ALPHA, that no difference is detectable and how many seeds would detect
    the difference observed at the spread observed."""
    test = "sign-flip" if d.paired and d.sd == 0 else "paired t"  # no spread: difference() used the exact test
    how = (f"{test} p = {d.p:.2g}, Holm p = {d.p_holm:.2g}, {d.n} paired seeds" if d.paired else
           f"Welch t p = {d.p:.2g}, Holm p = {d.p_holm:.2g}, unpaired: the seeds differ, {d.n}+ a side")
    interval = f"{pt(d.mean)} pt [{pt(d.interval[0])}, {pt(d.interval[1])}]"
    if d.p_holm < ALPHA:
        winner, loser = (d.a, d.b) if d.mean > 0 else (d.b, d.a)
        return f"{winner} > {loser}: {interval if d.mean > 0 else flip(d)}, {how}"
    line = f"{d.a} vs {d.b}: no detectable difference with {d.n} seeds ({interval}, {how})"
    if d.mean == 0 and d.sd == 0:
        return line + "; the same score on every seed"
    n = seeds_needed(d.mean, d.sd, d.paired)
    more = f"about {n} seeds" if n else "more than 1000 seeds"
    return line + f"; {more} would detect {pt(abs(d.mean), sign=False)} pt at this spread"


def flip(d: Difference) -> str:
    return f"{pt(-d.mean)} pt [{pt(-d.interval[1])}, {pt(-d.interval[0])}]"
