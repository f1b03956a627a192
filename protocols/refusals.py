"""Machine-readable marks of the fleet service's refusals, sent in a refused call's trailing metadata beside its
status, so that an agent tells a refusal's kind by a key rather than by the words of its details (which stay for
people, and for agents of before the mark). Both sides import these; no I/O.

``REFUSAL_KEY`` holds the kind: ``STREAMS_FULL`` for a stream refused as beyond the agent's ``concurrent_streams``
(``RESOURCE_EXHAUSTED``): a place another of its streams gives back (a package download), worth trying again soon,
unlike a quota of the day or a rate. ``STREAMS_LIMIT_KEY`` beside it holds that limit (a decimal number): at 1, an
agent's Connect stream alone holds the place. ``EPOCHS_BOUND``: a batch refused for the epochs its agent opened
within the fleet store's day window (``RESOURCE_EXHAUSTED``): mended in hours, not by the backoff's seconds.

``REPORT_KEY: REPORT_LATE`` (trailing metadata of an answered ``Heartbeat`` or ``ReportDeployment``, or of a
``Connect`` stream the fleet ended after a report of another run than the one it last took): the state report was older than one the
fleet took (a lower number of its run, or of a run a newer one followed; not written; a deployment step kept as its
target's last report only). An agent then numbers its next reports under a new run: a gateway restored
from a VM memory snapshot counts again from the snapshot's number, below the fleet's."""

from __future__ import annotations

REFUSAL_KEY = "fleet-refusal"  # gRPC metadata keys are lower case ASCII
STREAMS_FULL = "concurrent-streams"
STREAMS_LIMIT_KEY = "fleet-streams-limit"
EPOCHS_BOUND = "epochs-per-day"
REPORT_KEY = "fleet-report"
REPORT_LATE = "late"
