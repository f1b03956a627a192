"""Agent configuration as a fleet deployment: the agent's side.

An admin rolls an agent configuration out like a model (``cloud-trainer config deploy FILE``); it
arrives in the desired state as ``DesiredConfig {deployment_id, digest, yaml}``. ``AgentHost`` runs the
agent (``edge-agent run``) and owns which configuration it runs:

- **What the fleet may set.** A fleet config is an agent config without the agent's own sections,
  ``agent:`` (identity, site, line, data folder), ``cloud:`` (its certificates and its link to the fleet)
  and ``http:`` (its local status endpoint): those always come from the local file the line engineer
  wrote, so a fleet config can neither rename an agent nor cut it off the fleet that could fix it.
  Relative paths in a fleet config resolve against the local file's folder, as the local file's do.
- **Validated twice.** The cloud runs this module's ``check_fleet_config`` (``edge-agent validate --fleet``)
  before it accepts a config; the agent validates what it receives again, merged with its own sections
  and with its own files checked. One that does not validate is refused: reported ``failed`` with the
  validator's lines, not retried for that deployment, and the agent keeps running what it runs.
- **Applied by restarting the agent in-process.** The running ``Agent`` stops gracefully (sources stop,
  pipelines finish what is queued, actions flush, the durable outbox is closed: no accepted record is
  lost) and a new ``Agent`` is built from the new config and started. A whole new agent rather than
  patching pipelines and sources in place: every part is built from one validated config, exactly as
  at a cold start, with no half-updated state; rather than re-executing the process: the same pid for
  the service manager, and a candidate that fails is replaced by the last good one in the same
  process, in about a second.
- **Health-gated.** The candidate is healthy when every source is connected within ``health_s``; then it
  becomes the *last good* config (``<data_dir>/fleet-config/``: ``<digest>.json`` holding the YAML, and
  ``state.json``, each written atomically: temp file, fsync, rename) and is reported ``healthy``. If it fails to start
  or its health check fails, the agent goes back to the last good config and reports ``rolled_back``
  with the reason; the fleet halts the rollout.
- **Crash-safe.** Before a candidate starts, ``state.json`` records the trial. A process that finds a
  trial on start died while trying it (crash, kill -9, power loss): that config is refused for that
  deployment, reported ``failed``, and the agent starts on the last good one. (A refusal holds for the
  deployment: a new deployment of the same YAML is an admin's new attempt and is tried again.)
- **Local file and fleet.** The local file is the first last-good config. Once the fleet gives an agent
  a config, the fleet config wins, across restarts and over local edits, until the fleet takes it back
  (``cloud-trainer config remove``, or a rollback to "no fleet config"): a desired state without a
  config sends the agent back to its local file (re-read at that moment, so local edits apply then).

Outcomes (``applied``, ``healthy``, ``failed``, ``rolled_back``) are kept in ``state.json`` until the
fleet has them, so each reaches it across restarts; the state is also in every state report
(``ConfigState``) and on ``/status`` (``config``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.config import (
    FLEET_ERRORS,
    FRAME_WINDOW_WHY,
    AgentConfig,
    ConfigError,
    env_taken,
    hide_env_values,
    load_config,
    parse_config,
    read_config_file,
    read_yaml,
    slot_folder_refusal,
)
from edge_agent.files import atomic_write_json, read_json_state, why_unread
from edge_agent.opcua_pins import FollowedNamespaces
from model_packager.text import printable
from protocols.redact import mask_credentials

if TYPE_CHECKING:
    from edge_agent.agent import Agent

log = logging.getLogger(__name__)

AGENT_OWN = ("agent", "cloud", "http")  # each agent's own sections: always from its local file
MAX_BYTES = 256 * 1024
# config deployments refused that state.json remembers (the latest): each holds for its deployment only, and
# without a bound every refusal of months of rollouts stayed in the file rewritten and fsynced at every step
MAX_REFUSED = 100


def fleet_document(data: bytes, where: str) -> dict:
    """The mapping of a fleet config's YAML (``ConfigError`` naming the problem)."""
    if len(data) > MAX_BYTES:
        raise ConfigError(
            [f"{where}: {len(data)} bytes; an agent configuration is at most {MAX_BYTES} bytes"]
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{where}: not UTF-8 text (byte {exc.start})"]) from exc
    doc = read_yaml(text, where)
    if not isinstance(doc, dict):
        raise ConfigError(
            [f"{where}: expected a mapping at the top level (sources:, models:, pipelines: ...)"]
        )
    own = [k for k in AGENT_OWN if k in doc]
    if own:
        raise ConfigError(
            [
                f"{where}: {k}: set by each agent's own local file (identity, link to the fleet, status "
                f"endpoint), never by the fleet; remove {k}: from the fleet config"
                for k in own
            ]
        )
    return doc


def check_fleet_config(data: bytes, where: str) -> list[str]:
    """The errors of a fleet config (none: valid), as far as they can be known away from the agents: what
    only an agent's machine can tell (its files, its environment) is checked there, on receipt."""
    errors: list[str] = []
    try:
        doc = fleet_document(data, where)
    except ConfigError as exc:
        errors += exc.errors
        try:  # the agent's own sections named: still say what else is wrong
            doc = read_yaml(data.decode("utf-8"), where)
        except (ConfigError, UnicodeDecodeError):
            return errors
        if not isinstance(doc, dict):
            return errors
        doc = {k: v for k, v in doc.items() if k not in AGENT_OWN}
    try:
        parse_config({**doc, "agent": {"id": "fleet-config-check"}}, where, local_checks=False)
    except ConfigError as exc:
        errors += exc.errors
    return errors


def refusal_key(deployment_id: str, digest: str) -> str:
    return f"{deployment_id}/{digest}"


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ConfigKeeper:
    """The agent-configuration state in ``folder``: the fleet configs' YAML by digest, and ``state.json``:
    ``last_good`` (None: the local file), ``trial`` (a candidate being started), ``refused``
    (``<deployment id>/<digest>`` -> reason: not tried again for that deployment) and ``unreported`` (outcomes the fleet does not have yet)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "state.json"
        self.state: dict[str, Any] = {"last_good": None, "trial": None, "refused": {}, "unreported": []}
        try:
            kept = read_json_state(self.path)  # bounded: the data folder is anyone's with the gateway's shell
            if not isinstance(kept, dict):
                raise ValueError(f"not a JSON object (a {type(kept).__name__})")
            self.state.update(kept)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:  # unreadable: start from the local file, say so
            log.error(
                "%s: unreadable (%s); starting from the local config file",
                printable(str(self.path)),
                printable(why_unread(exc), 300),
            )

    def save(self) -> None:
        atomic_write_json(self.path, self.state)

    def put_yaml(self, digest: str, data: bytes) -> None:
        atomic_write_json(self.folder / f"{digest}.json", {"digest": digest, "yaml": data.decode("utf-8")})

    def yaml(self, digest: str) -> bytes:
        path = self.folder / f"{digest}.json"
        try:
            data = json.loads(path.read_text())["yaml"].encode("utf-8")
        except (ValueError, KeyError, TypeError) as exc:
            raise OSError(f"{path}: unreadable ({exc})") from exc
        if digest_of(data) != digest:
            raise OSError(f"{path} does not match its digest (damaged on disk)")
        return data

    def note(self, info: dict, step: str, ok: bool, reason: str = "", health: dict | None = None) -> None:
        """An outcome for the fleet (kept until it has it)."""
        self.state["unreported"].append(
            {
                "deployment_id": info["deployment_id"],
                "digest": info["digest"],
                "step": step,
                "ok": ok,
                "reason": mask_credentials(reason)[:500],
                "health": health or {},
            }
        )
        self.state["unreported"] = self.state["unreported"][-50:]

    def refuse(self, info: dict, step: str, reason: str) -> None:
        # a source's error or a library's text may name a URL with its login
        reason = mask_credentials(reason)
        refused = self.state["refused"]
        key = refusal_key(info["deployment_id"], info["digest"])
        refused.pop(key, None)  # the latest last
        refused[key] = reason[:500]
        for old in list(refused)[:-MAX_REFUSED]:  # a refusal holds for its deployment: the fleet moves on
            del refused[old]
        self.note(info, step, False, reason)
        self.end_trial()
        self.save()

    def end_trial(self) -> None:
        """The trial over (refused, or stopped gracefully): what its slots served (``serving``) is kept as
        ``put_back`` until the host has put it back (``AgentHost._put_back``), so that a kill between the two (the
        trial's record gone, nothing put back yet) still has it put back at the next start."""
        trial = self.state.get("trial")
        serving = trial.get("serving") if isinstance(trial, dict) else None
        if isinstance(serving, dict) and serving:
            self.state["put_back"] = serving
        self.state["trial"] = None

    def forget_old(self) -> None:
        """Drop the YAML files of configs that are neither the last good one nor on trial."""
        keep = {(self.state.get(k) or {}).get("digest") for k in ("last_good", "trial")}
        for p in self.folder.glob("*.json"):
            if p.name != self.path.name and p.stem not in keep:
                p.unlink(missing_ok=True)


class AgentHost:
    """Runs the agent on the config it should run and swaps configs on the fleet's word (module docstring)."""

    def __init__(
        self, local_path: str | Path, *, launched_at: float | None = None, health_s: float = 10.0
    ) -> None:
        self.local_path = Path(local_path).resolve()
        self.launched_at = launched_at
        self.health_s = health_s
        self.local_cfg = load_config(self.local_path)
        self._lock: Any = None  # the data folder's lock, held from start to stop (start)
        self._keeper: ConfigKeeper | None = None
        self.agent: Agent | None = None
        self._wanted: Any = None
        self._kick = asyncio.Event()
        self.stop_asked = asyncio.Event()  # set by ``run``'s signal handlers: a wait at start ends at once
        self._task: asyncio.Task | None = None
        self._failing: str | None = None  # the last reconciling failure said (with its traceback)
        self._followed = FollowedNamespaces()  # what the OPC UA sources' ns= indexes meant to the agents run

    @property
    def keeper(self) -> ConfigKeeper:
        if self._keeper is None:  # read only once the folder is ours (start)
            self._keeper = ConfigKeeper(self.local_cfg.data_dir / "fleet-config")
        return self._keeper

    # ---- which config ----------------------------------------------------------------------------
    def _local(self) -> tuple[AgentConfig, dict]:
        try:  # re-read: local edits apply whenever the agent goes back to its local file
            self.local_cfg = load_config(self.local_path)
        except ConfigError as exc:
            log.error(
                "local config %s no longer validates (%s); using it as it was at start",
                self.local_path,
                exc.errors[0],
            )
        return self.local_cfg, {
            "source": "local",
            "deployment_id": "",
            "digest": "",
            "name": self.local_path.name,
            "status": "healthy",
            "reason": "",
        }

    def _merged(self, data: bytes, where: str) -> dict:
        doc = fleet_document(data, where)
        raw = read_config_file(self.local_path)
        return {**doc, **{k: raw[k] for k in AGENT_OWN if isinstance(raw, dict) and k in raw}}

    def effective(self, data: bytes, where: str, hide_env: bool = False) -> AgentConfig:
        """A fleet config merged with this agent's own sections, validated with its files (``ConfigError``).
        ``hide_env``: its errors name a gateway variable a field took, never its value (they go to the fleet)."""
        return parse_config(self._merged(data, where), where, str(self.local_path.parent), hide_env=hide_env)

    def _env_values(self, data: bytes, where: str) -> dict[str, str]:
        """The gateway variables a fleet config (merged with the agent's own sections) takes, and their values:
        what a reason sent to the fleet must never carry (``hide_env_values``). Best effort: none when the YAML
        cannot be read (nothing was substituted then)."""
        try:
            return env_taken(self._merged(data, where))
        except Exception:
            return {}

    def _last_good(self) -> tuple[AgentConfig, dict]:
        lg = self.keeper.state.get("last_good")
        if lg:
            try:
                cfg = self.effective(self.keeper.yaml(lg["digest"]), f"fleet config {lg['name']}")
                return cfg, {"source": "fleet", **lg, "status": "healthy", "reason": ""}
            except Exception as exc:  # whatever it is, the local file still runs
                msg = exc.errors[0] if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
                log.error(
                    "last good fleet config %s cannot be used (%s); running the local file", lg["name"], msg
                )
        return self._local()

    # ---- running -----------------------------------------------------------------------------------
    async def _launch(self, cfg: AgentConfig, info: dict) -> None:
        from edge_agent.agent import Agent

        agent = Agent(cfg, launched_at=self.launched_at, data_lock=self._lock)
        # a reload: an OPC UA source unchanged since an earlier agent follows the namespace order that one followed
        self._followed.hand_on(cfg, agent.sources)
        self.launched_at = None  # later agents count from their own start
        agent.on_desired_config = self._on_desired
        agent.config_state = info
        self.agent = agent
        try:
            await agent.start()
        except BaseException:
            self.agent = None
            await agent.stop()
            raise

    async def start(self) -> None:
        from edge_agent.agent import DataDirLock, StoppedBeforeStart

        # the folder first: a second agent started on it by mistake must not read or write the first
        # one's config state (it would refuse the candidate the first is trying: DataDirInUse instead); a wait
        # for readers of its lock file is given up when a stop is asked meanwhile
        self._lock = DataDirLock(self.local_cfg.data_dir)
        if not await self._lock.acquire_async(self.stop_asked):
            self._lock = None
            raise StoppedBeforeStart(self.local_cfg.data_dir / "agent.lock")
        try:
            await self._start_on_the_folder()
        except BaseException:
            self._lock.release()
            raise
        self._task = asyncio.create_task(self._work(), name="fleet-config")

    async def _start_on_the_folder(self) -> None:
        trial = self.keeper.state.get("trial")
        if trial:  # the last process ended while starting this config
            log.error(
                "fleet config %s (%s): the agent stopped while starting it; refused, back on the last good "
                "config",
                trial["name"],
                trial["digest"][:12],
            )
            self.keeper.refuse(
                trial,
                "failed",
                "the agent stopped while starting this config (crash, kill or power "
                "loss); back on the last good config",
            )
        cfg, info = self._last_good()
        await self._put_back()  # (the trial's ``serving``, kept as ``put_back`` by its refusal)
        try:
            await self._launch(cfg, info)
        except Exception:
            if info["source"] != "fleet":
                raise
            log.exception("last good fleet config %s failed to start; running the local file", info["name"])
            await self._launch(*self._local())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.agent is not None:
            await self.agent.stop()
        if self._keeper is not None and self.keeper.state.get(
            "trial"
        ):  # a graceful stop is no verdict on the candidate: tried again later
            self.keeper.end_trial()  # (what its start set aside put back at the next start)
            self.keeper.save()
        if self._lock is not None:
            self._lock.release()

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, stop gracefully."""
        from edge_agent.agent import run_until_signalled

        await run_until_signalled(self.start, self.stop, self.stop_asked)

    def _on_desired(self, config) -> None:
        """The desired agent configuration (``DesiredConfig`` or None), at every desired state."""
        self._wanted = config
        self._kick.set()

    async def _work(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            try:
                await self._reconcile(self._wanted)
                await self._flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # tried again at every desired state (every heartbeat_s): the same failure (a full disk for
                # days) is logged with its traceback once, then at debug level until reconciling works again
                said = f"{type(exc).__name__}: {exc}"
                if said != self._failing:
                    self._failing = said
                    log.exception("fleet config: reconciling failed; trying again at the next desired state")
                else:
                    log.debug("fleet config: reconciling failed again (%s)", said)
            else:
                self._failing = None

    async def _flush(self) -> None:
        """Send the outcomes the fleet does not have yet."""
        st = self.keeper.state
        uplink = getattr(self.agent, "uplink", None)
        if not st["unreported"] or uplink is None:
            return
        sent = 0
        for r in st["unreported"]:  # in order: stop at the first that does not get through
            if not await uplink.client.report_deployment(
                r["deployment_id"],
                r["step"],
                r["ok"],
                r["reason"],
                version=r["digest"],
                kind="config",
                health=r.get("health"),
            ):
                break
            sent += 1
        if sent:
            st["unreported"] = st["unreported"][sent:]
            self.keeper.save()

    async def _reconcile(self, want) -> None:
        if self.agent is None:  # a fallback that did not start: try again
            await self._fall_back()
        assert self.agent is not None  # _fall_back starts one (or raises)
        cur = self.agent.config_state or {"source": "local", "digest": ""}  # set by _launch
        if want is None:
            if cur["source"] == "fleet":  # the fleet let go: back to the local file
                log.info(
                    "fleet config: none in the desired state; back on the local file %s", self.local_path
                )
                self.keeper.state["last_good"] = None
                self.keeper.save()
                await self._swap(*self._local())
                self.keeper.forget_old()
            return
        info = {
            "deployment_id": want.deployment_id.split(":")[0][:64],
            "digest": want.digest[:64],
            "name": printable(want.name or "fleet-config", 64),
        }
        if (
            want.digest == cur["digest"]
            or refusal_key(info["deployment_id"], want.digest) in self.keeper.state["refused"]
        ):
            return
        where = f"fleet config {info['name']} ({want.digest[:12]})"
        # what the config takes from this gateway's environment: every reason that goes to the fleet (and to the
        # tenant's admins reading it there) names the field and the variable, never its value: a config naming
        # ${GW_TOKEN:-1883} in a port passed the cloud's check and sent the gateway's token back in its refusal
        values = self._env_values(want.yaml, where)
        try:
            if digest_of(want.yaml) != want.digest:
                raise ConfigError([f"{where}: the YAML does not match its digest"])
            cfg = self.effective(want.yaml, where, hide_env=True)
        except Exception as exc:  # refused: the agent keeps running what it runs
            # anything validation raises refuses this config: the same bytes would fail the same way at
            # every desired state, and the fleet would never hear why
            # hidden before a text is cut: a value straddling the cut kept its start
            reason = (
                hide_env_values("; ".join(exc.errors[:FLEET_ERRORS]), values, where)
                if isinstance(exc, ConfigError)
                else f"{where}: cannot be validated: {type(exc).__name__}: "
                f"{printable(hide_env_values(str(exc), values), 300)}"
            )
            log.error("fleet config refused: %s", mask_credentials(reason))
            self.keeper.refuse(info, "failed", reason)
            return
        # slots serving under the running config -> (their folder, the package folder served): one the candidate's
        # start set aside (a refused_versions of it, a key rotation) is put back for the fall back, which found
        # nothing installed and left the slot failed until the fleet sent the package again (for ever for a local one).
        # Kept with the trial: a process ended during it (a kill, a power cut) has them put back at the next start
        serving = {
            n: (sl.store.root, f)
            for n, sl in self.agent.slots.items()
            if sl.failed is None and (f := sl.store.state().get("current"))
        }
        # camera pipelines with a window under the running config (a config warning: each judges nothing): one the
        # candidate brings is its doing (``_refuse_windowed``)
        windowed_before = {p.name for p in self.agent.pipelines if p.window_ignored}
        self.keeper.put_yaml(want.digest, want.yaml)
        self.keeper.state["trial"] = {
            **info,
            "started": time.time(),
            "serving": {n: f for n, (_, f) in serving.items()},
        }
        self.keeper.save()
        log.info("%s: applying (restarting the agent on it)", where)
        # slots failed under the running config -> their configured package: the candidate did not bring those (a
        # config changing a camera's fps was rolled back, for good, on a gateway waiting for the fleet's package to a
        # failed slot). Not the failure's text: it names the trusted keys, and a config adding one was rolled back
        failed_before = {n: sl.config.package for n, sl in self.agent.slots.items() if sl.failed is not None}
        # pipelines judging under the running config -> (their slot, their source, what they read): one put on a slot
        # with no package (a slot renamed by a typo, a pipeline moved to a new fleet-fed slot), or renamed with its
        # slot, is the candidate's doing
        judging = _judging(self.agent)
        try:
            await self._swap(cfg, {"source": "fleet", **info, "status": "applied", "reason": ""})
            await self._refuse_windowed(windowed_before)
            await self._refuse_failed_slots(failed_before, judging)
            self.keeper.note(info, "applied", True)
            self.keeper.save()
            await self._flush()
            why = await self._health(self.agent, values)
        except Exception as exc:  # a source's error may quote a host or login the environment gave
            why = (
                f"the agent did not start on it: {type(exc).__name__}: "
                f"{printable(hide_env_values(str(exc), values), 300)}"
            )
        if why is None:
            self.keeper.state.update(last_good=info, trial=None)
            health = _pipeline_health(self.agent)
            held = _held_note(health)
            self.keeper.note(info, "healthy", True, held, health=health)
            self.keeper.save()
            self.keeper.forget_old()
            assert self.agent is not None
            self.agent.config_state = {"source": "fleet", **info, "status": "healthy", "reason": ""}
            if held:
                log.warning("%s: %s", where, held)
            log.info("%s: healthy; it is the last good config now", where)
            return
        why = mask_credentials(why)
        log.error("%s: %s; back on the last good config", where, why)
        self.keeper.refuse(info, "rolled_back", why)
        await self._fall_back(serving)
        assert self.agent is not None
        self.agent.config_state = {**(self.agent.config_state or {}), "reason": f"{where} rolled back: {why}"}

    async def _fall_back(self, serving: Mapping[str, tuple[Path, str]] | None = None) -> None:
        """Run the last good config; if even that does not start, the local file (which started this process).
        ``serving``: slot -> (its folder, the package folder it served) before a candidate that is rolled back: one
        the candidate's start set aside is put back first (``ModelStore.put_back``)."""
        cfg, info = self._last_good()
        try:
            await self._swap(cfg, info, serving)
        except Exception:
            if info["source"] == "local":
                raise
            log.exception("the last good fleet config did not start again; running the local file")
            self.keeper.state["last_good"] = None
            self.keeper.save()
            await self._swap(*self._local())

    async def _refuse_failed_slots(
        self,
        before: Mapping[str, str | None],
        judging: Mapping[str, tuple[str, str, tuple[str, ...]]],
    ) -> None:
        """A candidate whose agent started with a model slot failed (its package refused, nothing installed): an
        agent serves the rest then (``FailedAtStart``), but such a candidate did not start: it is stopped and the
        error raised, as when its start raised (``_launch``), and the host goes back on the last good config. A slot
        failed so on the same configured package under the config it replaced (``before``: slot -> package) is not
        the candidate's doing: the fleet's package fixes it. Nor is a slot failed only for having no package yet
        (``ModelSlot.waiting_for_fleet``: it follows the fleet, none configured, none installed): the state the
        fleet's deployment fills next. Rolled back, a config adding a fleet-fed slot, or leaving a failed slot's
        refused package to the fleet, was refused for good, told "waiting for the fleet's deployment", and the
        deployment was then declined: the agent has no such slot. But a pipeline that judges under the running config
        (``judging``: pipeline -> (slot, source, what it reads)) put on a failed slot is: a slot renamed by a typo, or
        a pipeline moved to a new fleet-fed slot, was applied and reported healthy, its items unjudged (UNSURE) on
        every agent of the rollout (a renamed slot's deployment declined: the agent has no such slot). So is any other
        pipeline on a failed slot that reads what a judging pipeline gone from the candidate read
        (``_taken_judging``)."""
        from edge_agent.models.slot import FailedAtStart

        agent = self.agent
        if agent is None:
            return
        taken = _taken_judging(agent, judging)
        failed = [
            (
                n,
                f"{taken[n]}, and judges nothing here: {s.failed}" if n in taken else s.failed,
            )
            for n, s in agent.slots.items()
            if s.failed is not None
            and (
                n in taken or (not s.waiting_for_fleet and (n not in before or before[n] != s.config.package))
            )
        ]
        if failed:
            # named first: a slot the candidate brings failed, before one failed under the running config too (a
            # waiting pipeline kept on the camera of the judging one it drops, beside the renamed one taking its place)
            failed.sort(key=lambda f: f[0] in before)
            self.agent = None
            await agent.stop()
            raise FailedAtStart(f"model slot {failed[0][0]!r}: {failed[0][1]}")

    async def _refuse_windowed(self, before: Collection[str]) -> None:
        """A candidate giving a camera pipeline a window (a config warning: the pipeline drops every frame and judges
        nothing, for good) did not start, as one whose slot failed on its own package (``_refuse_failed_slots``): it
        is stopped and the error raised, and the host goes back on the last good config. Applied, it was reported
        healthy and held the heartbeat of each PLC the pipeline writes through for good, the line in its safe state on
        every agent of the rollout, where no package the fleet sends next mends it. A pipeline so under the running
        config (``before``: a local file kept from before the window was a warning) is not the candidate's doing: it
        runs as it did (its healthy report names what it holds, ``_held_note``)."""
        from edge_agent.models.slot import FailedAtStart

        agent = self.agent
        if agent is None or not (
            new := [p.name for p in agent.pipelines if p.window_ignored and p.name not in before]
        ):
            return
        self.agent = None
        await agent.stop()
        raise FailedAtStart(
            f"pipeline {new[0]}: window: {FRAME_WINDOW_WHY}; it would judge nothing, its camera's every frame dropped"
        )

    async def _swap(
        self, cfg: AgentConfig, info: dict, put_back: Mapping[str, tuple[Path, str]] | None = None
    ) -> None:
        """Stop the running agent gracefully (its outbox closed: nothing accepted is lost), start one on ``cfg``,
        the package folders of ``put_back`` (slot -> (its folder, package folder)) put back in between
        (``_fall_back``)."""
        if self.agent is not None:
            await self.agent.stop()
            self._followed.remember(self.agent.cfg, self.agent.sources)
            self.agent = None
        await self._put_back(put_back)
        await self._launch(cfg, info)

    async def _put_back(self, serving: Mapping[str, tuple[Path, str]] | None = None) -> None:
        """The package folders of ``serving`` (slot -> (its folder, package folder)) a candidate's start set aside,
        put back for the last good config (``ModelStore.put_back``); with none given, those the config state keeps
        (``put_back``: a trial ended by a kill, or a put back cut short by one). That record is dropped once done."""
        from edge_agent.models.store import ModelStore

        pending = self.keeper.state.get("put_back")
        for name, (root, folder) in (serving or self._serving_before(pending)).items():
            # (a store read afresh: the candidate's wrote its state.json since)
            if root.is_dir() and await asyncio.to_thread(ModelStore(root, clean=False).put_back, folder):
                log.warning(
                    "model slot %r: %s, set aside by the config rolled back, put back for the last good config",
                    name,
                    printable(folder, 200),
                )
        if pending:
            self.keeper.state["put_back"] = None
            self.keeper.save()

    def _serving_before(self, kept: Any) -> dict[str, tuple[Path, str]]:
        """What the slots served before a trial (its record's ``serving``, kept as ``put_back``: slot -> package
        folder), each slot's folder where this data folder keeps it; a name that is no slot's folder (the record is
        a file anyone with the gateway's shell can edit) is passed over."""
        models = Path(self.local_cfg.data_dir) / "models"
        return {
            n: (models / n, f)
            for n, f in (kept.items() if isinstance(kept, dict) else ())
            if isinstance(n, str) and isinstance(f, str) and slot_folder_refusal(n, {}) is None
        }

    async def _health(self, agent, values: Mapping[str, str] | None = None) -> str | None:
        """None when every source is connected within ``health_s``; else why not, every value of ``values`` (the
        gateway variables the config takes) hidden before the source's error is cut (``hide_env_values``)."""
        deadline = time.monotonic() + self.health_s
        while True:
            bad = [
                (n, s)
                for n, s in agent.sources.items()
                if str(getattr(s.state, "value", s.state)) != "connected"
            ]
            if not bad:
                return None
            if time.monotonic() >= deadline:
                n, s = bad[0]
                err = getattr(s.stats, "last_error", None)
                return f"source {n}: not connected within {self.health_s:g} s" + (
                    f" ({printable(hide_env_values(str(err), values or {}), 200)})" if err else ""
                )
            await asyncio.sleep(0.2)


# the settings that say where a source reads (a camera's url, a broker and its subscriptions, an OPC UA server and
# its nodes) and which tags they make (a Sparkplug host's mapping), not how (its rate, queue, timeouts,
# reconnects): a source renamed with its fps changed reads the same
_WHERE_FIELDS = ("type", "url", "host", "port", "subscriptions", "sparkplug", "endpoint", "nodes", "username")


def _reads(cfg: AgentConfig, p: Any) -> tuple[str, ...]:
    """What pipeline settings ``p`` read under ``cfg``: its window's waveform tag (the pipelines of one MQTT source
    read each its machine's tag; a camera pipeline its frames) from its source, the source known by its name, by its
    settings and by where it reads (``_WHERE_FIELDS``: a source renamed reads the same, its fps changed or not)."""
    tag = p.window.waveform if p.window is not None else None
    src = cfg.sources.get(p.source)
    given = src.model_dump(mode="json") if src is not None else None
    keys = [
        json.dumps(["name", p.source, tag]),
        json.dumps(["settings", given, tag], sort_keys=True, default=str),
    ]
    where = {k: given[k] for k in _WHERE_FIELDS if k in given} if isinstance(given, dict) else {}
    if len(where) > 1:  # (a type of source with none of them: its type alone would match all of its kind)
        keys.append(json.dumps(["where", where, tag], sort_keys=True, default=str))
    return tuple(keys)


def _judging(agent: Any) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """The pipelines judging under ``agent``'s config (their slot serves) -> (their slot, their source, ``_reads``)."""
    return {
        p.name: (p.s.model, p.s.source, _reads(agent.cfg, p.s))
        for p in agent.pipelines
        if p.slot.failed is None
    }


def _taken_judging(agent: Any, judging: Mapping[str, tuple[str, str, tuple[str, ...]]]) -> dict[str, str]:
    """The slots of ``agent`` (a candidate's) whose pipelines take judging away -> why: a pipeline that judged under
    the running config (``judging``, ``_judging``'s), or any other reading what a judging pipeline the candidate
    drops read (``_reads``: the slot and its pipeline renamed together, the source too, or a judging pipeline replaced
    by one waiting for a new model: keep the judging one until the new slot's package serves, then remove it in a
    later config). Matched on the source's name alone, a config removing one machine's pipeline and adding another
    machine's on the same MQTT source (its own tag) was rolled back, and one renaming the source too was applied, its
    pipeline judging nothing. Matched only for a pipeline new to the candidate, a rename onto the name of a pipeline
    that ran unjudged (on a slot waiting for the fleet) was applied, the camera judged by nothing: the name a
    pipeline had says nothing of what it reads now."""
    here = {p.name for p in agent.pipelines}
    # what it read -> (a judging pipeline gone from the candidate, its slot, its source)
    left: dict[str, tuple[str, str, str]] = {}
    for name, (slot, source, reads) in judging.items():
        if name not in here:
            for key in reads:
                left.setdefault(key, (name, slot, source))
    taken: dict[str, str] = {}  # failed slot -> which judging this candidate takes away
    for p in agent.pipelines:
        if p.name in judging:
            slot, source, _ = judging[p.name]
            now = "" if source == p.s.source else f" (now source {p.s.source}, source {source} then)"
            why = f"pipeline {p.name} judged on slot {slot!r} under the running config{now}"
        elif hit := next((left[k] for k in _reads(agent.cfg, p.s) if k in left), None):
            gone, slot, source = hit
            was = "" if source == p.s.source else f" (source {source} under the running config)"
            why = (
                f"pipeline {p.name} reads source {p.s.source}{was}, which pipeline {gone} (not in this config) "
                f"judged on slot {slot!r} under the running config"
            )
        else:
            continue
        taken.setdefault(p.s.model, why)
    return taken


def _pipeline_health(agent) -> dict:
    """What the fleet's gate reads from a healthy report: the pipelines' error rate since the start. An item the
    model failed on is an UNSURE result and an error: counted once, as an error (``results`` are the items
    judged), so a model failing on every item reads 1.0, as when such items were dropped (not 0.5). Pipelines on a
    slot waiting for the fleet's first package, which the config is not rolled back for (``_refuse_failed_slots``),
    are named apart (``waiting_for_fleet``) and their items with no model (UNSURE no_model) not counted: they read
    as the config's errors, and the fleet's max_error_rate gate failed a config adding such a slot and halted its
    rollout. Their other errors are (a result its actions could not be handed, an outbox refusing writes): left out
    with the pipeline whole, a config breaking them read 0. So are the pipelines on a slot failed on its configured
    package that the config keeps as it is (not rolled back for either: the fleet's package fixes it), named apart
    (``no_model``): counted whole, a config changing a camera's fps on such a gateway read 1.0 and the gate failed it."""
    unserved = [p for p in agent.pipelines if p.slot.failed is not None]
    waiting = [p for p in unserved if p.slot.waiting_for_fleet]
    pipes = [p for p in agent.pipelines if p.slot.failed is None]
    failed = sum(p.stats.model_failed for p in pipes)
    # (an unserved pipeline's UNSURE no_model items are its model_failed: none judged, none counted)
    results = sum(p.stats.results - p.stats.model_failed for p in agent.pipelines)
    errors = sum(sum(p.stats.errors.values()) for p in pipes) + sum(
        sum(p.stats.errors.values()) - p.stats.errors["no_model"] for p in unserved
    )
    out: dict[str, Any] = {
        "error_rate": errors / max(1, results + errors),
        "results": results,
        "model_failed": failed,
    }
    if waiting:
        out["waiting_for_fleet"] = sorted(p.name for p in waiting)
    if others := sorted(p.name for p in unserved if not p.slot.waiting_for_fleet):
        out["no_model"] = others
    # an OPC UA source's heartbeat (the PLC's watchdog output) such a slot holds (``heartbeat_holders``): the PLC's
    # watchdog trips and its line goes to its safe state until a package serves; it was reported healthy, unsaid
    held = {
        n: names
        for n in agent.heartbeat_feeds
        if getattr(agent.sources[n].settings, "heartbeat", None) is not None
        and (names := sorted(p.name for p in agent.heartbeat_holders(n)))
    }
    if held:
        out["heartbeats_held"] = held
    # held later, once a package serves a slot beside theirs first (``heartbeat_holders_to_come``): two new fleet-fed
    # slots sharing one reject gate reported none held, and the first package held the PLC's heartbeat, unsaid
    if later := {
        n: names
        for n in agent.heartbeat_feeds
        if getattr(agent.sources[n].settings, "heartbeat", None) is not None
        and (names := sorted(p.name for p in agent.heartbeat_holders_to_come(n)))
    }:
        out["heartbeats_held_once_served"] = later
    # a camera pipeline with a window (a config warning): it judges nothing, for good, and holds a PLC's heartbeat
    if ignored := sorted(p.name for p in agent.pipelines if p.window_ignored):
        out["judges_nothing"] = ignored
    return out


def _held_note(health: Mapping[str, Any]) -> str:
    """The healthy report's reason (the fleet's rollout shows it by the agent): the heartbeats its model slots hold
    then (``heartbeats_held``: source -> pipelines) and those they will hold once a package serves a slot beside a
    waiting pipeline's first (``heartbeats_held_once_served``), or "". ``/status`` says while it lasts (the source's
    ``heartbeat_held``)."""
    held = health.get("heartbeats_held") or {}
    ignored = set(health.get("judges_nothing") or ())
    said = []
    for n, pipes in held.items():
        if waiting := [p for p in pipes if p not in ignored]:
            said.append(
                f"heartbeat of source {n} held until the fleet's package serves: no model yet for the pipelines "
                f"writing through it ({', '.join(waiting)}); the PLC's watchdog falls back to its safe state meanwhile"
            )
        if windowed := [p for p in pipes if p in ignored]:
            said.append(
                f"heartbeat of source {n} held: the pipelines writing through it ({', '.join(windowed)}) judge "
                f"nothing (window: {FRAME_WINDOW_WHY}); the PLC's watchdog falls back to its safe state"
            )
    for n, pipes in (health.get("heartbeats_held_once_served") or {}).items():
        said.append(
            f"heartbeat of source {n} held once a package serves a slot beside the pipelines writing through it "
            f"({', '.join(pipes)}) before their own: an OK part's value there follows their unjudged parts'; the "
            "PLC's watchdog falls back to its safe state meanwhile"
        )
    return "; ".join(said)
