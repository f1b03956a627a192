"""Which inputs are worth uploading for retraining, under a per-hour budget.

Every NG result (``all_ng``), a seeded random fraction of OK ones (``ok_fraction``), the
uncertain ones (a low margin between the top two classes) and a fraction of the UNSURE ones.
``choose(result)`` returns the reason ("ng", "uncertain", "ok_random", "unsure", or for an item the
model failed on its failure, ``outputs.model_error``: "nonfinite_output", "bad_input", ...) or None;
the reason and the model version travel with the sample, and ``chosen`` counts each reason.
"""

from __future__ import annotations

import collections
import random
import time

from edge_agent.outbox.settings import SampleSelectionSettings
from edge_agent.types import Result


class SampleSelector:
    def __init__(self, settings: SampleSelectionSettings) -> None:
        self.s = settings
        self.rng = random.Random(settings.seed)
        self.times: collections.deque = collections.deque()
        self.chosen: collections.Counter = collections.Counter()
        self.over_budget = 0

    def choose(self, r: Result) -> str | None:
        reason = None
        if r.verdict == "UNSURE":  # far outside the training inputs: a few of them teach the most
            if self.rng.random() < self.s.unsure_fraction:
                # the model failed on it (nonfinite_output, engine_error, bad_input, ...): the sample says so, as
                # its result does, and is counted so; 'unsure' is a frame the model judged far outside its
                # training inputs
                failed = r.outputs.get("model_error") if r.outputs else None
                reason = failed if isinstance(failed, str) and failed else "unsure"
        elif r.verdict == "NG" and self.s.all_ng:
            reason = "ng"
        elif r.margin is not None and r.margin < self.s.uncertain_margin:
            reason = "uncertain"
        elif self.rng.random() < self.s.ok_fraction:
            reason = "ok_random"
        if reason is None:
            return None
        now = time.monotonic()
        while self.times and now - self.times[0] > 3600:
            self.times.popleft()
        if len(self.times) >= self.s.max_per_hour:
            self.over_budget += 1
            return None
        self.times.append(now)
        self.chosen[reason] += 1
        return reason
