"""A slot's packages on disk: verified extractions and atomic current/previous pointers.

    <data_dir>/models/<slot>/
        <name>-<version>-<digest12>/     one verified, extracted package (open_package renames it
                                          into place only when every check passed)
        .rejected/<name>-...             an installed folder that failed its checks at a start
                                          (edited or corrupted on disk), set aside for a look
        .rolled-back/<name>-...           that installed folder was rolled back (it holds by whom: health,
                                          crash_loop, admin; empty: refused, or read as health), or
                                          refused, never what a start on a lost state.json serves (one
                                          the disk refused is written again with the next state.json);
                                          read-only once its rolled_back event was told (``told``)
        .rolled-back/<name>-....armed     an empty placeholder made while the disk had room (``arm``): the
                                          mark is made by renaming it, which needs no free space
        state.json                        {"current": dir, "previous": dir|null, "failed": {dir: reason},
                                           "probation": {"candidate": dir, "since": t} | null,
                                           "aside_probation": the probation of a candidate set aside (put_back)}

``state.json`` is replaced atomically (write a temporary file, fsync, rename, fsync the folder),
and a package becomes ``current`` only after it passed verification, loading and its golden test.
So after a crash at any point (kill -9 mid-swap included) the slot starts on the last package that
passed; a half-extracted folder is a ``.part`` temporary that nothing points to and is removed at
the next start.

A swapped-in package stays *under probation* (``probation`` set, ``previous`` kept) until its
health window passed (``end_probation``) or it was rolled back (``set_current`` of the previous).
Rule after a restart with a probation still open (``after_restart``): a restart is no verdict on the
candidate. After an orderly stop (``mark_stopped``: SIGTERM, a systemd restart for an OS update, a
config rollout) the slot resumes the candidate and watches a whole new health window; so after an
unclean end (kill -9, a power cut, the out-of-memory killer), unless it is the candidate's
``UNCLEAN_ENDS_TO_ROLL_BACK``-th inside one probation: a crash loop, which the candidate may be causing
(a model that crashes its runtime on live input), restores ``previous`` and marks the candidate failed. So
does a candidate already marked rolled back (``rolled_back``: the state.json of its rollback was not written, the
disk refused it or the agent ended between the mark and that write).
The probation also keeps the previous model's health figures at the swap (``baseline``), against which
a resumed window compares latency and NG rate.

Folders nothing points to any more are removed (``prune``) once a swap has its outcome (kept after
its health window, rolled back, refused; at once for a swap without a health window, such as a start on a
new local package) and at every start, so that the store holds at most the current package, the previous
one and a candidate. While the disk refuses a new ``state.json`` (full, read-only), the folders the file on
disk still names are kept too, since a restart before it is written starts from that file; they go at the
first prune after it is written (the slot prunes when its retry writes it).

An installed folder is checked again at every start (``verify``: signature and every file's size and
SHA-256, as at install; and its unsigned ``.package-digest`` against the folder's name, which the install took
from the verified manifest) before it serves; one that fails is set aside (``set_aside``) and the slot
installs again from its configured package.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from model_packager import OpenedPackage, PackageError, open_package, package_digest
from model_packager.durable import sync_folder
from model_packager.package import MAX_MANIFEST_BYTES, open_regular
from model_packager.text import printable

if TYPE_CHECKING:
    from model_packager import TrustedKeys  # brings cryptography: only the installing process needs it
    from model_packager.manifest import FileEntry


log = logging.getLogger(__name__)

_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
# state.json's list of the digests served with golden tolerances this agent refuses (``note_served_unchecked``)
SERVED_UNCHECKED = "served_unchecked"
MAX_SERVED_UNCHECKED = 16
DIGEST_FILE_MAX_BYTES = 200  # .package-digest: 64 hex digits and a newline; what is past this is not read
# state.json: a few folder names, a probation's health figures and the latest MAX_FAILED reasons of at most
# 500 characters each (~30 KB; ~150 KB were every reason's character JSON-escaped): what is larger is no state
# the store wrote
STATE_MAX_BYTES = 1024 * 1024


def _read_small(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; ``OSError`` saying why otherwise (``a named
    pipe, not a file``, ``larger than ... bytes``), never a wait on a pipe or a read of a device."""
    with open_regular(path) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes, the most it may hold")
    return data


NO_SPACE = "no_space"  # the code of an install refused because the disk is full: tried again later
# ends without an orderly stop inside one candidate's probation that roll it back (a crash loop): the
# first is resumed (a power cut says nothing of the model), the second is not
UNCLEAN_ENDS_TO_ROLL_BACK = 2
# state.json's ``failed`` (folder -> why), kept for a look: the latest this many (every version refused or
# rolled back in months of rollouts made state.json, rewritten and fsynced at each step, grow for good)
MAX_FAILED = 50
# folders set aside in ``.rejected`` (each a whole model): the latest this many, the oldest removed first
MAX_REJECTED = 3
# how a ``failed`` entry written by ``set_aside`` begins: a copy of the package that failed its checks at a start (a
# byte altered on disk, a load this machine refused), not a verdict on the package (the model manager installs it
# again from the fleet's desired state; read as the outcome of a deployment still pending, it was refused for good)
SET_ASIDE = "set aside at a start: "
# state.json's note of the probation ``set_aside`` ended with its candidate (the folder then current), which
# ``put_back`` restores with it
ASIDE_PROBATION = "aside_probation"
# empty files named by the installed folders rolled back (by the health watch, a crash loop, an admin's rollback)
# or refused: ``newest_installed`` passes them over (kept beside state.json, which a power cut can empty)
ROLLED_BACK = ".rolled-back"
_REPLACED = ".replaced-"  # an installed folder moved aside by an install of the same package (``install``)
# the start of the reason a start gives for a candidate its mark says was rolled back while state.json still names it
# (``after_restart``): the model manager holds that verdict for its deployment as it holds the health check's
UNRECORDED_ROLLBACK = "the candidate was rolled back before the restart"
# the suffix of a mark's placeholder (``arm``), made while the disk has room and renamed into the mark
ARMED = ".armed"
# what a rollback mark holds: who rolled the folder back (``mark_rolled_back``), so that a start that finds the mark
# with state.json still naming the candidate gives that rollback's own reason. An empty mark (one made before kinds
# were written) is read as the health check's
MARK_HEALTH, MARK_CRASH_LOOP, MARK_ADMIN = "health", "crash_loop", "admin"
MARK_KINDS = (MARK_HEALTH, MARK_CRASH_LOOP, MARK_ADMIN)
# what a placeholder holds from ``arm`` (written while the disk has room) until its kind is written over it in place:
# a disk with no block left for the kind leaves it, read as a rollback of no known kind (a full disk made the mark
# empty, read as the health check's verdict, and the model manager held the version, an admin's rollback or a crash
# loop's included, for its deployment)
MARK_UNKNOWN = "unknown"


@dataclass(frozen=True)
class AfterRestart:
    """What a start found of a probation a restart interrupted (``ModelStore.after_restart``)."""

    candidate: str  # folder names
    previous: str
    resume: bool  # True: serve the candidate and watch a new health window; False: previous restored
    clean: bool  # the run before ended with an orderly stop
    unclean_ends: int  # inside this probation, this one included
    baseline: dict | None  # the previous model's health figures at the swap
    reason: str | None = None  # why the previous was restored
    told: bool = False  # the candidate's rolled_back event was told by the run before (its mark says so)


