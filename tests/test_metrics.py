"""The group-commit metrics: each batch's size and the time its block took, failures too."""

from __future__ import annotations

import pytest

from fhirserver.metrics import REGISTRY, group_commit


def sample(name: str, queue: str) -> float:
    """The registry's current value of `name` for `queue` (0 before the first batch)."""
    return REGISTRY.get_sample_value(name, {"queue": queue}) or 0.0


def test_a_batch_records_its_size_and_its_time() -> None:
    before = (sample("fhirserver_group_commit_batch_size_count", "t-ok"),
              sample("fhirserver_group_commit_batch_size_sum", "t-ok"))
    with group_commit("t-ok", 7):
        pass
    with group_commit("t-ok", 3):
        pass
    assert sample("fhirserver_group_commit_batch_size_count", "t-ok") == before[0] + 2
    assert sample("fhirserver_group_commit_batch_size_sum", "t-ok") == before[1] + 10
    assert sample("fhirserver_group_commit_seconds_count", "t-ok") == 2
    assert sample("fhirserver_group_commit_seconds_sum", "t-ok") > 0
    # 7 falls in the le=8 bucket, not le=4; 3 in le=4
    assert REGISTRY.get_sample_value("fhirserver_group_commit_batch_size_bucket",
                                     {"queue": "t-ok", "le": "4.0"}) == 1
    assert REGISTRY.get_sample_value("fhirserver_group_commit_batch_size_bucket",
                                     {"queue": "t-ok", "le": "8.0"}) == 2


def test_a_failed_batch_is_counted_and_its_error_propagates() -> None:
    with pytest.raises(RuntimeError, match="store down"), group_commit("t-fail", 4):
        raise RuntimeError("store down")
    assert sample("fhirserver_group_commit_batch_size_sum", "t-fail") == 4
    assert sample("fhirserver_group_commit_seconds_count", "t-fail") == 1
