"""Releasing a Browse's continuation points (``release_points``) never fails the Browse whose pages were all read.

A release left unanswered cannot be made with asyncua's server (it answers a connection's requests in order: a release
answered late holds the keepalive too, and the source reconnects), so the session here is a stand-in whose BrowseNext
is not answered."""

from __future__ import annotations

import pytest
from asyncua import ua

from devices.opcua.properties import release_points


class _Unanswered:
    """A session whose BrowseNext ends as asyncua's does when the server does not answer within its timeout."""

    def __init__(self, error: Exception) -> None:
        self.error, self.asked = error, []

    async def browse_next(self, params: ua.BrowseNextParameters) -> list:
        self.asked.append(params)
        raise self.error


@pytest.mark.parametrize("error", [TimeoutError(), ua.UaError("refused")], ids=["unanswered", "refused"])
async def test_a_release_unanswered_or_refused_is_not_raised(error) -> None:
    """A release unanswered (TimeoutError) raised out of the Browse, all of whose pages were read: the write that read
    the node's type was said not answered and retried. Now neither it nor a refused one (UaError) is raised."""
    session = _Unanswered(error)
    await release_points(session, [ua.BrowseResult(ContinuationPoint=b"cp")])
    assert [p.ReleaseContinuationPoints for p in session.asked] == [True]  # asked once, then let go
