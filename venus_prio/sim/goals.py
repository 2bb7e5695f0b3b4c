"""The simulator's goals for venus-prio (issue 9, "Must show"), as predicates over a comparison.

Each goal takes the metrics of one day's comparison (``runner.compare``) and the policy to
judge, and is true when the policy meets it. ``NEAR_THE_FLOOR`` are the goals of a day near the
floor (cloudy-floor, winter, a December profile); cloudy-floor adds ``throughput_at_most_06_stock``
and a sunny day asks only ``import_within_1_percent_of_stock``. The tests and the README's
figures (``sim.readme``) both use these, so they cannot mean different things.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Tuple

from venus_prio.sim.metrics import Metrics

Goal = Callable[[Dict[str, Metrics], str], bool]


def throughput_at_most_original(m: Dict[str, Metrics], p: str) -> bool:
    """Battery throughput at most the original add-on's."""
    return m[p].throughput_kwh <= m["original"].throughput_kwh


def throughput_at_most_06_stock(m: Dict[str, Metrics], p: str) -> bool:
    """Battery throughput at most 0.6 x stock ESS's."""
    return m[p].throughput_kwh <= 0.6 * m["stock"].throughput_kwh


def import_at_most_original(m: Dict[str, Metrics], p: str) -> bool:
    """Adjusted grid import at most the original add-on's."""
    return m[p].grid_import_adjusted_kwh <= m["original"].grid_import_adjusted_kwh


def import_at_most_stock(m: Dict[str, Metrics], p: str) -> bool:
    """Adjusted grid import at most stock ESS's."""
    return m[p].grid_import_adjusted_kwh <= m["stock"].grid_import_adjusted_kwh


def import_within_1_percent_of_stock(m: Dict[str, Metrics], p: str) -> bool:
    """Adjusted grid import at most 1 % above stock ESS's."""
    return m[p].grid_import_adjusted_kwh <= 1.01 * m["stock"].grid_import_adjusted_kwh


def fewer_micro_cycles_than_stock(m: Dict[str, Metrics], p: str) -> bool:
    """Fewer micro-cycles than stock ESS."""
    return m[p].micro_cycles < m["stock"].micro_cycles


def at_most_2_micro_cycles(m: Dict[str, Metrics], p: str) -> bool:
    """At most 2 micro-cycles."""
    return m[p].micro_cycles <= 2


def no_flash_write(m: Dict[str, Metrics], p: str) -> bool:
    """Not a single write of the setting (flash)."""
    return m[p].flash_writes_total == 0


NEAR_THE_FLOOR: Tuple[Goal, ...] = (
    throughput_at_most_original,
    import_at_most_original,
    import_at_most_stock,
    fewer_micro_cycles_than_stock,
    at_most_2_micro_cycles,
    no_flash_write,
)


def override_goals(scenario: str) -> Tuple[Goal, ...]:
    """Return the goals of ``venus_prio[override]`` on a day of this kind."""
    if scenario == "sunny":
        return (import_within_1_percent_of_stock, no_flash_write)
    if scenario == "cloudy-floor":
        return (*NEAR_THE_FLOOR, throughput_at_most_06_stock)
    return NEAR_THE_FLOOR


def missed(goals: Tuple[Goal, ...], m: Dict[str, Metrics], p: str) -> List[str]:
    """Return the names of the goals ``p`` misses on this day."""
    return [goal.__name__ for goal in goals if not goal(m, p)]
