"""Which model family gets the next trial.

Round robin gives a family that is far behind as many trials as the leader; in a short
run that halves the leader's search. Here each family's *estimated cost for
improvement* (ECI, the learner choice of FLAML: Wang et al., "FLAML: A Fast and
Lightweight AutoML Library", MLSys 2021) is estimated from its own trials, and the
next trial goes to a family drawn with probability proportional to 1 / ECI, so every
family keeps a chance while the cheap and promising ones get most of the time.

- A family's cost to improve on itself is the longer of the time it needed for its
  last improvement and the time it has spent since without one (never less than one
  trial).
- A family behind the leader must also close the gap: the gap divided by the fastest
  rate of improvement any family has shown (optimistic, so a family that has had one
  trial is not written off), or, before any family has improved, by a prior rate of
  ``PRIOR_GAIN`` of the leader's loss per leader's trial.
- Every family gets its first trial before any family gets a second.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

MIN_TRIAL_S = 0.5  # a trial's cost is never taken as less (start-up, data, scoring)
# Before any family has improved on its first result, a trial of the leader is assumed
# to gain this share of its loss: a gap of 10% then costs about ten of its trials.
PRIOR_GAIN = 0.01
# A gain smaller than this share of the loss is noise, not an improvement: a family
# whose every trial scores 0.8399 +- 0.0001 has stopped improving.
SIGNIFICANT = 1e-3


def significant(loss: float) -> float:
    """The least gain on ``loss`` that counts as an improvement."""
    return SIGNIFICANT * max(abs(loss), 1e-12)


@dataclass(frozen=True)
class FamilyRecord:
    """One family's trials so far, in the order they finished.

    Attributes:
        seconds: each finished trial's wall seconds (failed ones included).
        losses: each trial's score turned to lower-is-better; None for a failed trial.
        in_flight: trials of the family running now.
    """

    seconds: Sequence[float]
    losses: Sequence[float | None]
    in_flight: int = 0

    @property
    def started(self) -> int:
        return len(self.seconds) + self.in_flight

    @property
    def best(self) -> float | None:
        done = [v for v in self.losses if v is not None]
        return min(done) if done else None

    def trial_cost(self) -> float:
        return max(MIN_TRIAL_S, sum(self.seconds) / len(self.seconds)) if self.seconds else 0.0

    def history(self) -> tuple[float, float, float, float | None]:
        """(seconds spent, seconds spent when the best was found, seconds spent when the
        best before it was found, the loss gained then; None before any improvement).
        Only gains of at least :func:`significant` count as improvements.
        The clock runs over this family's trials only; trials running count one trial's
        cost each."""
        spent, best, when_best, when_before, gained = 0.0, None, 0.0, 0.0, None
        for seconds, loss in zip(self.seconds, self.losses, strict=True):
            spent += seconds
            if loss is not None and (best is None or loss < best - significant(best)):
                if best is not None:
                    when_before, gained = when_best, best - loss
                best, when_best = loss, spent
        return spent + self.in_flight * self.trial_cost(), when_best, when_before, gained


def improvement_rate(record: FamilyRecord) -> float | None:
    """Loss gained per second at the family's last improvement, None if it has none."""
    _, when_best, when_before, gained = record.history()
    if gained is None or when_best <= when_before:
        return None
    return gained / (when_best - when_before)


def estimated_costs(records: dict[str, FamilyRecord]) -> dict[str, float]:
    """Each family's estimated seconds to an improvement (of its own best, and of the
    leader's for a family behind), for families with at least one finished trial."""
    bests = {f: r.best for f, r in records.items() if r.best is not None}
    leader = min(bests.values()) if bests else None
    fastest = max((r for r in map(improvement_rate, records.values()) if r), default=None)
    if fastest is None and leader is not None:  # no family has improved yet: the prior
        first = min(bests, key=lambda f: bests[f])
        fastest = PRIOR_GAIN * max(abs(leader), 1e-12) / records[first].trial_cost()
    costs: dict[str, float] = {}
    for family, record in records.items():
        if not record.seconds:
            continue
        spent, when_best, when_before, _ = record.history()
        own = max(spent - when_best, when_best - when_before, record.trial_cost())
        best = bests.get(family)
        if best is None:  # only failures so far
            costs[family] = max(own, 2 * spent)
        elif leader is not None and best > leader and fastest:
            costs[family] = max(own, (best - leader) / fastest)
        else:  # the leader
            costs[family] = own
    return costs


def choose_family(
    records: dict[str, FamilyRecord], rng: random.Random, open_families: Sequence[str]
) -> str:
    """The family that runs the next trial, among ``open_families`` (not empty): one
    never started first, else one drawn with probability proportional to 1 / ECI."""
    fewest = min(open_families, key=lambda f: records[f].started)
    if records[fewest].started == 0:
        return fewest
    # a family whose only trials are still running waits for one to finish
    costs = estimated_costs({f: records[f] for f in open_families})
    if not costs:
        return fewest
    names = sorted(costs)
    return rng.choices(names, weights=[1.0 / max(costs[f], 1e-9) for f in names], k=1)[0]
