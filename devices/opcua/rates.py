"""A waveform node's sample rate as the OPC UA server states it (``nodes[].sample_rate_from``).

Two ways servers state it, both read here:

- ``x_axis``: the standard one. OPC UA Part 8 (Data Access) models a waveform or spectrum as a
  ``YArrayItemType`` whose mandatory ``XAxisDefinition`` property (``AxisInformation``) gives the x
  axis' engineering units and ``EURange``; with ``axisSteps`` null the points are equidistant, the
  first at ``Low`` and the last at ``High``, so a time waveform of N samples is sampled at
  ``(N - 1) / (High - Low)`` (units s, ms or µs). Read at each connection, and again when a value of
  the waveform carries the SemanticsChanged status bit (the server's flag that its metadata changed).
- a node id: many condition-monitoring devices publish the rate as its own variable next to the
  waveform (``SampleRate``, ``SamplingFrequency``, in Hz). It is read at connect and subscribed, so a
  change at run time reaches the pipeline with the next waveform: of every waveform that names it (a
  tri-axial sensor's three axes share one), and also when it is read as a tag of its own. A value whose
  status is not Good (the device behind the server away, a last usable value) states no rate until a
  Good one comes; a rate node Bad at connect is subscribed all the same.

The rate rides on each ``Reading`` of the waveform (``Reading.rate_hz``); the pipeline checks it
against the config and the model (``edge_agent.pipelines.Windower``). A rate that cannot be read is
one node error naming the node and the fix; the waveform is still read (without a stated rate).
"""

from __future__ import annotations

from typing import Any

from asyncua import Client, Node, ua

from devices.opcua.properties import Properties, PropertiesUnread
from devices.opcua.statuses import code_of

# x axis units (EUInformation display name or UNECE code) -> seconds
_SECONDS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "ms": 1e-3,
    "millisecond": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "microsecond": 1e-6,
}
_UNECE = {5457219: 1.0, 4403766: 1e-3, 4403510: 1e-6}  # SEC, C26 (ms), B98 (µs)


class RateError(ValueError):
    pass


# a rate node's read answered with one of these: the node is not there (not merely Bad now)
_NO_NODE = frozenset(
    {
        ua.StatusCodes.BadNodeIdUnknown,
        ua.StatusCodes.BadNodeIdInvalid,
        ua.StatusCodes.BadAttributeIdInvalid,
        ua.StatusCodes.BadNotReadable,
        ua.StatusCodes.BadUserAccessDenied,
    }
)


def x_axis_span_s(axis: Any) -> float:
    """The time span of an ``AxisInformation`` (seconds); ``RateError`` for an axis that is not time."""
    eu = axis.EngineeringUnits
    name = ((eu.DisplayName.Text if eu and eu.DisplayName else None) or "").strip().lower()
    scale = _UNECE.get(eu.UnitId if eu else 0) or _SECONDS.get(name)
    if scale is None:
        raise RateError(
            f"its XAxisDefinition is in {name or 'no unit'!r}, not time (s, ms, µs): a spectrum or "
            "an unknown axis states no sample rate; use a rate node instead"
        )
    if axis.AxisSteps:
        raise RateError("its XAxisDefinition lists axisSteps (points not equidistant): no single sample rate")
    span = (float(axis.EURange.High) - float(axis.EURange.Low)) * scale
    if not span > 0:
        raise RateError(f"its XAxisDefinition's EURange {axis.EURange.Low}..{axis.EURange.High} is empty")
    return span


class StatedRates:
    """Per tag: the rate a rate node states, or the x axis span; ``rate_for`` gives a reading's rate."""

    def __init__(self) -> None:
        self.nodes: dict[ua.NodeId, list[str]] = {}  # rate node -> the waveform tags it states the rate of
        self.hz: dict[str, float] = {}  # tag -> rate from its rate node
        self.span_s: dict[str, float] = {}  # tag -> x axis span

    def clear(self) -> None:
        self.nodes.clear()
        self.hz.clear()
        self.span_s.clear()

    async def setup(self, client: Client, where: str, tag: str, node: Node, resolve) -> Node | None:
        """Read what ``where`` states for ``tag``; the rate node to subscribe too (None for x_axis)."""
        if where == "x_axis":
            # found as the write path finds a node's properties: by a Browse, translated only when that fails
            # (asked by TranslateBrowsePaths alone, a server without that service, Nano or Micro, stated none)
            try:
                axis = (await Properties(node, translate_when_busy=True).read("0:XAxisDefinition"))[1]
            except PropertiesUnread as exc:
                raise RateError(f"its properties could not be read ({exc})") from None
            except ua.UaError as exc:
                raise RateError(
                    "it has no XAxisDefinition property (not a YArrayItemType); give the node id of "
                    f"a rate variable instead ({type(exc).__name__})"
                ) from None
            self.span_s[tag] = x_axis_span_s(axis)
            return None
        rate_node = client.get_node(await resolve(client, where))
        # a Bad status now (the device behind the server not up yet) is no reason never to read it: the
        # node is subscribed and states a rate once its value is Good; a node that does not exist raises
        dv = await rate_node.read_data_value(raise_on_bad_status=False)
        status = dv.StatusCode
        if status is not None and code_of(status) in _NO_NODE:
            raise ua.UaStatusCodeError(status.value)
        tags = self.nodes.setdefault(rate_node.nodeid, [])
        if tag not in tags:
            tags.append(tag)
        self.on_change(rate_node.nodeid, dv.Value.Value if dv.Value is not None else None, status)
        return rate_node

    def on_change(self, nodeid: ua.NodeId, value: Any, status: ua.StatusCode | None = None) -> bool:
        """A rate node's new value and its status; False when ``nodeid`` is not a rate node. Every waveform
        that names the node takes it (one rate node often serves a sensor's three axes)."""
        tags = self.nodes.get(nodeid)
        if not tags:
            return False
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = 0.0
        # finite and > 0 (NaN fails both comparisons), and Good: an Uncertain or Bad value (a last usable
        # value, the sensor behind the server away) is no statement of the rate the waveform has now
        good = status is None or status.is_good()
        for tag in tags:
            if good and 0 < v < float("inf"):
                self.hz[tag] = v
            else:  # no usable rate: readings go without one rather than with a wrong one
                self.hz.pop(tag, None)
        return True

    def rate_for(self, tag: str, value: Any) -> float | None:
        hz = self.hz.get(tag)
        if hz is not None:
            return hz
        span = self.span_s.get(tag)
        n = getattr(value, "size", 0)
        return (n - 1) / span if span and n > 1 else None
