"""The namespace URIs each OPC UA source's server had by index, kept in the agent's data folder.

A node id written ``ns=2;s=Speed`` means the namespace the server had at index 2 when the config was written.
A PLC download or firmware update may register the server's namespaces in another order: a running source
follows the URI (``devices.opcua.client._repin``), but an agent started after the change took the new order
as it found it and read, and wrote, the other namespace's node of that id without a word. Kept here, the
first start's URIs are compared at each later start: an index whose URI changed is refused, named."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import sys
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from edge_agent.files import atomic_write_json, read_json_state, why_unread
from protocols.redact import escaped, mask_credentials

log = logging.getLogger(__name__)

PINS_FILE = "opcua-namespaces.json"  # in the agent's data folder
MAX_PINNED = 1000  # indexes kept per source (a server's own namespaces: a few; a gateway's: tens)
MAX_URI_CHARS = 2000  # a longer URI is not kept: its index is taken as it is written
# a file not read for a cause that passes (too many open files, an I/O error): the agent's connect is refused and
# tried again with its backoff; a command beside it (no backoff) tries CLI_TRIES times, CLI_PAUSE_S apart
PASSING = frozenset({errno.EMFILE, errno.ENFILE, errno.EIO, errno.EAGAIN, errno.EINTR, errno.ENOMEM})
CLI_TRIES, CLI_PAUSE_S = 3, 0.2
LOCK_WAIT_S = 1.0  # the longest a write waits for another process's write of the file (``_held``)


class NamespacePinFile:
    """One source's entry in ``<data_dir>/PINS_FILE``: ``{"sources": {name: {"endpoint": ..., "namespaces":
    {"2": uri}}}}``. Kept for the source's endpoint and its server's ApplicationUri (``server``): a source pointed
    at another endpoint of another server pins afresh; the same endpoint, or the same server, compares; a source
    without an entry for its server takes another source's for its endpoint (``_sibling``), as its own. Entries of
    sources no longer configured (``configured``) are dropped at each save, so the file stays the config's size."""

    def __init__(
        self,
        path: Path,
        source: str,
        endpoint: str,
        configured: frozenset[str],
        keep: bool = True,
        tries: int = 1,
    ) -> None:
        # kept without the password an endpoint may carry (opc.tcp://user:password@plc): the file is no secret
        self.path, self.source, self.configured, self.keep, self.tries = path, source, configured, keep, tries
        self.endpoint = mask_credentials(endpoint)
        # the server's ApplicationUri, once a connect read it: an entry kept with it is this server's whatever
        # endpoint names it (localhost for 127.0.0.1, a DNS name, a relay); None: by the endpoint alone
        self.server: str | None = None
        self.accept = (
            f"run `edge-agent namespaces <config> --accept {source}` (or, the agent stopped, remove {path}) and "
            "restart the agent: it pins the server's namespaces as it finds them at that start"
        )

    def _read(self, saving: bool = False) -> dict:
        """The file's document; ``{}`` when there is none or it is not read. ``saving``: a failure to read a file
        that may be read later (an I/O error, too many open files) is raised: written over, every other
        source's pins were dropped, each unprotected at its next start. A file that can never be read (damaged,
        too large, a folder or a pipe in its place) is written over."""
        try:
            doc = read_json_state(self.path)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            if saving and isinstance(e, OSError) and e.errno not in (errno.EFBIG, errno.EINVAL):
                raise
            log.warning(
                "%s is not read (%s): the OPC UA sources pin their namespaces afresh",
                self.path,
                why_unread(e),
            )
            return {}
        return doc if isinstance(doc, dict) and isinstance(doc.get("sources"), dict) else {}

    def load(self, strict: bool = False) -> dict[int, str] | None:
        """The URIs kept for this source's server; None when none are. ``strict`` (a source's connect, a command
        checking with them): a file that may be read later (``PASSING``: an I/O error, too many open files) raises
        ``OSError`` after ``tries`` reads: taken as none kept, the start after a reorder pinned the new order and
        read the other namespace's node of each index; another failure (its access) is taken as none kept."""
        for attempt in range(1, self.tries + 1):
            try:
                doc = self._read(saving=strict)
                break
            except OSError as e:
                if e.errno not in PASSING:
                    log.warning(
                        "%s is not read (%s): its namespaces are pinned afresh", self.path, why_unread(e)
                    )
                    return None
                if attempt == self.tries:
                    raise
                time.sleep(CLI_PAUSE_S)
        sources = doc.get("sources", {})
        entry = sources.get(self.source)
        if not self._mine(entry):
            # none of its own for this server (a source new to the config, or pointed at another server): another
            # source's kept for this endpoint say what its ns= indexes meant; by this array's order, a new source
            # on a server whose namespaces another source follows across a reorder read the moved index's other
            # node, GOOD
            entry = self._sibling(sources)
            if entry is None:
                return None
            pins = _indexes(entry["namespaces"])
            try:  # its own from now on: kept when that source leaves the config (not ``keep``: not written)
                self.save(pins)
            except OSError as e:
                log.warning(
                    "%s: the namespaces kept for this server not kept for %s (%s)", self.path, self.source, e
                )
            return pins
        kept = entry.get("namespaces")
        if not isinstance(kept, dict):
            return None
        if self.keep and "server" not in entry and "server" in (named := self._named()):
            # an older agent's entry, by its endpoint alone: the server named in it from now on
            try:
                self._write({**entry, **named})
            except OSError as e:
                log.warning("%s: the server's name not added (%s); tried at the next start", self.path, e)
        return _indexes(kept)

    def save(self, pins: dict[int, str] | None) -> None:
        """Keep ``pins`` for this source (None: keep none, so that the next start pins afresh); not ``keep``: a
        command beside the agent (``edge-agent tags``) compares with the pins but leaves the file to the agent."""
        if pins is None:
            self._write(None)
            return
        kept = {str(i): uri for i, uri in sorted(pins.items())[:MAX_PINNED] if len(uri) <= MAX_URI_CHARS}
        self._write({**self._named(), "namespaces": kept})

    def forget(self) -> None:
        """Keep no pins for this source, so that the next start pins the server's order as it finds it
        (``--accept``), and say so in its entry (``forgotten``)."""
        self._write({**self._named(), "accepted": True})

    def forgotten(self) -> bool:
        """Whether this source's pins were forgotten (``forget``) and not pinned since: a source following the pins
        an earlier agent of the process followed keeps them where none are kept (``OpcUaSource._keep_followed``),
        and a config reload between the accept and the restart it asks for kept the old order again. ``OSError``
        when the file may be read later but not now."""
        entry = self._read(saving=True).get("sources", {}).get(self.source)
        return self._mine(entry) and entry.get("accepted") is True

    def kept_elsewhere(self) -> bool:
        """Whether this source's entry keeps pins with a server's ApplicationUri under another endpoint: a connect
        that could not read its server's cannot tell whether they are its own (by its endpoint alone, it pinned
        afresh and dropped them)."""
        entry = self._read().get("sources", {}).get(self.source)
        return (
            isinstance(entry, dict)
            and isinstance(entry.get("server"), str)
            and entry.get("endpoint") != self.endpoint
            and isinstance(entry.get("namespaces"), dict)
        )

    def reordered_elsewhere(self, array: list[str | None], used: Collection[int]) -> str | None:
        """Where another endpoint's entry keeps the namespaces of ``array`` (the server's now) in another order,
        said for a refusal (None: none does). A source with no entry for its server (one new to the config, no
        entry for its endpoint) naming a server pinned under another endpoint (``localhost`` for ``127.0.0.1``)
        whose ApplicationUri is unread or shared pinned afresh in a reordered array's order and read the moved
        index's other node, GOOD. Only for a moved index the config uses (``used``); not after ``--accept`` of this
        source, nor for an entry of another ApplicationUri than the server's."""
        sources = self._read().get("sources", {})
        own = sources.get(self.source)
        if self._mine(own) and own.get("accepted") is True:
            return None
        here = {uri: i for i, uri in enumerate(array) if i and uri is not None}
        for name, e in sources.items():
            if (
                not isinstance(e, dict)
                or not isinstance(e.get("namespaces"), dict)
                or e.get("endpoint") == self.endpoint
            ):
                continue
            if self.server is not None and isinstance(e.get("server"), str) and e["server"] != self.server:
                continue
            kept = _indexes(e["namespaces"])
            moved = [(i, uri) for i, uri in sorted(kept.items()) if i in used and here.get(uri, i) != i]
            if moved and all(uri in here for uri in kept.values()):
                i, uri = moved[0]
                return (
                    f"the server's namespaces are those source {name!r} keeps for {e.get('endpoint')}, in "
                    f"another order ({uri} was at {i}, now at {here[uri]}): this may be that server, named by "
                    "another endpoint, after a download reordered them, so this source's ns= indexes cannot be "
                    f"checked. Write its node ids as nsu=<uri>;..., or, should this be another server, run "
                    f"`edge-agent namespaces <config> --accept {self.source}` and restart the agent (a removed "
                    f"file does not do: {name!r} pins its namespaces again)"
                )
        return None

    def _sibling(self, sources: dict) -> dict | None:
        """The entry another source keeps for this source's endpoint, pins and all: a configured source's first, in
        the file's order. Not by the ApplicationUri alone: PLCs of one make often keep its default (every
        S7-1500 named PLC_1, open62541's, asyncua's own), and a new source on another such PLC took the first one's
        order, its ns= indexes refused as moved by a download, the text pointing at the other PLC's namespace."""
        found = [
            (name, e)
            for name, e in sources.items()
            if name != self.source
            and isinstance(e, dict)
            and e.get("endpoint") == self.endpoint
            and isinstance(e.get("namespaces"), dict)
        ]
        found.sort(key=lambda ne: ne[0] not in self.configured)  # stable: the file's order within each
        return found[0][1] if found else None

    def _mine(self, entry: Any) -> bool:
        """Whether ``entry`` was kept for this source's server: its endpoint, or its ApplicationUri (``server``)."""
        if not isinstance(entry, dict):
            return False
        return entry.get("endpoint") == self.endpoint or (
            self.server is not None and entry.get("server") == self.server
        )

    def _named(self) -> dict[str, str]:
        """What an entry of this source's names its server by."""
        if self.server is None or len(self.server) > MAX_URI_CHARS:
            return {"endpoint": self.endpoint}
        return {"endpoint": self.endpoint, "server": self.server}

    def _write(self, entry: dict | None) -> None:
        if not self.keep:
            return
        with _held(self.path):
            sources = {
                n: e for n, e in self._read(saving=True).get("sources", {}).items() if n in self.configured
            }
            sources.pop(self.source, None)
            if entry is not None:
                sources[self.source] = entry
            atomic_write_json(self.path, {"sources": sources})


