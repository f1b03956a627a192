"""When a source's trouble is an episode the cloud is told of: the rule behind ``source_down`` and
``source_halted`` (``Agent._source_liveness``, ``Agent._source_halt``), pure and driven by the agent's source
watch with monotonic times, so that tests drive it with a fake clock.

A source that flaps (down or halted for 20 s, back for a moment, again, for hours: a PLC whose subscription keeps
stalling and is judged recovered at each reconnect, a camera on a bad cable) never had one bad stretch of 30 s,
so nothing reached the cloud; one whose stretches were just over 30 s sent a start and an end each time. The
rule: an episode starts once the source has been bad for ``confirm_s`` (30 s) *in total* within the last
``window_s`` (120 s): a single clean outage still starts at 30 s, a source bad most of the time starts as soon
as its bad stretches add up to that. An episode of one bad stretch ends at the first pass that finds the source
good (as before), and so does one bad stretch longer than the window (an outage of hours after a blip); one
that flapped (two bad stretches or more in it, counting those in the window when it started) ends only once
the source has been steadily good for ``clear_s`` (120 s), or is good and was bad for at most 5% of the last
``clear_s`` (a reconnect of a pass or two now and then: without it, a source that went back to serving 97% of
the time kept its episode open for good): one start and one end per flapping spell, with ``flaps`` (the bad
stretches it counted). Limits: the source watch samples every 2 s, so a
return shorter than a pass may go unseen (the stretch is then taken as one), and the window is in memory: an
agent restarting mid-spell starts its window afresh (the episode the cloud was told of is carried by the
agent's files): a flapping episode it adopts (``adopt``) ends only once the source has been steadily good for
``clear_s`` until this watch has a window of its own history, so a restart mid-spell, at a moment the source
happens to serve, does not end it at once only for it to start again 30 s later (a start and an end the spell
never had).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

CONFIRM_S = 30.0  # bad for this long in total within WINDOW_S: an episode (a single outage: today's 30 s)
WINDOW_S = 120.0
CLEAR_S = 120.0  # a flapping episode ends once the source has been good this long without a break
# ... or once good and bad for at most this share of the last CLEAR_S: a blip of a pass or two (a reconnect)
# every minute or so must not keep an episode open for months while the source serves 97% of the time
CLEAR_BAD_SHARE = 0.05


@dataclass
class FlapWatch:
    """One source's bad stretches within the window and whether an episode is told. ``observe`` takes one
    pass of the source watch: ``bad`` (down, or halted), ``healthy`` (connected and not halted: counts towards
    the steady good a flapping episode needs to end; neither is a pass that knows nothing, e.g. connecting
    without a halt) and answers ``"start"``, ``"end"`` or None."""

    confirm_s: float = CONFIRM_S
    window_s: float = WINDOW_S
    clear_s: float = CLEAR_S
    active: bool = False
    flaps: int = 0  # bad stretches counted by the episode told (1: a clean outage)
    clean_end: bool = False  # the last end came at once: one clean stretch, or one longer than the window
    # (start, end) of the bad stretches within the window, the last one open (end None) while bad
    _stretches: collections.deque = field(default_factory=collections.deque)
    _good_since: float | None = None
    # when an episode an agent before this one told of was adopted (``adopt``)
    _adopted_at: float | None = None

    def bad_s(self, now: float, span_s: float | None = None) -> float:
        """Seconds bad within the last ``window_s`` (or ``span_s``, at most ``window_s``: older is forgotten)."""
        lo = now - min(self.window_s if span_s is None else span_s, self.window_s)
        return sum(max(0.0, (now if e is None else e) - max(s, lo)) for s, e in self._stretches)

    def first_bad(self, now: float) -> float:
        """When the first bad stretch within the window began (now if none)."""
        return max(self._stretches[0][0], now - self.window_s) if self._stretches else now

    def observe(self, now: float, bad: bool, healthy: bool) -> str | None:
        lo = now - self.window_s
        while self._stretches and self._stretches[0][1] is not None and self._stretches[0][1] < lo:
            self._stretches.popleft()
        open_ = bool(self._stretches) and self._stretches[-1][1] is None
        if bad:
            self._good_since = None
            if not open_:
                self._stretches.append((now, None))
                if self.active:
                    self.flaps += 1
            if not self.active and self.bad_s(now) >= self.confirm_s:
                self.active = True
                self.flaps = len(self._stretches)
                return "start"
            return None
        if open_:
            self._stretches[-1] = (self._stretches[-1][0], now)
        if not self.active:
            return None
        # one clean stretch: its end is said at once, as before; so is one that outlasted the window (whatever
        # flapped before it has left it: an outage of hours after a blip is not a flapping source)
        if self.flaps <= 1 or (open_ and len(self._stretches) == 1 and self._stretches[0][0] <= lo):
            self._end()
            self.clean_end = True
            return "end"
        if not healthy:
            self._good_since = None
            return None
        if self._good_since is None:
            self._good_since = now
        steady = now - self._good_since >= self.clear_s
        if not steady and (
            # adopted after a restart: the bad stretches before it are unknown, so only steady good ends it
            (self._adopted_at is not None and now - self._adopted_at < self.window_s)
            or self.bad_s(now, self.clear_s) > CLEAR_BAD_SHARE * self.clear_s
        ):
            return None
        self._end()
        self.clean_end = False
        return "end"

    def _end(self) -> None:
        self.active = False
        self._good_since = None
        self._adopted_at = None

    def adopt(self, now: float, flaps: int, bad: bool = True) -> None:
        """An episode an agent before this one told the cloud of, found still bad now (or, ``bad`` False, a
        flapping one found good now): this watch carries it to its end."""
        self.active = True
        self.flaps = max(int(flaps), 1)
        self._adopted_at = now
        if not bad:
            self._good_since = now
        elif not (self._stretches and self._stretches[-1][1] is None):
            self._stretches.append((now, None))
