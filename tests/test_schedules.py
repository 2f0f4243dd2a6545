"""lr and lookahead schedules against their formulas."""
from __future__ import annotations

import math

import pytest

from stages.schedules import lookahead_decay, lr_factor


def test_airbench_shape_rises_from_0_2_and_ends_at_0_07():
    total, warm = 1000, 230
    f = [lr_factor(s, total, 0.23, "linear", warmup_from=0.2, decay_to=0.07) for s in range(total)]
    assert f[0] == pytest.approx(0.2 + 0.8 / warm)
    assert f[warm - 1] == pytest.approx(1.0)
    assert max(f) == pytest.approx(1.0)
    assert f[-1] == pytest.approx(1.0 - 0.93 * (total - 1 - warm) / (total - warm))
    assert lr_factor(total, total, 0.23, "linear", 0.2, 0.07) == pytest.approx(0.07)
    assert all(a <= b for a, b in zip(f[:warm], f[1:warm]))  # rises, then falls
    assert all(a >= b for a, b in zip(f[warm:], f[warm + 1:]))


def test_defaults_keep_the_old_onecycle_and_cosine():
    assert lr_factor(0, 100, 0.1, "linear") == pytest.approx(0.1)
    assert lr_factor(55, 100, 0.1, "linear") == pytest.approx(1 - 45 / 90)
    assert lr_factor(55, 100, 0.1, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(5, 100, 0.0, "constant") == 1.0
    with pytest.raises(ValueError, match="Invalid schedule 'onecycle'"):
        lr_factor(50, 100, 0.0, "onecycle")


def test_lookahead_decay_grows_with_the_cube_of_progress():
    assert lookahead_decay(0, 100, 0.95 ** 5) == 0.0
    assert lookahead_decay(50, 100, 0.8) == pytest.approx(0.8 / 8)
    assert lookahead_decay(100, 100, 0.8) == pytest.approx(0.8)


@pytest.mark.parametrize("schedule, expected", [
    ("constant", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]),
    ("linear", [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]),
    ("cosine", [0.5, 1.0, 1.0, 0.8536, 0.5, 0.1464]),
])
def test_lr_schedules(schedule, expected):
    got = [lr_factor(step, 6, warmup=2 / 6, schedule=schedule) for step in range(6)]
    assert got == pytest.approx(expected, abs=1e-4)