def no_space(exc: BaseException) -> bool:
    """Whether ``exc``, or what it was raised from, is a full disk (or a spent quota)."""
    e: BaseException | None = exc
    for _ in range(8):
        if e is None:
            return False
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        e = e.__cause__ or e.__context__
    return False


def no_room(root: Path, pkg: Path, size: int | None = None, free: int | None = None) -> PackageError:
    """An install refused for the disk (``NO_SPACE``): the words a slot's start and ``edge-agent validate`` say."""
    sizes = f": it takes about {size} bytes, the disk has {free} free" if size is not None else ""
    return PackageError(
        f"not enough free disk in {printable(str(root))} to unpack {printable(Path(pkg).name)}{sizes}; "
        "nothing of it was kept; it is installed once there is room (free some space)",
        code=NO_SPACE,
    )


def room_refusal(root: Path, pkg: Path, files: Sequence[FileEntry]) -> PackageError | None:
    """``no_room`` when the file system that holds (or will hold) ``root`` has less free room than an install of a
    package of ``files`` (its manifest's) takes, else None. Reads, creates nothing. Taken as the install writes them:
    each file in whole blocks of that file system, with the manifest, its signature and ``.package-digest`` a block
    each (their sum in bytes fitted where the install did not), and each folder it makes (``root`` and its missing
    parents, the package's folder, the package's own sub-folders) as a folder there takes: a block on ext4, none on
    tmpfs (measured on the nearest folder that exists, at most a block: an xfs folder of a few entries lives in its
    inode). Uncounted, they left a window of a block a folder (12 KiB for a vision package on ext4) where validate
    passed and every start ended, no room. Free is counted with what the slot's start removes first, the ``.part``
    folders an install cut short left (counted in use, they kept ``edge-agent validate`` refusing for good an agent
    that would start)."""
    there = Path(root)
    while not there.exists() and there.parent != there:
        there = there.parent
    try:
        st = os.statvfs(there)
        folder = os.stat(there).st_blocks * 512
    except OSError:
        return None
    block = st.f_frsize or 4096
    inner = {p for f in files for p in PurePosixPath(f.path).parents if p != PurePosixPath(".")}
    folders = len(Path(root).relative_to(there).parts) + 1 + len(inner)
    need = sum(-(-f.size // block) * block for f in files) + 3 * block + folders * min(folder, block)
    free = st.f_bavail * st.f_frsize + _bytes_under(Path(root).glob(".*.part"))
    return no_room(root, pkg, need, free) if need > free else None


def _bytes_under(folders) -> int:
    """The disk bytes the files under ``folders`` take (links not followed)."""
    total = 0
    for folder in folders:
        for dirpath, _dirs, names in os.walk(folder):
            for n in names:
                try:
                    total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
                except OSError:
                    pass
    return total


def _rebase(opened: OpenedPackage, old: Path, new: Path) -> OpenedPackage:
    from model_packager.package import opened_from

    return opened_from(opened.manifest, new, opened.signer, opened.digest)  # every path, under the new root


class ModelStore:
    def __init__(self, root: Path, clean: bool = True) -> None:
        """``clean``: remove ``.part`` folders a crash left (the slot's own store, at start); an
        installer working for the slot (``edge_agent.models.install``) leaves them to it."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._state_warned: str | None = None  # why state.json was last refused (said once)
        # why the last read of state.json found a file but no state in it (None: read, or there is none): a start
        # then serves the newest package installed here (``newest_installed``), not the configured one
        self.state_unread: str | None = None
        # the state a write of state.json the disk refused (full, read-only) left in memory only: the slot's
        # state, written once the disk takes it (write_pending)
        self.unwritten: dict | None = None
        # the state this process last read from state.json or wrote there: the slot's, should the file stop reading
        # while it runs (``_lost``)
        self._known: dict | None = None
        # ``unwritten`` is ``_known`` answered for a file that stopped reading (``_lost``), not a write the disk
        # refused: the file is read again first, and one that reads then is taken as it is
        self._relost = False
        # ``unwritten`` is a change the slot made on the state remembered for a file that did not read, the disk
        # refusing its write too: the file is read again before it is written, and one written since (a restore, an
        # edit) is taken as it is, said; answered from memory, it was written over the restore once the disk took it
        self._on_unread = False
        # a write of state.json the disk refused was said (``_write_state``), until one is taken: said once, whether
        # what it wrote was the slot's decision or the state remembered for a file that stopped reading
        self._refusal_said = False
        # digests noted served unchecked while state.json held no state (``note_served_unchecked``): written with the
        # next state
        self._unchecked_held: list[str] = []
        # folders whose rollback mark (``mark_rolled_back``) the disk refused, and why: marked again before each
        # write of state.json, with the slot's retries of it and at an orderly stop (``mark_pending``)
        self.unmarked: dict[str, str] = {}
        # the kinds of the marks the disk refused (``mark_rolled_back``), written with them at the next try
        self._kinds: dict[str, str] = {}
        self._told: set[str] = set()  # of those, the ones whose rolled_back event was told (``told``)
        # held over every read-change-write of state.json (and by write_pending around _write_state): taken only
        # around the write, a writer that read before another's change wrote its stale read over it (a new
        # deployment's forget_failed undone by a health watch's end_probation, the earlier verdict back on disk)
        self._write_lock = threading.RLock()
        for leftover in self.root.glob(".*.part") if clean else ():
            shutil.rmtree(leftover, ignore_errors=True)
        if clean:
            self._put_back_replaced()

    def _put_back_replaced(self) -> None:
        """An installed folder ``install`` moved aside to put a new copy of the same package in its place: put back
        where a crash left no copy in place (the folder as it was before that install began, checked at the slot's
        start as any installed folder), else removed."""
        for aside in self.root.glob(f"{_REPLACED}*"):
            folder = self.root / aside.name.removeprefix(_REPLACED)
            try:
                if aside.is_symlink() or not aside.is_dir():
                    aside.unlink(missing_ok=True)  # never made by an install: nothing to put back
                    continue
                if folder.exists() or folder.is_symlink():  # the install's move done: the old copy's leftover
                    shutil.rmtree(aside, ignore_errors=True)
                    continue
                os.replace(aside, folder)
                sync_folder(self.root)
            except OSError as exc:
                log.warning("model folder %s: cannot be put back from %s: %s", folder, aside, exc)
                continue
            log.warning(
                "model folder %s: put back as it was before an install of the same package cut short (a crash "
                "or power cut between moving it aside and moving the new copy in)",
                folder,
            )

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    def state(self) -> dict:
        """``state.json`` (``{}`` when there is none). It lies in the data folder, a disk anyone with the
        gateway's shell can edit, and was read whole: a named pipe there waited for ever (the slot's start
        with it), a file of gigabytes or a link to ``/dev/zero`` filled the agent's memory, a thousand-deep
        nesting raised RecursionError. Read bounded as the manifest is; one that cannot be read, is larger
        than ``STATE_MAX_BYTES`` or is not a JSON object counts as no state, as a new slot's (the next write
        replaces it), said once in a warning naming the file and why. A state the disk has not taken yet
        (``unwritten``) is the slot's state: answered from memory."""
        pending = self.unwritten
        if pending is not None and not self._relost and not self._on_unread:
            return json.loads(json.dumps(pending))  # a copy: callers change what they read, then write it
        self.state_unread = None
        try:
            data = json.loads(_read_small(self.state_path, STATE_MAX_BYTES))
        except FileNotFoundError:
            return self._lost("it is gone") if self._known is not None else {}
        except OSError as exc:
            return self._lost(str(exc.strerror or exc))
        except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested past the parser's depth
            # (an empty file, as a power cut can leave one on a file system that lost the data of its rename)
            return self._lost(f"not JSON ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
        if not isinstance(data, dict):
            return self._lost(f"not a JSON object (a {type(data).__name__})")
        if (misfit := _misfit(data)) is not None:
            return self._lost(misfit)
        if data != self._known and (absent := self._absent(data)) is not None:
            if self._known is not None:
                return self._lost(absent)
            # a start's: the names not installed dropped, the rest kept (its ``failed`` verdicts above all). Read as
            # no state, a deployment's rollback verdict was lost (the version installed and served again after the
            # restart) and the newest installed served, a version ``failed`` alone named (the disk refused its mark)
            data = _without_absent(data, self._absent)
            if not data.get("current"):  # the newest installed serves (``start_folder``), the verdicts kept
                self._state_refused(absent)
                return data
            self._say_once(
                absent, "those names dropped; the rest of the state taken (written at the next change)"
            )
            return data
        with self._write_lock:
            # it reads again (a restore or an edit written over it): taken as it is, not undone
            if self._on_unread and self.unwritten is not None:
                # as the change found it (an I/O error that passed): the change stands
                if data == self._known:
                    return json.loads(json.dumps(self.unwritten))
                # its verdicts (a version rolled back or refused: ``failed``) are facts, not a choice of what serves:
                # kept with the restore and written. Dropped with the change, a restart found the deployment of the
                # version rolled back with no verdict, and installed and served it again
                verdicts = _added_failed(self.unwritten, self._known)
                self.unwritten, self._relost, self._on_unread, self._refusal_said = None, False, False, False
                log.warning(
                    "model store: %s reads again, written since the slot changed its state while it did not read "
                    "(a restore or an edit); taken as it is, that change not written over it%s",
                    printable(str(self.state_path)),
                    f" but for its verdicts on {printable(', '.join(verdicts), 300)}" if verdicts else "",
                )
                if verdicts:
                    # (the restore as read: a read that finds it still there answers the state written below)
                    self._known, self._state_warned, self._on_unread = data, None, True
                    merged = json.loads(json.dumps(data))
                    for folder_name, why in verdicts.items():
                        _note_failed(merged, folder_name, why)
                    self._write_state(merged)
                    return json.loads(json.dumps(merged))
            elif self._relost:
                self.unwritten, self._relost, self._refusal_said = None, False, False
                log.warning("model store: %s reads again; taken as it is", printable(str(self.state_path)))
            self._known, self._state_warned = data, None  # (a later loss is said again)
        return json.loads(json.dumps(data))

    def _lost(self, why: str) -> dict:
        """``state.json`` does not read (``why``). At a start, no state (``_state_refused``). Where this process read
        or wrote one before (the file emptied, removed or unreadable while the slot runs: an I/O error of a failing
        card, an edit), that state is the slot's, answered from memory and written again as a write the disk
        refused is (``unwritten``, ``write_pending``): read as no state, the next write (a refused package's mark)
        left a state naming no current, and its prune removed the model serving and the one to go back to, the next
        start finding nothing installed."""
        if self._known is None:
            self._state_refused(why)
            return {}
        self._say_once(
            why, "the slot goes on with its state as this agent last read or wrote it, and writes it again"
        )
        with self._write_lock:  # (beside a write: its state, not the one before it)
            if self.unwritten is None or self._relost:
                self.unwritten, self._relost = json.loads(json.dumps(self._known)), True
            return json.loads(json.dumps(self.unwritten))

    def _absent(self, st: dict) -> str | None:
        """Why a state this process did not write (a start's, a restore or an edit by hand) names a folder that is not
        installed here as ``current``, ``previous`` or the probation's candidate, or None. Taken as it was, a restore
        naming a folder that is not there (another gateway's, one pruned since the copy) kept nothing the slot has:
        the next prune removed every installed folder, the one serving and the one to go back to included."""
        for key, name in _names(st).items():
            if not name:
                continue
            folder = self.root / name
            if "/" in name or name.startswith(".") or folder.is_symlink() or not folder.is_dir():
                return f"{key!r} names {name!r}, which is not installed in {self.root}"
        return None

    def _state_refused(self, why: str) -> None:
        self.state_unread = why
        self._say_once(
            why,
            "read as no state (a start serves the newest package installed in the slot, else starts as a new slot "
            "starts; the next change of state writes a new state.json)",
        )

    def _say_once(self, why: str, then: str) -> None:
        """Why ``state.json`` does not read, and what follows: read at every step of a swap, said once."""
        if why != self._state_warned:
            self._state_warned = why
            log.warning("model store: %s: %s; %s", printable(str(self.state_path)), printable(why, 300), then)

    def start_folder(self) -> tuple[str | None, bool]:
        """The installed folder a start serves, and whether it is ``newest_installed`` (the state unreadable):
        ``state.json``'s ``current``; where the state does not read, the newest installed; else None. The slot's
        start and ``edge-agent validate`` each wrote this choice."""
        current = self.state().get("current")
        if current or self.state_unread is None:
            return current or None, False
        return self.newest_installed(), True

    def newest_installed(self) -> str | None:
        """The installed folder of the highest version whose manifest reads (``reopen``; verified as any before
        it serves), or None: what a start serves when ``state.json`` holds no state. The slot keeps the package
        it serves, the one before it and a candidate, so the highest is the one the fleet delivered last (read
        as no state, the configured package was installed again, an older one, and the newer pruned). A folder
        rolled back or refused (``mark_rolled_back``) is passed over: an admin's rollback keeps the version it
        rolled away from as ``previous``, and a start on a lost state served it again, with no cloud for good."""
        found = self._installed_versions()
        return max(found, key=lambda f: f[0])[1] if found else None

    def fall_back(self, folder_name: str) -> str | None:
        """The installed folder of the highest version below ``folder_name``'s, as ``newest_installed`` chooses
        (none rolled back or refused), or None: the one a start on a lost state keeps to go back to. Two such
        folders installed are a candidate and the model it replaced (its health window still open, or its swap cut
        short before the switch): the newest, served alone for good, never had its health verdict, and the prune
        that followed removed the model it would have gone back to."""
        found = self._installed_versions()
        top = [key for key, name in found if name == folder_name]
        below = [f for f in found if top and f[0] < top[0]]
        return max(below, key=lambda f: f[0])[1] if below else None

    def _installed_versions(self) -> list[tuple[tuple, str]]:
        """(version key, folder name) of each installed folder that reads, not rolled back or refused (its mark, or
        ``state.json``'s ``failed`` where the disk refused the mark)."""
        from model_packager.manifest import version_key

        failed = self.state().get("failed")
        failed = failed if isinstance(failed, dict) else {}
        found = []
        for p in sorted(self.root.iterdir()):
            if p.name.startswith(".") or not p.is_dir() or p.is_symlink() or self.rolled_back(p.name):
                continue
            if p.name in failed:
                continue
            opened = self.reopen(p.name)
            if opened is None:
                continue
            try:
                found.append((version_key(opened.manifest.version), p.name))
            except ValueError:
                continue
        return found

    def _marks(self, folder_name: str) -> tuple[Path, Path] | None:
        """The mark of ``folder_name`` and its placeholder (None: not a folder name of this slot)."""
        if not isinstance(folder_name, str) or "/" in folder_name or folder_name in ("", ".", ".."):
            return None
        marks = self.root / ROLLED_BACK
        return marks / folder_name, marks / (folder_name + ARMED)

    def arm(self, folder_name: str) -> None:
        """Ready the rollback mark of an installed folder while the disk has room (at its install and switch): the
        marks' folder and an empty placeholder ``.rolled-back/<folder>.armed``, which ``mark_rolled_back`` renames
        into the mark. A rename needs no free block or inode, so a disk that fills up later (a sample folder, the
        out-of-memory killer's core dumps) still takes the mark; made at the rollback only, a full disk refused it
        and a restart served the version rolled back again. Fails nothing: without it the mark is made anew. A
        placeholder that does not say ``unknown`` is made to (one made on a full disk, left empty, or a kill between
        a mark's kind written and its rename): formerly kept as it was, and a later mark made without a kind
        (``mark_failed``) was read as the health check's verdict, or as that kind."""
        paths = self._marks(folder_name)
        if paths is None:
            return
        mark, armed = paths
        with self._write_lock:  # (not between a mark's kind and its rename, ``mark_rolled_back``)
            try:
                if not mark.parent.is_dir():
                    mark.parent.mkdir()
                    sync_folder(self.root)
                if mark.exists():
                    return
                if not armed.exists():
                    fd = os.open(armed, os.O_WRONLY | os.O_CREAT, 0o644)
                    try:
                        os.write(fd, MARK_UNKNOWN.encode("ascii"))  # (its block, taken while there is room)
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    sync_folder(mark.parent)
                elif _read_kind(armed) not in (
                    None,
                    MARK_UNKNOWN,
                ):  # (a regular file only: never a pipe opened)
                    _fill_placeholder(armed, MARK_UNKNOWN)
            except OSError:
                pass  # (mark_rolled_back makes the mark itself, or says why not)

    def mark_rolled_back(self, folder_name: str, kind: str = "") -> None:
        """Record, beside ``state.json`` and before it, that ``folder_name`` was rolled back or refused: a file
        ``.rolled-back/<folder>`` holding ``kind`` (who rolled it back, ``MARK_KINDS``; none: ``MARK_UNKNOWN``, a
        refusal), written into its placeholder before the rename that makes the mark (a kill leaves the mark whole or
        absent; a disk with no block for it leaves it empty, read as the health check's), its name fsynced, so that a
        start on a lost state never serves it (``newest_installed``) and a start whose state.json still names it on
        probation restores the previous model (``after_restart``). Made by renaming the folder's placeholder
        (``arm``), which needs no free space, else created. Removed when the folder serves again (``set_current``,
        ``served``) or is removed (``prune``). A disk that refuses it (read-only, an I/O error, a full disk without
        a placeholder) fails no step: it is kept in ``unmarked`` with why (the slot says so in an event and on
        /status), and written again before each later write of ``state.json`` and at the slot's retries
        (``mark_pending``) until the disk takes it."""
        paths = self._marks(folder_name)
        if paths is None:
            return
        mark, armed = paths
        with self._write_lock:
            if kind:
                self._kinds[folder_name] = kind  # (until the mark is made: ``mark_pending`` writes it again)
            kind = self._kinds.get(folder_name, kind)
            try:
                if not mark.exists():
                    # ``unknown`` when it was given no kind (a refusal, ``mark_failed``), over a placeholder that
                    # says otherwise (left empty by a full disk, a kind a kill left before its rename), if no
                    # ``arm`` came between: formerly the mark read as the health check's verdict, or as that kind
                    if kind or _read_kind(armed) not in (None, MARK_UNKNOWN):
                        _fill_placeholder(armed, kind or MARK_UNKNOWN)
                    try:
                        os.rename(armed, mark)  # (no free block or inode needed)
                    except FileNotFoundError:  # not armed: made anew
                        if not mark.parent.is_dir():
                            mark.parent.mkdir()
                            sync_folder(self.root)
                        os.close(os.open(mark, os.O_WRONLY | os.O_CREAT, 0o644))
                    sync_folder(mark.parent)
                elif _read_kind(mark) != (kind or MARK_UNKNOWN):
                    # a mark an earlier rollback left (a kill inside ``served`` before it said ``unknown`` again,
                    # on a version never made current since): this verdict's kind over it, in place, and not told
                    # yet. Formerly kept, and a refusal of the version read as that rollback's kind (a health
                    # check's verdict, or a crash loop)
                    os.chmod(mark, 0o644)
                    _fill_placeholder(mark, kind or MARK_UNKNOWN)
            except OSError as exc:
                if folder_name not in self.unmarked:
                    log.error(
                        "model store: cannot record %s as rolled back in %s (%s); tried again with each write of "
                        "state.json; until then a restart may serve it again",
                        printable(folder_name, 200),
                        printable(str(mark.parent)),
                        printable(str(exc), 300),
                    )
                self.unmarked[folder_name] = printable(str(exc), 300)
                return
            self._kinds.pop(folder_name, None)
            if self.unmarked.pop(folder_name, None) is not None:
                log.warning("model store: %s recorded as rolled back", printable(folder_name, 200))
                if folder_name in self._told:  # told while its mark was refused
                    self._told.discard(folder_name)
                    self.told(folder_name)

    def told(self, folder_name: str) -> None:
        """The rolled_back event of ``folder_name``'s rollback was told: its mark made read-only (a change of the
        file's mode, which needs no free space), so that a restart that finds the rollback unrecorded in state.json
        (a full disk) restores the previous model without telling the cloud a second rollback."""
        paths = self._marks(folder_name)
        if paths is None:
            return
        with self._write_lock:
            if folder_name in self.unmarked:  # (made read-only once written)
                self._told.add(folder_name)
                return
        with contextlib.suppress(OSError):
            os.chmod(paths[0], 0o444)

    def was_told(self, folder_name: str) -> bool:
        paths = self._marks(folder_name)
        try:
            return paths is not None and not os.stat(paths[0]).st_mode & 0o222
        except OSError:
            return False

    def unrecorded(self) -> dict[str, str]:
        """The folders whose rollback mark the disk refused, and why (a copy)."""
        with self._write_lock:
            return dict(self.unmarked)

    def mark_pending(self) -> bool:
        """Write the rollback marks the disk refused (``unmarked``) of the folders still installed; whether none
        is left."""
        with self._write_lock:
            for name in sorted(self.unmarked):
                if (self.root / name).is_dir():
                    self.mark_rolled_back(name)
                else:  # removed (pruned): nothing a start could serve
                    self.unmarked.pop(name, None)
                    self._kinds.pop(name, None)
                    self._told.discard(name)
            return not self.unmarked

    def rolled_back(self, folder_name: str) -> bool:
        paths = self._marks(folder_name)
        return paths is not None and paths[0].exists()

    def mark_kind(self, folder_name: str) -> str:
        """Who rolled ``folder_name`` back, as its mark says (``MARK_KINDS``): an empty, unreadable or unknown
        mark is the health check's (the one reading of the marks written before they held a kind, and of a health
        check's rollback on a disk with no block for its kind: a verdict the model manager must still hold). Only a
        regular file is read, and only its first 64 bytes: a pipe or a huge file put at the mark's path blocked the
        start, or filled its memory, at every restart."""
        paths = self._marks(folder_name)
        kind = (_read_kind(paths[0]) if paths is not None else None) or ""
        if kind == MARK_UNKNOWN:
            return MARK_UNKNOWN
        return kind if kind in MARK_KINDS else MARK_HEALTH

    def served(self, folder_name: str) -> None:
        """``folder_name`` serves (``state.json`` names it current): no longer rolled back (a rollout of the same
        version again, or a kill -9 between ``mark_rolled_back`` and the state it came before)."""
        with self._write_lock:
            self.unmarked.pop(folder_name, None)
            self._kinds.pop(folder_name, None)
            self._told.discard(folder_name)
        paths = self._marks(folder_name)
        if paths is None:
            return
        path, armed = paths
        try:
            if path.exists():
                os.chmod(path, 0o644)  # (read-only once told)
                # its kind said ``unknown`` again, as ``arm`` made it (in place over its block, one write): it kept
                # the kind of the rollback just undone, and a later mark made without a kind (``mark_failed``) read
                # that one, e.g. a refusal or a full disk's mark told as a crash loop. Written before the rename: a
                # kill between the two leaves a mark of no known kind on a version state.json does not yet name
                # (``set_current`` withdraws it before that write), which its next ``served`` withdraws again
                # (written after it, a kill between left the placeholder with the kind undone)
                _fill_placeholder(path, MARK_UNKNOWN)
                os.rename(path, armed)  # the placeholder again, for a later rollback
                sync_folder(path.parent)
        except OSError as exc:
            log.warning("model store: cannot remove %s: %s", printable(str(path)), printable(str(exc), 300))
        self.arm(folder_name)

    def _write_state(self, state: dict) -> None:
        """``state`` to ``state.json``. A write the disk refuses (full, read-only, an I/O error) fails no step of
        the slot: what the slot decided (a candidate kept, a rollback) stands, ``state()`` answers from memory,
        and the slot writes it once the disk takes it (``write_pending``); said once in a warning naming the
        file. Raised, it ended a health window's watch for good (the candidate 'watching' for ever, its
        deployment never reported, even once there was room) and left a rollback unrecorded on disk."""
        with self._write_lock:
            if self.unmarked:  # before the state, as at first: a state.json a power cut empties needs them
                self.mark_pending()
            # (a change made on the state remembered: ``_on_unread``)
            unread = self._relost or self._on_unread
            self._relost = False  # (what is written, or left to write, is the slot's decision)
            if self._unchecked_held:
                state = {**state, SERVED_UNCHECKED: self._with_unchecked(state.get(SERVED_UNCHECKED), [])}
            try:
                self._write_state_file(state)
            except OSError as exc:
                if not self._refusal_said:
                    self._refusal_said = True
                    log.warning(
                        "model store: cannot write %s (%s); the slot goes on as it decided and writes it once "
                        "the disk takes it (a restart before then starts from what the file holds)",
                        printable(str(self.state_path)),
                        printable(str(exc), 300),
                    )
                self.unwritten, self._on_unread = json.loads(json.dumps(state)), unread
                return
            self._known, self._refusal_said, self._on_unread = json.loads(json.dumps(state)), False, False
            self._unchecked_held = []
            if self.unwritten is not None:
                log.warning("model store: %s written again", printable(str(self.state_path)))
                self.unwritten = None

    def write_pending(self) -> bool:
        """Write the state a refused write left in memory (``unwritten``) and the rollback marks refused
        (``unmarked``); whether none is left."""
        # read under the lock: another thread's write between the read and the lock (a swap's set_current) was
        # overwritten by the stale state read before it, and state.json named the wrong current
        with self._write_lock:
            # a state.json that stopped reading: read again first (a restore written since stands)
            if self._relost or self._on_unread:
                self.state()
            pending, relost = self.unwritten, self._relost
            if pending is not None:
                self._write_state(pending)
                if relost and self.unwritten is not None:
                    # the state remembered, refused (a full or read-only disk): still no decision of the slot's, so
                    # read again first at the next try. Taken for one, a restore written before the disk took it was
                    # undone by it
                    self._relost = True
            elif self.unmarked:
                self.mark_pending()
            return self.unwritten is None and not self.unmarked

    def _write_state_file(self, state: dict) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        try:
            with open(tmp, "w") as f:
                json.dump(state, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # (on a full disk it held the room left)
            raise
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def install(self, pkg: Path, trusted: TrustedKeys) -> OpenedPackage:
        """Verify and extract, in this process (the agent's slots run it in a child process:
        ``edge_agent.models.install``). Raises ``PackageError``.

        Nothing of the package is parsed before its signature is checked: ``open_package`` verifies
        into a ``.part`` folder named by the package digest (removed at the next start if a crash
        interrupts), and only the verified manifest names the final folder."""
        digest = package_digest(pkg)
        incoming = self.root / f".incoming-{digest[:16]}.part"
        try:
            if incoming.exists():
                shutil.rmtree(incoming)
            opened = open_package(pkg, incoming, trusted)  # (leaves nothing behind when it fails)
            try:
                m = opened.manifest  # verified: name and version passed the manifest's own allow-lists
                folder = self.root / f"{m.name}-{m.version}-{digest[:12]}"
                (incoming / ".package-digest").write_text(digest)
                # re-verified from the package: never trust a folder's contents. The same package installed (its
                # name carries the digest: a fleet's rollback to it, bytes sent again) is moved aside, not removed,
                # until the new copy is in place: removed first, a power cut before the move left neither, and the
                # start removed the verified copy (a ``.part``) too, so the model was downloaded again. A start puts
                # back one left aside (``_put_back_replaced``)
                aside = self.root / f"{_REPLACED}{folder.name}"
                if folder.exists():
                    if aside.exists():
                        shutil.rmtree(aside)
                    os.replace(folder, aside)
                try:
                    os.replace(incoming, folder)
                except BaseException:
                    if aside.exists() and not folder.exists():
                        os.replace(aside, folder)
                    raise
                shutil.rmtree(aside, ignore_errors=True)
            except BaseException:
                shutil.rmtree(incoming, ignore_errors=True)
                raise
        except (OSError, PackageError) as exc:
            if no_space(exc):  # the disk, not the package: a temporary condition, said as such
                raise self._no_space(pkg) from exc
            raise
        return _rebase(opened, incoming, folder)

    def _no_space(self, pkg: Path) -> PackageError:
        try:
            size, free = Path(pkg).stat().st_size, shutil.disk_usage(self.root).free
        except OSError:
            return no_room(self.root, pkg)
        return no_room(self.root, pkg, size, free)

    def reopen(self, folder_name: str, signer: str = "") -> OpenedPackage | None:
        """Re-open a previously installed folder (its files were verified on install; ``signer``:
        the key id the install named, when known)."""
        from model_packager.manifest import Manifest
        from model_packager.package import opened_from
        from model_packager.safe_yaml import load_bounded

        folder = self.root / folder_name
        if not isinstance(folder_name, str) or "/" in folder_name or folder_name in ("", ".", ".."):
            return None  # state.json names a folder of this slot, nothing else
        # bounded as verify_folder reads it: the data folder is a disk anyone with the gateway's shell can
        # edit, and a manifest.yaml made a named pipe waited for ever, a link to /dev/zero or a 10 GB file
        # filled the memory, in the agent's own process (a resumed probation reopens without a check)
        path = folder / "manifest.yaml"
        try:
            manifest = Manifest.model_validate(
                load_bounded(_read_small(path, MAX_MANIFEST_BYTES), f"{folder_name}/manifest.yaml")
            )
            path = folder / ".package-digest"
            digest = _read_small(path, DIGEST_FILE_MAX_BYTES).decode().strip()
        except OSError as exc:
            log.warning(
                "model store: %s: %s; refused (the slot's other packages serve on)",
                printable(str(path)),
                printable(exc.strerror or exc),
            )
            return None
        except (ValueError, PackageError) as exc:
            log.warning("model store: %s: %s; refused", printable(str(path)), printable(str(exc), 500))
            return None
        opened = opened_from(manifest, folder, signer, digest)
        if not opened.model_path.is_file() or (
            opened.fp32_model_path and not opened.fp32_model_path.is_file()
        ):
            return None
        return opened

    def verify(self, folder_name: str, trusted: TrustedKeys) -> OpenedPackage:
        """Re-verify an installed folder as at install (``model_packager.verify_folder``: the manifest's
        signature by a trusted key, every listed file's size and SHA-256), in this process. A folder on
        disk can be edited or corrupted after install, so a start checks it before serving it. Raises
        ``PackageError`` naming the file and the reason."""
        from model_packager import verify_folder
        from model_packager.package import opened_from

        if not isinstance(folder_name, str) or "/" in folder_name or folder_name in ("", ".", ".."):
            raise PackageError(f"state.json names {printable(repr(folder_name))}, not a folder of this slot")
        folder = self.root / folder_name
        if not folder.is_dir():
            raise PackageError(
                f"package {printable(folder_name)}: the installed folder is missing", code="missing"
            )
        manifest, signer = verify_folder(folder, trusted)
        try:
            with open_regular(folder / ".package-digest") as f:  # no pipe waited on, no device read
                digest = f.read(DIGEST_FILE_MAX_BYTES).decode().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise PackageError(
                f"package {printable(folder_name)}: .package-digest unreadable ({printable(getattr(exc, 'strerror', None) or exc)})",
                code="missing_file",
            ) from None
        # not signed (the package file it names is not kept), but bound to what is: the install wrote it and named
        # the folder from the verified manifest. The digest is what the agent reports it runs and what the fleet's
        # desired state is compared with ("it runs this version"), so one that does not fit is a folder altered
        if (
            not _DIGEST_RE.fullmatch(digest)
            or folder_name != f"{manifest.name}-{manifest.version}-{digest[:12]}"
        ):
            raise PackageError(
                f"package {printable(folder_name)}: its .package-digest ({printable(digest[:16], 40)}…) and folder "
                f"name do not fit its signed manifest ({manifest.package_id}) as installed: altered; refused",
                code="digest_mismatch",
            )
        return opened_from(manifest, folder, signer, digest)

    def set_aside(self, folder_name: str, reason: str) -> Path | None:
        """Move an installed folder that failed its checks out of use, to ``.rejected/<folder>`` (kept for
        a look; one per folder name, so repeated failures do not fill the disk), and drop it from
        ``state.json``. Returns where it went (None when it was already gone)."""
        with self._write_lock:  # one read-change-write (see ``_write_lock``)
            st = self.state()
            st.pop(ASIDE_PROBATION, None)  # (an earlier set-aside's: this one's only)
            if (
                st.get("current") == folder_name
                and (prob := st.get("probation") or {}).get("candidate") == folder_name
            ):
                st[ASIDE_PROBATION] = prob  # its health window, for ``put_back``
            for k in ("current", "previous"):
                if st.get(k) == folder_name:
                    st[k] = None
            if (st.get("probation") or {}).get("candidate") == folder_name:
                st["probation"] = None
            _note_failed(st, folder_name, SET_ASIDE + reason)
            self._write_state(st)
        src = self.root / folder_name
        if "/" in folder_name or folder_name in ("", ".", "..") or not src.is_dir():
            return None
        dest = self.root / ".rejected" / folder_name
        dest.parent.mkdir(exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest, ignore_errors=True)
        try:
            os.replace(src, dest)
            os.utime(dest)  # when it was set aside: the oldest go first
            sync_folder(self.root)
        except OSError:
            shutil.rmtree(src, ignore_errors=True)
            return None
        # one per folder name, but a new version is a new name: the oldest go past MAX_REJECTED
        kept = sorted(
            (p for p in dest.parent.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True
        )
        for old in kept[MAX_REJECTED:]:
            if old != dest:
                shutil.rmtree(old, ignore_errors=True)
        return dest

    def put_back(self, folder_name: str) -> bool:
        """Undo ``set_aside`` of ``folder_name`` by a start that did not stand (a fleet config's trial, rolled
        back): the folder in place again and ``current``, its set-aside note dropped, where the slot holds no other
        ``current``. The start that follows verifies it as any installed folder (set aside again if it fails its
        own checks); a candidate set aside in its health window is on probation again, as after an orderly stop.
        A folder in place that the state notes as set aside (the process killed between ``set_aside``'s state and
        its move, or between this move and the state after it) is made current as it is: left so, no state named it
        and the slot waited for the fleet's package. Whether it was put back."""
        src, dest = self.root / ".rejected" / folder_name, self.root / folder_name
        if "/" in folder_name or folder_name in ("", ".", ".."):
            return False
        with self._write_lock:  # one read-change-write (see ``_write_lock``)
            st = self.state()
            if st.get("current"):
                return False
            failed = st.get("failed")
            aside = isinstance(failed, dict) and str(failed.get(folder_name, "")).startswith(SET_ASIDE)
            if src.is_dir() and not dest.exists():
                try:
                    os.replace(src, dest)
                    sync_folder(self.root)  # (the move on disk before the state that names it)
                except OSError:
                    return False
            elif not (aside and dest.is_dir()):
                return False
            st["current"] = folder_name
            # a candidate in its health window stays on probation, as after an orderly stop (the start that follows
            # resumes the window): made current alone, it served for good, never judged, ``previous`` kept unused
            prob = st.pop(ASIDE_PROBATION, None)
            if isinstance(prob, dict) and prob.get("candidate") == folder_name and st.get("previous"):
                st["probation"] = {**prob, "stopped": True}
            if aside and isinstance(failed, dict):
                st["failed"] = {k: v for k, v in failed.items() if k != folder_name}
            self._write_state(st)
        return True

    def set_current(
        self,
        folder: Path,
        previous: Path | None,
        probation: bool = False,
        baseline: dict | None = None,
        failed: tuple[Path, str] | None = None,
    ) -> None:
        """``baseline``: the previous model's health figures (see ``after_restart``). ``failed``: the folder a
        rollback leaves and why, recorded in the same write (``mark_failed``'s entry): written after the state that
        dropped it, a kill between the two left a rollback with no verdict, and the restart took the deployment's
        swap for one cut short before its switch and installed the version again."""
        import time

        with self._write_lock:  # one read-change-write (see ``_write_lock``)
            st = self.state()
            if failed is not None:
                _note_failed(st, failed[0].name, failed[1])
            st.pop(ASIDE_PROBATION, None)  # (``put_back`` puts back only where no other is current)
            st["current"] = folder.name
            st["previous"] = previous.name if previous else None
            st["probation"] = (
                {
                    "candidate": folder.name,
                    "since": time.time(),
                    "unclean_ends": 0,
                    "stopped": False,
                    "baseline": baseline,
                }
                if probation and previous
                else None
            )
            # its rollback mark withdrawn before the state that names it current: written after, a kill between the
            # two left a new deployment of a version rolled back before named current, on probation, and marked,
            # and the next start rolled it back with the earlier rollback's verdict (a health check's held for the
            # new deployment for good). A kill between now leaves it unmarked and not current: its swap cut short
            self.served(folder.name)
            self._write_state(st)
        if previous is not None:
            self.arm(previous.name)

    def end_probation(self, folder: Path) -> None:
        """The candidate passed its health window: it is kept (and ``previous`` no longer needed)."""
        with self._write_lock:  # one read-change-write (see ``_write_lock``)
            st = self.state()
            if (st.get("probation") or {}).get("candidate") == folder.name:
                st["probation"] = None
                st["previous"] = None
                self._write_state(st)

    def mark_stopped(self) -> bool:
        """An orderly stop with a probation open: the next start resumes the candidate. Whether one was open."""
        self.mark_pending()  # (the disk may take them now: the next start may find state.json lost)
        with self._write_lock:  # one read-change-write (see ``_write_lock``)
            st = self.state()
            prob = st.get("probation")
            if not isinstance(prob, dict) or prob.get("candidate") != st.get("current"):
                return False
            prob["stopped"] = True
            self._write_state(st)
            return True

    def after_restart(self) -> AfterRestart | None:
        """A probation left open by the run before (see the module's rule): resume it (counted as an unclean
        end unless that run stopped in order) or, at the ``UNCLEAN_ENDS_TO_ROLL_BACK``-th unclean end, make
        ``previous`` current again and mark the candidate failed, saying why. None: no probation open."""
        with self._write_lock:  # one read-change-write (see ``_write_lock``)
            return self._after_restart()

    def _after_restart(self) -> AfterRestart | None:
        st = self.state()
        prob, prev = st.get("probation"), st.get("previous")
        if (
            not isinstance(prob, dict)
            or not prev
            or prob.get("candidate") != st.get("current")
            or not (self.root / prev).is_dir()
        ):
            return None
        cand = st["current"]
        clean = prob.get("stopped") is True
        unclean = _count(prob.get("unclean_ends")) + (not clean)
        baseline = prob.get("baseline") if isinstance(prob.get("baseline"), dict) else None
        # rolled back, but the disk refused the state.json that said so (full), or a kill -9 came between the
        # mark and that state: the file still names the candidate, on probation. Resumed, it served again the model
        # its health check (or the fleet) had rejected, and ``served`` erased its mark
        rolled_back = self.rolled_back(cand)
        told = rolled_back and self.was_told(cand)  # its rollback's event was told by the run that made it
        if unclean < UNCLEAN_ENDS_TO_ROLL_BACK and not rolled_back:
            prob.update(stopped=False, unclean_ends=unclean)  # until this run stops in order
            self._write_state(st)
            self.arm(cand)  # (a store written before placeholders were made)
            return AfterRestart(cand, prev, True, clean, unclean, baseline)
        kind = self.mark_kind(cand) if rolled_back else MARK_CRASH_LOOP
        if kind == MARK_HEALTH:  # (the health check's verdict, its words lost: the model manager holds it)
            reason = (
                f"{UNRECORDED_ROLLBACK}, but the state.json that recorded it was not written "
                "(a full or read-only disk, or the agent ended first); the previous model was restored"
            )
        elif kind == MARK_UNKNOWN:  # (a refusal's mark, or a disk with no room for its kind: no verdict held)
            # (formerly "the disk had no room for it", also said of a refusal's mark on a disk with room)
            reason = (
                "a rollback or refusal of the candidate began before the restart (by whom is not recorded), but the "
                "state.json that recorded it was not written (the agent ended first, or a full or read-only disk); "
                "the previous model was restored"
            )
        elif kind == MARK_ADMIN:
            reason = (
                "the fleet's rollback or withdrawal of the candidate began before the restart, but the state.json "
                "that recorded it was not written (the agent ended first, or a full or read-only disk); the previous "
                "model was restored"
            )
        else:  # a crash loop, now or cut by an end between its mark and its state.json (counted then)
            ends = unclean if not rolled_back else max(unclean - 1, UNCLEAN_ENDS_TO_ROLL_BACK)
            reason = (
                f"the agent ended without an orderly stop {ends} times inside the candidate's health window (a "
                "crash loop, which the candidate may cause); the previous model was restored"
            )
        _note_failed(st, cand, reason)
        self.mark_rolled_back(cand, kind)  # before the state that drops it: a power cut may empty that
        st.update(
            current=prev,
            previous=None,
            probation=None,
            restored={"candidate": cand, "previous": prev, "reason": reason},
        )
        self._write_state(st)
        return AfterRestart(cand, prev, False, clean, unclean, baseline, reason, told)

    def forget_failed(self, folder_name: str) -> None:
        """A new deployment installs ``folder_name`` again (the model manager, before it records that deployment as
        pending): its ``failed`` entry, an earlier deployment's verdict, is dropped, so that an entry a restart finds
        for the folder is that deployment's own outcome. The verdict was told apart from an earlier one by its text,
        and a broken model is rolled back in the same words each time: a restart within the second of a second
        rollback (before the manager recorded it) took it for the first one's and served the version again."""
        with self._write_lock:
            st = self.state()
            failed = st.get("failed")
            if not isinstance(failed, dict) or folder_name not in failed:
                return
            st["failed"] = {k: v for k, v in failed.items() if k != folder_name}
            self._write_state(st)

    def mark_failed(self, folder: Path, reason: str) -> None:
        self.mark_rolled_back(folder.name)
        with self._write_lock:  # one read-change-write (see ``_write_lock``)
            st = self.state()
            _note_failed(st, folder.name, reason)
            self._write_state(st)

    def prune(self, serving: Iterable[str] = ()) -> list[str]:
        """Remove installed folders nothing points to any more (``current``, ``previous`` and a probation's
        candidate stay): a package replaced after its health window, a candidate rolled back or refused.
        Without this every version ever delivered stays on disk. Hidden entries (an install's ``.part``
        folder, ``.rejected``) are left alone. Call it only while no install of this slot is in flight.
        Returns the folder names removed. None while ``state.json`` does not read (``state_unread``: emptied, not
        JSON, an I/O error of a failing card): it names nothing to keep, and a prune then (a refused swap's, a health
        window's end) removed every folder, the model serving and the one to go back to included: the next start found
        nothing installed.

        ``serving``: the folders the slot holds in memory (the model serving, the one its health check goes back to):
        kept whatever the state names. A state that names other folders (taken as written, or one this store did not
        check) removed the model serving."""
        keep = _named(self.state()) | set(serving)
        if self.state_unread is not None and self.unwritten is None:
            return []
        if self.unwritten is not None:
            # the disk refused the new state: until it takes it, a restart starts from the file, whose folders
            # must still be there (a rollback's prune removed the candidate the file names, and a restart on the
            # full disk found it gone: the configured package installed again, or with none, no model at all)
            try:
                keep |= _named(json.loads(_read_small(self.state_path, STATE_MAX_BYTES)))
            except (OSError, ValueError, RecursionError, AttributeError, TypeError):
                pass  # no state on disk that names a folder
        gone = []
        for p in self.root.iterdir():
            if p.name.startswith(".") or p.name in keep or not p.is_dir():
                continue
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p.name)
        marks = self.root / ROLLED_BACK
        for m in marks.iterdir() if marks.is_dir() else ():
            if not (
                self.root / m.name.removesuffix(ARMED)
            ).is_dir():  # its folder is gone: nothing to pass over
                m.unlink(missing_ok=True)
        return gone

    def current(self) -> str | None:
        return self.state().get("current")

    def previous(self) -> str | None:
        return self.state().get("previous")

    def served_unchecked(self) -> list[str]:
        """The digests of packages this slot served with golden tolerances this agent refuses (installed before it
        refused them; ``note_served_unchecked``), oldest first."""
        return self._with_unchecked(self.state().get(SERVED_UNCHECKED), [])

    def _with_unchecked(self, got: object, more: list[str]) -> list[str]:
        """The digests of a state's ``served_unchecked`` (``got``, as read: what is no digest passed over), those
        held to write (``_unchecked_held``) and ``more``: the latest ``MAX_SERVED_UNCHECKED``."""
        listed = (
            [d for d in got if isinstance(d, str) and _DIGEST_RE.fullmatch(d)]
            if isinstance(got, list)
            else []
        )
        return list(dict.fromkeys([*listed, *self._unchecked_held, *more]))[-MAX_SERVED_UNCHECKED:]

    def note_served_unchecked(self, digest: str) -> None:
        """``digest`` served here with golden tolerances this agent refuses: the way back to it (a fleet's halt, an
        admin's rollback) serves it as its health check's rollback does, whenever it comes. Kept in ``state.json``
        (the latest ``MAX_SERVED_UNCHECKED``): held in memory only, a restart outside the health window lost it, and
        the way back to such a package, its folder pruned, was a new install, refused, the halt's target going back
        for good while the version it halted served on."""
        if not _DIGEST_RE.fullmatch(digest):
            return
        with self._write_lock:  # one read-change-write (see ``_write_lock``)
            st = self.state()
            if digest in self._with_unchecked(st.get(SERVED_UNCHECKED), []):
                return
            if self.state_unread is not None:
                # state.json holds no state (a start on the newest package installed, which writes the state next):
                # written alone, it made a state naming no current, and a kill before the start's write made the next
                # start a new slot's, the configured (older) package installed again and the newest pruned
                self._unchecked_held.append(digest)
                return
            st[SERVED_UNCHECKED] = self._with_unchecked(st.get(SERVED_UNCHECKED), [digest])
            self._write_state(st)


def _read_kind(path: Path) -> str | None:
    """What a mark or placeholder holds (its first 64 bytes, stripped), or None: missing, not a regular file (a pipe
    or a huge file put there blocked a start, or filled its memory), unreadable or not ASCII."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, 64).decode("ascii").strip()
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def _fill_placeholder(armed: Path, kind: str) -> None:
    """Write ``kind`` into a mark's placeholder (made if missing), fsynced, before the rename that makes the mark:
    over what ``arm`` wrote in it, in place (the block it took while the disk had room; truncated first, a full disk
    refused the kind and the mark was made empty, read as the health check's verdict), padded to its length. A
    disk that refuses it leaves the placeholder's ``MARK_UNKNOWN`` (a placeholder made here: empty or absent, the
    mark then made as before, empty)."""
    try:
        if not armed.parent.is_dir():
            armed.parent.mkdir()
            sync_folder(armed.parent.parent)
        fd = os.open(armed, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            # padded with spaces over the whole of what it held (``mark_kind`` strips them), in one write: no cut
            # after it. Formerly the kind was written then the file cut to its length, and a kill between the two
            # left e.g. ``adminwn`` (``admin`` over ``unknown``), read as the health check's verdict
            data = kind.encode("ascii").ljust(os.fstat(fd).st_size, b" ")
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
    except OSError:
        pass


def _note_failed(st: dict, folder_name: str, reason: str) -> None:
    """Record why ``folder_name`` failed in ``st["failed"]``, keeping the latest ``MAX_FAILED``."""
    failed = st.get("failed")
    failed = dict(failed) if isinstance(failed, dict) else {}
    failed.pop(folder_name, None)  # the latest last
    failed[folder_name] = str(reason)[:500]
    st["failed"] = dict(list(failed.items())[-MAX_FAILED:])


def _added_failed(st: dict, before: dict | None) -> dict:
    """The ``failed`` entries ``st`` holds that ``before`` did not (a verdict a change of the slot's made)."""
    had = (before or {}).get("failed")
    had = had if isinstance(had, dict) else {}
    now = st.get("failed")
    return {k: v for k, v in now.items() if had.get(k) != v} if isinstance(now, dict) else {}


def _misfit(st: dict) -> str | None:
    """Why a state read from ``state.json`` names its folders with what is no folder name (a hand edit: a list, a
    number, an object), or None. Such a value raised TypeError (unhashable) out of the slot's start and a swap's prune,
    naming no file; read as no state, it is said naming the file, the key and what it holds."""
    prob = st.get("probation")
    if prob is not None and not isinstance(prob, dict):
        return f"'probation' holds a {type(prob).__name__}, not an object"
    for key, v in _names(st).items():
        if v is not None and not isinstance(v, str):
            return f"{key!r} holds a {type(v).__name__}, not a folder name"
    return None


def _names(st: dict) -> dict:
    """The folders a slot's state names, by key: current, previous and a probation's candidate."""
    prob = st.get("probation")
    return {
        "current": st.get("current"),
        "previous": st.get("previous"),
        "probation.candidate": prob.get("candidate") if isinstance(prob, dict) else None,
    }


def _without_absent(st: dict, absent: Callable[[dict], str | None]) -> dict:
    """``st`` with each folder name ``absent`` refuses dropped (``current``, ``previous``; a probation with its
    candidate or ``previous`` gone dropped whole: nothing to go back to)."""
    st = json.loads(json.dumps(st))
    for key in ("current", "previous"):
        if st.get(key) and absent({key: st[key]}) is not None:
            st[key] = None
    prob = st.get("probation")
    if isinstance(prob, dict) and (
        not st.get("previous") or absent({"probation": {"candidate": prob.get("candidate")}}) is not None
    ):
        st["probation"] = None
    return st


def _named(st: dict) -> set:
    """The folders a slot's state keeps: current, previous and a probation's candidate."""
    return set(_names(st).values())


def _count(v: object) -> int:
    """A count read back from state.json (any other value: 0)."""
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0
