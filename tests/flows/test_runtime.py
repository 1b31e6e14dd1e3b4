"""Waiting for a flow's tasks: failures surface as the task's own error, never as a hang."""

from __future__ import annotations

import pytest
from prefect import flow, task

from rasterflow.flows.runtime import wait_reporting


class Refused(Exception):
    pass


@task(retries=0)
def first(fail: bool) -> str:
    if fail:
        raise Refused("the first phase failed")
    return "first"


@task
def second() -> str:
    return "second"


@flow
def two_phases(fail: bool) -> list[str]:
    upstream = first.submit(fail)
    return wait_reporting([upstream, second.submit(wait_for=[upstream])], "blocks")


def test_results_in_completion_order():
    assert two_phases(False) == ["first", "second"]


def test_a_failed_upstream_raises_its_own_error_not_its_dependents():
    # The dependent ends NotReady (a Pending state) without running.
    with pytest.raises(Refused, match="the first phase failed"):
        two_phases(True)