def _indexes(kept: dict) -> dict[int, str]:
    """An entry's ``namespaces`` as index -> URI (what is no index or no URI left out)."""
    return {int(i): uri for i, uri in kept.items() if i.isascii() and i.isdigit() and isinstance(uri, str)}


@contextlib.contextmanager
def _held(path: Path) -> Iterator[None]:
    """The file's read and write as one, against ``edge-agent namespaces --accept`` run beside the agent: an
    accept written between the agent's read and its write (its source's pins kept at a connect) was written over,
    the restart refusing as before the accept. ``flock`` on a lock file beside it, opened for reading (one made by
    the command run as another user is still taken), waited for ``LOCK_WAIT_S`` at most (the other side holds it
    for one write; an OPC UA source reads and writes the file in a worker thread, so its event loop never waits
    with it): then, or where the lock file cannot be had (a folder without flock), written as before, unlocked.
    Within this process the writes are one at a time (``_IN_PROCESS``): its sources save from worker threads (their
    connects at once, after a reload), and where flock is not had one's read-modify-write dropped another's entry."""
    with _IN_PROCESS, _flocked(path):
        yield


# the process's own writes of the file, one at a time (``_held``)
_IN_PROCESS = threading.Lock()


@contextlib.contextmanager
def _flocked(path: Path) -> Iterator[None]:
    """``flock`` on the lock file beside ``path`` while the body runs, as ``_held`` says."""
    try:
        fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError:  # the write itself says why, if it fails too
        yield
        return
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    log.warning(
                        "%s: another process holds it past %g s; written without it", path, LOCK_WAIT_S
                    )
                    break
                time.sleep(0.01)
            except OSError:  # a file system without flock
                break
        yield
    finally:
        os.close(fd)


