"""A node's Properties (Part 3, 5.6.2 and Part 8: ``0:EnumStrings``, ``0:MaxStringLength``,
``0:XAxisDefinition``...), found for the write path's checks and a waveform's sample rate
(``sample_rate_from: x_axis``).

A Property is the target of a HasProperty reference (or of a subtype of it). One Browse of the node's forward
references, every page read, answers every property asked of a node; only a reference of type HasProperty is
taken: a vendor's other reference of the same name (a component ``EnumStrings`` listed before the property)
is not the node's states. A name listed only by a reference of a vendor's type (which may be a HasProperty
subtype) or of no stated type, and every name when the Browse fails, is asked by TranslateBrowsePathsToNodeIds
along a HasProperty path with its subtypes (the server judges them); a server without that service (or answering
two nodes) has the listed reference's type judged by its supertypes, browsed. A property the node does not have raises
BadNoMatch; one that could not be found out (the Browse failed or was released, and the translate too: Part 7's
Nano and Micro profiles leave that service out) raises ``PropertiesUnread``, for the caller to refuse what it
cannot check rather than take the property as absent; one such a Browse listed by a HasProperty reference before it
stopped is the node's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterable
from typing import Any

from asyncua import Node, ua

from devices.opcua.statuses import busy, code_name, code_of

# a node's property Browse: the pages in a row listing no reference not listed before (an endless continuation
# point's empty or repeated pages), and the references listed in all, before the rest is released and translated
BROWSE_IDLE_PAGES = 100
BROWSE_REFERENCES = 10_000

_HAS_PROPERTY = ua.NodeId(ua.Int32(ua.ObjectIds.HasProperty))
_HAS_SUBTYPE = ua.NodeId(ua.Int32(ua.ObjectIds.HasSubtype))
_HAS_TYPE_DEFINITION = ua.NodeId(ua.Int32(ua.ObjectIds.HasTypeDefinition))
_PROPERTY_TYPE = ua.NodeId(ua.Int32(ua.ObjectIds.PropertyType))
# a vendor reference type's supertypes browsed at most, to a standard one; and "no such property" (``_by_supertypes``)
_SUPERTYPES = 8
_NONE = ua.NodeId()

_Key = tuple[int, str]

# how long a Browse (BrowseNext) request whose caller was cancelled (a type read bounded by its timeout, a stop) is
# waited for, beside, for the continuation point its answer holds to be released (``paged``)
RELEASE_WAIT_S = 5.0
_releasing: set[asyncio.Task] = set()  # those waits, referenced until they end


async def paged(session: Any, request: Awaitable[list[ua.BrowseResult]]) -> list[ua.BrowseResult]:
    """The results of a Browse or BrowseNext ``request`` of ``session``. Cancelled while it waits for the answer, the
    request goes on beside, for at most ``RELEASE_WAIT_S``, and any continuation point its answer holds is released
    (a BrowseNext with ReleaseContinuationPoints): left held, it took one of the few a PLC keeps per session (Part 4,
    5.8.2; an S7-1200's are counted on one hand) for the session's life, and each later paged Browse of that session
    (a write target's properties) was answered BadNoContinuationPoints, the node's writes refused for minutes."""
    task = asyncio.ensure_future(request)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        waited = asyncio.get_running_loop().create_task(_release_when_answered(session, task))
        _releasing.add(waited)
        waited.add_done_callback(_releasing.discard)
        raise


async def _release_when_answered(session: Any, request: asyncio.Future) -> None:
    """Release the continuation points of ``request``'s answer, once it comes (``paged``)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(RELEASE_WAIT_S):
            await release_points(session, await request)
    if not request.done():
        request.cancel()


async def release_points(session: Any, results: list[ua.BrowseResult]) -> None:
    """Free the continuation points ``results`` hold (a BrowseNext with ReleaseContinuationPoints: no page asked);
    a failure to is not raised (the point is freed by the session's end, or its own timeout on the server), nor a
    release left unanswered (a TimeoutError: it failed the Browse whose pages were all read)."""
    points = [r.ContinuationPoint for r in results if r.ContinuationPoint]
    if points:
        more = ua.BrowseNextParameters()
        more.ReleaseContinuationPoints = True
        more.ContinuationPoints = points
        with contextlib.suppress(ua.UaError, TimeoutError):
            await session.browse_next(more)


async def next_page(session: Any, point: bytes) -> list[ua.BrowseResult]:
    """The next page of a Browse whose answer held the continuation point ``point`` (a BrowseNext not releasing
    it: asyncua's default is to), by ``paged``."""
    more = ua.BrowseNextParameters()
    more.ReleaseContinuationPoints = False
    more.ContinuationPoints = [point]
    return await paged(session, session.browse_next(more))


class PropertiesUnread(Exception):
    """Whether the node has a property, or what it states, could not be found out; the message says why. Not a
    ``ua.UaError``: callers taking a missing property as "not stated" must not take this one so. ``released``: its
    Browse was released at the page bound (thousands of requests to find that out again); ``status``: the Bad
    status the server answered, when one did (a busy server's is the caller's to retry); ``until``: what the
    server must do for it to be found out."""

    def __init__(
        self,
        msg: str,
        released: bool = False,
        status: int | None = None,
        until: str = "the server lists them (its Browse of the node) or answers TranslateBrowsePathsToNodeIds",
        ambiguous: bool = False,
    ) -> None:
        super().__init__(msg)
        self.released = released
        self.status = None if status is None else code_of(status)  # its code (info bits dropped)
        self.until = until
        self.ambiguous = ambiguous  # the server answered two nodes for it


# what a property the node has, or one of its attributes, whose value the server does not give needs
UNTIL_READ = "the server lets this session read them (the access rights of the agent's user)"


class Properties:
    """A node's Properties by BrowseName (``get("0:EnumStrings")``), one Browse for them all."""

    def __init__(self, node: Node, translate_when_busy: bool = False) -> None:
        self.node = node
        # a Browse of the node answered busy: its properties are asked of the translate (a waveform's rate), else
        # not now (``PropertiesUnread`` with that status: the write path's, retried)
        self.translate_when_busy = translate_when_busy
        self._props: dict[_Key, ua.NodeId] | None = None  # HasProperty targets; None: not browsed, or failed
        # names listed only by references that may be of a HasProperty subtype: (their type, their target) each
        self._unsure: dict[_Key, list[tuple[ua.NodeId | None, ua.NodeId]]] = {}
        self._browse_failed: str | None = None  # why the Browse gave no answer, once asked
        self._browse_status: int | None = None  # ... the Bad status it answered, when it did
        self._follows: bool | None = None  # whether the translate follows reference subtypes; None: not asked
        self._released = False  # the Browse was released at its bound of pages or references
        # names of two properties or more, different nodes: why (the Browse listed two HasProperty targets, or a
        # translate answered another node beside the HasProperty one)
        self._twice: dict[_Key, str] = {}
        # names of a HasProperty target listed by references of a vendor's type or none too, to other nodes
        self._beside: dict[_Key, list[tuple[ua.NodeId | None, ua.NodeId]]] = {}
        # the HasProperty targets a Browse listed before it failed or was released (at 10,000 references)
        self._listed: dict[_Key, ua.NodeId] = {}

    async def get(self, prop: str) -> Node:
        if self._props is None and self._browse_failed is None:
            try:
                self._props = await self._browse()
            except ua.UaError as e:
                self._browse_failed, self._browse_status = _why(e), getattr(e, "code", None)
        name = ua.QualifiedName.from_string(prop)
        key = (name.NamespaceIndex, name.Name)
        if key in self._twice:
            # a node's properties have unique names (Part 3, 5.6.3): the first was taken, 10 states where the node
            # has 3, and 7 written; which one is the node's cannot be told
            raise PropertiesUnread(
                f"{prop}: {self._twice[key]}, and which one states its values cannot be told",
                until="the server lists one",
            )
        if busy(self._browse_status) and not self.translate_when_busy:
            # not now, and not asked of the translate: one ignoring IncludeSubtypes answers BadNoMatch for the
            # EnumStrings on a vendor's HasProperty subtype, or the HasProperty one alone beside it, which the Browse
            # tells: 7 was written to a three-state node, its type kept
            raise PropertiesUnread(
                f"{prop}: its Browse {self._browse_failed}",
                status=self._browse_status,
                until="the server answers its Browse",
            )
        if self._props is not None:
            if (found := self._props.get(key)) is not None:
                return await self._checked(prop, key, found, self._beside.get(key, ()))
            if key not in self._unsure:
                raise ua.UaStatusCodeError(ua.StatusCodes.BadNoMatch)
        elif (
            self._browse_status is not None
            and not self.translate_when_busy
            and not await self._subtypes_followed()
        ):
            # the Browse answered Bad (BadNoContinuationPoints) and the translate ignores IncludeSubtypes: its
            # BadNoMatch, or the HasProperty one alone, hides an EnumStrings on a vendor's HasProperty subtype (7 was
            # written to a three-state node, its type kept)
            raise PropertiesUnread(
                f"{prop}: its Browse {self._browse_failed}, and TranslateBrowsePathsToNodeIds does not follow "
                "reference subtypes (a property of the Server object asked along HierarchicalReferences answered "
                "none), so a property on a vendor's HasProperty subtype cannot be told",
                status=self._browse_status,
                until="the server answers its Browse",
            )
        try:
            return await self._translate(prop)
        except ua.UaStatusCodeError:
            # BadNoMatch from a server whose translate ignores IncludeSubtypes: a vendor's HasProperty subtype
            # listed by the Browse was taken as no property, and 7 went to a three-state node
            if self._props is not None and (found := await self._by_supertypes(key)) not in (None, _NONE):
                assert found is not None
                return Node(self.node.session, found)
            raise
        except PropertiesUnread as e:
            if self._props is None and (found := self._listed.get(key)) is not None:
                # a HasProperty the Browse listed before it was released (10,000 references) or failed, and no
                # translate (Nano, Micro) to ask: the node's (its properties have unique names, Part 3, 5.6.3);
                # it was discarded, and every write refused. Not when the translate answered two nodes, or busy
                if e.ambiguous or busy(e.status):
                    raise
                return await self._checked(prop, key, found, self._unsure.get(key, ()))
            # no translate (Nano, Micro), or two targets: the listed references' own types decide, when their
            # supertypes can be browsed to a standard one (a vendor's HasProperty subtype was refused)
            if self._props is None or (found := await self._by_supertypes(key)) is None:
                raise  # (a Browse that failed or was released listed only some of the references)
            if found is _NONE:
                raise ua.UaStatusCodeError(ua.StatusCodes.BadNoMatch) from None
            return Node(self.node.session, found)

    async def _checked(
        self, prop: str, key: _Key, found: ua.NodeId, beside: Iterable[tuple[ua.NodeId | None, ua.NodeId]]
    ) -> Node:
        """The HasProperty target ``found`` of ``prop``, unless a reference of a vendor's type (or none) listing the
        name ``beside`` it names a property too (``_beside_property``: two, refused)."""
        for kind, target in beside:
            if target != found and (twice := await self._beside_property(prop, kind, found, target)):
                # a second property of the name on a vendor's HasProperty subtype: the first was taken
                self._twice[key] = twice
                return await self.get(prop)
        return Node(self.node.session, found)

    async def _by_supertypes(self, key: _Key) -> ua.NodeId | None:
        """The one target of the references listing ``key`` whose type is HasProperty or a subtype of it, found by
        browsing each type's supertypes (HasSubtype, inverse) to a standard one; ``_NONE`` when none is; None when
        that cannot be told (a type not stated or not browsed to a standard one, two such targets)."""
        hits = []
        for kind, target in self._unsure.get(key, ()):
            if (is_property := await self._is_property(kind, f"{key[0]}:{key[1]}")) is None:
                return None
            if is_property:
                hits.append(target)
        hits = list(dict.fromkeys(hits))
        return None if len(hits) > 1 else hits[0] if hits else _NONE

    async def _beside_property(
        self, prop: str, kind: ua.NodeId | None, found: ua.NodeId, target: ua.NodeId
    ) -> str | None:
        """Whether a reference of vendor type ``kind`` (or none) listing ``prop`` (to ``target``) beside the
        HasProperty one to ``found`` names a property too (then why, for the refusal): by its supertypes, else by
        the translate (following subtypes) answering another node too, else by ``target``'s type definition being
        PropertyType (a translate that ignores subtypes, or cannot follow a type the server does not expose,
        answers the HasProperty one alone: 7 went by its ten states where the vendor's property named three);
        None when none says so (the HasProperty one is the node's, as before). A Bad answer to the supertypes'
        Browse (BadNodeIdUnknown: a vendor type node not exposed) tells nothing, and the translate decides (every
        write of the node was refused, the valid 2 too); ``PropertiesUnread`` when either answers busy, or when the
        translate cannot tell either."""
        try:
            is_property = await self._is_property(kind, prop)
        except PropertiesUnread as e:
            if busy(e.status):
                raise  # not now: the write is retried
            unread: PropertiesUnread | None = e
            is_property = None
        else:
            unread = None
        if is_property is not None:
            return (
                "the node lists two or more properties of that name, different nodes" if is_property else None
            )
        # its supertypes not given: 10 states were taken from the HasProperty one where the vendor's had 3
        try:
            result = (await self.node.session.translate_browsepaths_to_nodeids([self._path(prop)]))[0]
            status, why = result.StatusCode.value, f"answered {code_name(result.StatusCode)}"
        except ua.UaError as e:
            result, status, why = None, getattr(e, "code", None), _why(e)
        if result is None or not result.StatusCode.is_good():
            if unread is None and not busy(status):
                return await self._typed_property(prop, target)  # else the HasProperty one's, as before
            # busy: retried (the HasProperty one's states were taken, and 7 written)
            raise PropertiesUnread(
                f"{unread or f'{prop}: the node lists it by a HasProperty reference and a vendor one'}, and "
                f"TranslateBrowsePathsToNodeIds {why}",
                status=status,
                until="the server answers that Browse or TranslateBrowsePathsToNodeIds",
            )
        if any(t.TargetId != found for t in result.Targets):
            return (
                "the node lists a HasProperty reference of that name and another whose type cannot be told "
                "(a vendor's), and TranslateBrowsePathsToNodeIds answered both targets"
            )
        return await self._typed_property(prop, target)

    async def _typed_property(self, prop: str, target: ua.NodeId) -> str | None:
        """Why ``target``, listed by a reference whose type cannot be told beside a HasProperty one of the name, is a
        second property: its type definition is PropertyType (every Property's, Part 3 5.6.2); None when it is
        another (a component's table). ``PropertiesUnread`` when that Browse gives no answer (busy: retried; another
        Bad status: nothing tells, refused; taken as "another", 7 went by the HasProperty one's ten states)."""
        result = await self._browse_one(target, ua.BrowseDirection.Forward, _HAS_TYPE_DEFINITION)
        if result is None or not result.StatusCode.is_good():
            answered = (
                f"answered {code_name(result.StatusCode)}" if result is not None else "gave no single result"
            )
            raise PropertiesUnread(
                f"{prop}: the node lists a HasProperty reference of that name and another, of a type that cannot "
                f"be told (a vendor's), and the Browse of {target.to_string()}'s type definition {answered}",
                status=result.StatusCode.value if result is not None else None,
                until="the server answers that Browse",
            )
        if any(r.IsForward and r.NodeId == _PROPERTY_TYPE for r in result.References):
            return (
                "the node lists a HasProperty reference of that name and another, of a type that cannot be told "
                "(a vendor's), to a node of PropertyType"
            )
        return None

    async def _browse_one(
        self, node_id: ua.NodeId, direction: ua.BrowseDirection, kind: ua.NodeId
    ) -> ua.BrowseResult | None:
        """The one result of a Browse of ``node_id``'s references of type ``kind`` (a ServiceFault as its status);
        None when the server gave no single result."""
        session = self.node.session
        try:
            results = await paged(session, session.browse(browse_of(node_id, direction, kind)))
        except ua.UaStatusCodeError as e:
            return ua.BrowseResult(StatusCode=ua.StatusCode(e.code))
        except ua.UaError:
            return None
        # a type's few references: the first page is read, any more not asked
        await release_points(session, results)
        return results[0] if len(results) == 1 else None

    async def _is_property(self, kind: ua.NodeId | None, prop: str) -> bool | None:
        """Whether reference type ``kind`` (listing ``prop``) is HasProperty or a subtype of it, by its supertypes
        browsed (HasSubtype, inverse) to a standard type; None when that cannot be told (not stated, not browsed to
        a standard one). ``PropertiesUnread`` with the status when that Browse answers a Bad one (busy: the
        caller's to retry; it was taken as "cannot be told", the HasProperty one beside it taken, and 7 written)."""
        if kind is None or kind.is_null():
            return None
        for _ in range(_SUPERTYPES):
            if kind.NamespaceIndex == 0:
                break
            if (result := await self._browse_one(kind, ua.BrowseDirection.Inverse, _HAS_SUBTYPE)) is None:
                return None
            if not result.StatusCode.is_good():
                raise PropertiesUnread(
                    f"{prop}: the node lists it by a reference of a vendor's type, and the Browse of reference "
                    f"type {kind.to_string()}'s supertypes answered {code_name(result.StatusCode)}",
                    status=result.StatusCode.value,
                    until="the server answers that Browse",
                )
            # only the inverse HasSubtype names the supertype: a server ignoring the filter lists an Organizes
            # from a standard folder too, taken as the supertype (no property, and 7 written)
            refs = [r for r in result.References if r.ReferenceTypeId == _HAS_SUBTYPE and not r.IsForward]
            if len(refs) != 1:
                return None
            kind = refs[0].NodeId
        return kind == _HAS_PROPERTY if kind.NamespaceIndex == 0 else None

    async def read(self, prop: str) -> tuple[Node, Any]:
        """(the node's property ``prop``, its value). BadNoMatch when the node has none; ``PropertiesUnread`` when
        it has one whose value the server does not give (BadNotReadable, BadUserAccessDenied): taken as absent,
        nothing was checked (7 went to a three-state node whose EnumStrings this session may not read)."""
        found = await self.get(prop)
        try:
            return found, await found.read_value()
        except (ua.UaError, TypeError, ValueError) as e:
            raise PropertiesUnread(
                f"{prop}: the node has it, and its Read {_why(e)}",
                status=getattr(e, "code", None),
                until=UNTIL_READ,
            ) from None

    async def _subtypes_followed(self) -> bool:
        """Whether the server's translate follows reference subtypes (IncludeSubtypes): the Server object's
        NamespaceArray (a HasProperty) asked along HierarchicalReferences, once a node. True when it cannot be
        told (no translate: the property's own translate then fails and says so)."""
        if self._follows is None:
            path = ua.BrowsePath()
            path.StartingNode = ua.NodeId(ua.Int32(ua.ObjectIds.Server))
            path.RelativePath = ua.RelativePath.from_string("/0:NamespaceArray")  # HierarchicalReferences
            try:
                result = (await self.node.session.translate_browsepaths_to_nodeids([path]))[0]
            except ua.UaError:
                self._follows = True
            else:
                status = result.StatusCode
                self._follows = not (
                    code_of(status) == ua.StatusCodes.BadNoMatch or (status.is_good() and not result.Targets)
                )
        return self._follows

    def _path(self, prop: str) -> ua.BrowsePath:
        path = ua.BrowsePath()
        path.StartingNode = self.node.nodeid
        path.RelativePath = ua.RelativePath.from_string(f"<HasProperty>{prop}")  # and its subtypes
        return path

    async def _translate(self, prop: str) -> Node:
        """``prop`` along a HasProperty reference (or a subtype) of the node, asked of the server."""
        path = self._path(prop)
        browsed = (
            f"its Browse {self._browse_failed}"
            if self._browse_failed
            else "its Browse listed it by a reference of a vendor's type or none"
        )
        try:
            result = (await self.node.session.translate_browsepaths_to_nodeids([path]))[0]
        except ua.UaError as e:
            raise PropertiesUnread(
                f"{prop}: {browsed}, and TranslateBrowsePathsToNodeIds {_why(e)}",
                self._released,
                self._busy_or(getattr(e, "code", None)),
            ) from None
        status = result.StatusCode
        targets = list(dict.fromkeys(t.TargetId for t in result.Targets))
        if status.is_good() and len(targets) > 1:
            # a server whose translate goes by the name alone (a component EnumStrings of 10 states beside the
            # property of 3): the first target was taken, and 7 written
            raise PropertiesUnread(
                f"{prop}: {browsed}, and TranslateBrowsePathsToNodeIds answered {len(targets)} nodes for it, "
                "which one is the node's property cannot be told",
                until="the server answers one",
                ambiguous=True,
            )
        if status.is_good() and targets:
            return Node(self.node.session, targets[0])
        if status.is_good() or code_of(status) == ua.StatusCodes.BadNoMatch:
            raise ua.UaStatusCodeError(ua.StatusCodes.BadNoMatch)
        raise PropertiesUnread(
            f"{prop}: {browsed}, and TranslateBrowsePathsToNodeIds answered {code_name(status)}",
            self._released,
            self._busy_or(status.value),
        )

    def _busy_or(self, status: int | None) -> int | None:
        """The status a property not found out is raised with: the Browse's when it answered busy and the
        translate ``status`` is not (a Nano server briefly busy: the write was refused for good, not retried)."""
        return self._browse_status if not busy(status) and busy(self._browse_status) else status

    async def _browse(self) -> dict[_Key, ua.NodeId] | None:
        """The targets of the node's forward HasProperty references by BrowseName, every page read (names of
        references of a vendor's type or none stated into ``_unsure``); None, the reason in ``_browse_failed``,
        when a result is not Good. asyncua's ``get_references`` checks neither a node's result nor a
        BrowseNext's: a server answering BadNoContinuationPoints (its continuation points used up),
        BadReferenceTypeIdInvalid or, for a later page, BadContinuationPointInvalid gave no or part of the
        references, and a property it did not list went unchecked (7 written to an enumeration of 0..2). All
        reference types (a null ReferenceTypeId, Part 4 5.8.2): a server that does not follow IncludeSubtypes
        still lists a HasProperty. Released, None, after ``BROWSE_IDLE_PAGES`` pages in a row listing nothing
        new or ``BROWSE_REFERENCES`` references: a server handing a continuation point for ever held the write
        at its type lookup while its BrowseNext requests ran back to back. Not after a number of pages: a node
        of many references paged small was then translated, and on a server without that service (Nano,
        Micro) nothing was checked."""
        session = self.node.session
        results = await paged(
            session, session.browse(browse_of(self.node.nodeid, ua.BrowseDirection.Forward, _NONE))
        )
        props: dict[_Key, ua.NodeId] = {}
        listed: set[_Key] = set()
        idle = 0  # pages in a row listing nothing new
        while True:
            if len(results) != 1 or not results[0].StatusCode.is_good():
                status = code_name(results[0].StatusCode) if len(results) == 1 else f"{len(results)} results"
                self._browse_failed = f"answered {status}"
                self._browse_status = results[0].StatusCode.value if len(results) == 1 else None
                self._listed = props
                return None
            before = len(listed)
            for r in results[0].References:
                key = (r.BrowseName.NamespaceIndex, r.BrowseName.Name)
                listed.add(key)
                kind = r.ReferenceTypeId
                if kind == _HAS_PROPERTY:
                    if props.setdefault(key, r.NodeId) != r.NodeId:
                        self._twice[key] = (
                            "the node lists two or more properties of that name, different nodes"
                        )
                elif kind is None or kind.is_null() or kind.NamespaceIndex != 0:
                    # a vendor's reference type (a HasProperty subtype, or not), or one the server did not
                    # state: the translate along HasProperty decides, when this name is asked, else the type's
                    # supertypes; a standard type other than HasProperty (HasComponent, Organizes...) names none
                    self._unsure.setdefault(key, []).append((kind, r.NodeId))
            if not results[0].ContinuationPoint:
                for key in props.keys() & self._unsure.keys():
                    self._beside[key] = self._unsure.pop(key)
                return props
            idle = 0 if len(listed) > before else idle + 1
            if idle < BROWSE_IDLE_PAGES and len(listed) < BROWSE_REFERENCES:
                results = await next_page(session, results[0].ContinuationPoint)
                continue
            self._released = True
            self._browse_failed = (
                f"was released after listing {len(listed)} references"
                if len(listed) >= BROWSE_REFERENCES
                else f"was released after {BROWSE_IDLE_PAGES} pages in a row listing nothing new"
            )
            await release_points(session, results)  # freed, refused or unanswered: nothing more to ask
            self._listed = props
            return None


def browse_of(node_id: ua.NodeId, direction: ua.BrowseDirection, kind: ua.NodeId) -> ua.BrowseParameters:
    """A Browse of ``node_id``'s references of type ``kind`` (null: all) and its subtypes, their BrowseName and
    type, in the current view: a null Timestamp (asyncua's default is now, which an OPC Foundation .NET server
    answers BadViewIdUnknown for the whole Browse: every target translated, a folder browse failed whole). Every
    Browse of ours is made here."""
    desc = ua.BrowseDescription()
    desc.NodeId = node_id
    desc.BrowseDirection = direction
    desc.ReferenceTypeId = kind
    desc.ResultMask = (
        ua.BrowseResultMask.BrowseName | ua.BrowseResultMask.ReferenceTypeId | ua.BrowseResultMask.IsForward
    )
    params = ua.BrowseParameters()
    params.View.Timestamp = ua.get_win_epoch()
    params.NodesToBrowse.append(desc)
    return params


def _why(e: Exception) -> str:
    if isinstance(e, ua.UaStatusCodeError):
        return f"answered {code_name(e.code)}"
    return f"failed ({type(e).__name__}: {e})" if str(e) else f"failed ({type(e).__name__})"
