"""How the benchmarks fold alternating rounds into the README's rows and ratios."""

from __future__ import annotations

import math

from tests.bench.relay_bench import LoadResult
from tests.bench.rounds import cpu_ratios, merged, per_message_us


def result(received: int, cpu: float, *, lost: int = 0, rate: float = 1000.0) -> LoadResult:
    return LoadResult(
        sent=received + lost, received=received, lost=lost, cpu=cpu, rate=rate, wall=10.0
    )


def test_rounds_are_summed_and_the_rate_is_their_median() -> None:
    total = merged(
        [
            result(1000, 0.05, rate=900),
            result(990, 0.04, lost=10, rate=1100),
            result(1000, 0.06, rate=1000),
        ]
    )
    assert (total.sent, total.received, total.lost) == (3000, 2990, 10)
    assert math.isclose(total.cpu, 0.15)
    assert math.isclose(total.loss_percent, 100 * 10 / 3000)
    assert total.rate == 1000
    assert math.isclose(per_message_us(total), 0.15 / 2990 * 1e6)


def test_a_round_without_a_result_marks_the_loss_unknown() -> None:
    failed = LoadResult()  # uclient printed no summary: lost stays -1
    assert merged([result(1000, 0.05), failed]).lost == -1


def test_ratios_pair_the_rounds_and_skip_those_without_figures() -> None:
    ours = [result(1000, 0.06), result(1000, 0.03), result(1000, 0.05)]
    theirs = [result(1000, 0.04), result(1000, 0.03), result(0, 0.0)]
    assert [round(r, 6) for r in cpu_ratios(ours, theirs)] == [1.5, 1.0]