def pin_file(data_dir: Path, name: str, settings: dict, keep: bool = True) -> NamespacePinFile:
    """The entry of the OPC UA source ``name`` (``settings``: every source's settings by name). Not ``keep``: a
    command beside the agent, which never writes the file and, having no backoff to try again with, reads it
    ``CLI_TRIES`` times before it says it could not."""
    opcua = frozenset(n for n, s in settings.items() if s.type == "opcua")
    return NamespacePinFile(
        data_dir / PINS_FILE, name, settings[name].endpoint, opcua, keep, 1 if keep else CLI_TRIES
    )


def pin_namespaces(data_dir: Path, sources: dict, settings: dict, keep: bool = True) -> None:
    """Give each OPC UA source among ``sources`` (name -> source; ``settings``: name -> its settings) its entry
    (``pin_file``)."""
    for name, s in settings.items():
        if s.type == "opcua":
            sources[name].namespace_pins = pin_file(data_dir, name, settings, keep)


class FollowedNamespaces:
    """What each OPC UA source's ``ns=`` indexes meant to the agents a process ran, kept across its config reloads
    (a fleet push, a rollback): an agent started on a config whose source has the same settings and write targets
    takes it on (``OpcUaSource.follow_namespaces``), so a namespace reorder an earlier agent followed is followed on
    (also back on the last good config after a trial that changed the source). A source changed in any way starts
    as at a start: its config may have been rewritten for the server's new order, so a moved index is refused."""

    KEPT = 4  # configs of a source remembered (the newest)

    def __init__(self) -> None:
        self._by_source: dict[str, list[tuple[Any, list, dict[int, str], frozenset[int]]]] = {}

    @staticmethod
    def _targets(cfg) -> dict[str, list[tuple[str, str]]]:
        from edge_agent.actions import write_targets

        return {n: sorted((loc, nid) for loc, nid, _ in t) for n, t in write_targets(cfg).items()}

    def remember(self, cfg, sources: dict) -> None:
        """Keep what the sources of an agent that stopped (``cfg``: its config) followed."""
        targets = self._targets(cfg)
        for name, settings in cfg.sources.items():
            followed = getattr(sources.get(name), "namespaces_followed", None)
            if settings.type != "opcua" or followed is None:
                continue
            pinned, seen = followed()
            if not pinned:
                continue
            mine = targets.get(name, [])
            kept = [k for k in self._by_source.get(name, []) if (k[0], k[1]) != (settings, mine)]
            self._by_source[name] = [(settings, mine, pinned, seen), *kept][: self.KEPT]

    def hand_on(self, cfg, sources: dict) -> None:
        """Give each source of a new agent (``cfg``: its config) what an earlier one of the same settings and write
        targets followed."""
        targets = self._targets(cfg)
        for name, settings in cfg.sources.items():
            follow = getattr(sources.get(name), "follow_namespaces", None)
            if settings.type != "opcua" or follow is None:
                continue
            mine = targets.get(name, [])
            for kept_settings, kept_targets, pinned, seen in self._by_source.get(name, []):
                if kept_settings == settings and kept_targets == mine:
                    follow(pinned, seen)
                    break


