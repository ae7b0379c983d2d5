"""``cryptolens-bridge chaos`` keeps working: one short run, and its checker catches faults."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from devtools import workload
from devtools.chaos.check import check
from devtools.chaos.report import RunResult
from devtools.chaos.run import DELIVERIES, run_once

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, Path]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    keep = tmp_path_factory.mktemp("chaos")
    result = run_once(7, keep=keep, one_offs=4, subscriptions=3, timeout=60)
    return result, keep


def test_a_short_run_passes_with_workers_killed(
    short_run: tuple[RunResult, Path],
) -> None:
    result, _ = short_run
    assert result.failures == []
    assert result.passed
    assert result.kills >= 2
    # 4 one-offs, 3 subscriptions: one key each, every event delivered three times.
    assert result.keys == 7
    assert result.deliveries % DELIVERIES == 0


def test_the_checker_flags_a_second_event_and_a_stray_key(
    short_run: tuple[RunResult, Path],
) -> None:
    _, keep = short_run
    state = json.loads((keep / "state.json").read_text())
    purchases = workload.build(seed=7, now=0, one_offs=4, subscriptions=3).purchases
    tampered = copy.deepcopy(state)
    tampered["events"].append(dict(state["events"][0], id=10**6))
    tampered["keys"].append(dict(state["keys"][0], key="STRAY-KEY", global_id=10**6))

    again = RunResult(7, "sqlite")
    check(again, purchases, tampered, f"sqlite:///{keep / 'bridge.db'}")

    assert any("applied 2 times" in f for f in again.failures), again.failures
    assert any("no purchase accounts for" in f for f in again.failures), again.failures
    assert any("events {" in f for f in again.failures), again.failures


def test_the_checker_flags_a_touched_foreign_key(
    short_run: tuple[RunResult, Path],
) -> None:
    result, keep = short_run
    state = json.loads((keep / "state.json").read_text())
    foreign = frozenset(json.loads((keep / "foreign.json").read_text()))
    assert len(foreign) == result.foreign_keys > 0  # the other client made keys meanwhile
    purchases = workload.build(seed=7, now=0, one_offs=4, subscriptions=3).purchases
    tampered = copy.deepcopy(state)
    victim = next(k for k in tampered["keys"] if k["key"] in foreign)
    victim["notes"] = "cryptolens-bridge-0123"

    again = RunResult(7, "sqlite")
    check(again, purchases, tampered, f"sqlite:///{keep / 'bridge.db'}", foreign)
    assert any("foreign key was touched" in f for f in again.failures), again.failures
