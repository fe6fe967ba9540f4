import pytest

from scaler.scaling import ScalingPolicy


@pytest.mark.parametrize(
    ("allocations", "desired"),
    [(0, 2), (1, 2), (200, 2), (201, 3), (250, 3), (450, 5), (999, 10), (1000, 10), (5000, 10)],
)
def test_desired_replicas_follows_the_design_rule(allocations: int, desired: int) -> None:
    assert ScalingPolicy().desired_replicas(allocations) == desired


def test_custom_policy() -> None:
    policy = ScalingPolicy(min_replicas=0, max_replicas=3, target_per_replica=7)
    assert [policy.desired_replicas(n) for n in (0, 7, 8, 21, 22)] == [0, 1, 2, 3, 3]


@pytest.mark.parametrize(
    "bad", [{"min_replicas": 5, "max_replicas": 4}, {"target_per_replica": 0}, {"min_replicas": -1}]
)
def test_policy_rejects_contradictions(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        ScalingPolicy(**bad)