def namespaces_main(args, load) -> int:
    """``edge-agent namespaces CONFIG [--accept SOURCE]``: the namespaces kept for each OPC UA source, or a
    source's forgotten so that the agent's next start pins the server's order as it finds it (a config whose
    ``ns=`` indexes were written for the server's new order)."""
    cfg = load(args.config)
    if cfg is None:
        return 1
    settings = {n: s for n, s in cfg.sources.items() if s.type == "opcua"}
    path = cfg.data_dir / PINS_FILE

    def pins(name: str) -> NamespacePinFile:
        return pin_file(cfg.data_dir, name, settings, keep=args.accept is not None)

    if args.accept is not None:
        if args.accept not in settings:
            print(
                f"{args.config}: no opcua source {args.accept!r} (it has {sorted(settings)})", file=sys.stderr
            )
            return 1
        try:
            pins(args.accept).forget()
        except OSError as e:
            print(f"{path}: cannot be written ({e.strerror or e}); nothing was forgotten", file=sys.stderr)
            return 1
        print(
            f"source {args.accept}: the namespaces kept for it are forgotten ({path}); restart the agent: it pins "
            "the server's namespaces as it finds them at that start, the config's ns= indexes taken for that "
            "order (right for a config rewritten for it; else write the nodes nsu=<uri>;...)"
        )
        return 0
    rc = 0
    for name in settings:
        store = pins(name)
        try:
            kept = store.load(strict=True)
        except OSError as e:  # shown as "none kept", the operator took the source for unprotected
            print(f"{name}: {path} could not be read ({why_unread(e)}); try again", file=sys.stderr)
            rc = 1
            continue
        shown = ", ".join(f"ns={i} {uri}" for i, uri in sorted(kept.items())) if kept else "none kept"
        # the URIs are the server's: a line feed or an ANSI escape in one forged a line or drove the terminal
        print(escaped(f"{name} ({store.endpoint}): {shown}"))
    return rc
