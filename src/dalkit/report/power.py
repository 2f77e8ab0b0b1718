"""Can a benchmark decide a paper's claim?  A paired comparison of two methods over seeds (the seeds share
their initial sets and test sets, so the per-seed difference is the unit), its 95 % interval, a verdict,
and the number of seeds the observed spread needs to resolve the claimed margin."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from scipy import stats


@dataclass(frozen=True)
class PairedComparison:
    """A − B over the seeds both have.

    Attributes:
        n: common seeds; mean_diff, sd_diff: mean and sample standard deviation (ddof 1) of A_s − B_s.
        ci_low, ci_high: the two-sided (1 − alpha) t-interval of the mean difference.
        claimed: the paper's margin A − B (> 0).
        verdict: "holds" (interval above 0 and reaching the claimed margin), "holds, smaller than
            claimed" (interval above 0 but below the margin: A is better, by less than the paper says),
            "contradicted" (interval below 0), "margin excluded" (interval straddles 0 but lies below
            the claimed margin), "undecided", or "too few seeds".
        seeds_needed: the smallest n for which a paired t-test at level alpha has the stated power
            against a true difference equal to ``claimed``, given the observed sd (None below 2 seeds).
    """

    a: str
    b: str
    metric: str
    n: int
    mean_diff: float
    sd_diff: float
    ci_low: float
    ci_high: float
    claimed: float
    verdict: str
    seeds_needed: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sentence(self) -> str:
        """One line for a README table or a report."""
        if self.n < 2:
            return f"{self.a} − {self.b} ({self.metric}): {self.n} common seed(s), too few to decide"
        return (f"{self.a} − {self.b} ({self.metric}): {self.mean_diff:+.2f} (95 % CI {self.ci_low:+.2f} to "
                f"{self.ci_high:+.2f}, sd {self.sd_diff:.2f}, {self.n} seeds) → {self.verdict}; claimed "
                f"{self.claimed:+.2f}; {self.seeds_needed} seeds resolve it at this spread")


def seeds_needed(sd: float, margin: float, alpha: float = 0.05, power: float = 0.8,
                 limit: int = 10_000) -> int:
    """Smallest n >= 2 with (t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n) <= margin: the seeds a
    paired t-test needs to detect a true mean difference ``margin`` with probability ``power``."""
    if margin <= 0:
        raise ValueError(f"the claimed margin must be positive, got {margin}")
    if sd == 0:
        return 2
    for n in range(2, limit + 1):
        if (stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)) * sd / math.sqrt(n) <= margin:
            return n
    return limit


def paired_comparison(a: dict[int, float], b: dict[int, float], claimed: float, a_name: str = "A",
                      b_name: str = "B", metric: str = "", alpha: float = 0.05, power: float = 0.8
                      ) -> PairedComparison:
    """Compare per-seed values ``a`` and ``b`` (seed -> value, in the same units as ``claimed``)."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    n = len(diffs)
    if n < 2:
        mean = diffs[0] if diffs else float("nan")
        return PairedComparison(a_name, b_name, metric, n, mean, float("nan"), float("nan"), float("nan"),
                                claimed, "too few seeds", None)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = stats.t.ppf(1 - alpha / 2, n - 1) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    if low > 0:
        verdict = "holds" if high >= claimed else "holds, smaller than claimed"
    elif high < 0:
        verdict = "contradicted"
    elif high < claimed:
        verdict = "margin excluded"
    else:
        verdict = "undecided"
    return PairedComparison(a_name, b_name, metric, n, mean, sd, low, high, claimed, verdict,
                            seeds_needed(sd, claimed, alpha, power))


__all__ = ["PairedComparison", "paired_comparison", "seeds_needed"]
