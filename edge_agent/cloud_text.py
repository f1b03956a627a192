"""What the agent's texts for the cloud may say of its gateway: its events and state reports, with the gateway's
variables and logins hidden.

The agent is the tenant's own, and its texts help the tenant's admin (a source's last error names the host it cannot
reach). Two things never leave the gateway in them, whatever a source, a library or an action wrote:
- a value the config took from the gateway's environment (``${PLC_HOST}``, ``${CAM_USER}``): shown as
  ``<$PLC_HOST>``, as a fleet config's refusal shows it (``edge_agent.config.env_hider``: the same forms and
  bounds: a value of 4-7 characters inside a word, or of 1-3 not quoted whole, is left);
- a login: a URL's user name and password (``opc.tcp://***@plc:4840``, ``protocols.redact.mask_logins``) and the
  value of a source's or action's login field (``username``, ``password``, a token...), shown as
  ``<sources.plc.username>``.
Only free text is rewritten (``FREE_TEXT``: a ``message``, a ``last_error``, a ``reason``...): a field that names
something (``source``, ``pipeline``, ``slot``, ``package``, a version, ``issued_by``) goes as it is, for the cloud
pairs an episode's start and end by it and names a deployment's version by it. A value the agent sends in clear
anyway (the labels site and line, the agent's id) or one equal to a name the config gives (a source, model, pipeline,
action or rule) is never hidden: hiding it protects nothing and rewrote what the console reads.
A host or user written in the config itself stays in the gateway's own log, status page and MQTT events as it was.
The labels a state report carries (site, line) are sent as they are: the fleet selects agents by them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, SecretStr

from edge_agent.config import AgentConfig, env_hider
from protocols import json_codec
from protocols.redact import mask_logins

# the name of a field holding a login or part of one (``username``, ``password``, ``api_key``, ``auth_token``)
_LOGIN_FIELD = re.compile(
    r"(?:^|_)(?:user|username|login|password|passphrase|passwd|secret|token|api_?key|authorization)$", re.I
)


def login_values(cfg: AgentConfig) -> dict[str, str]:
    """``sources.<name>.<field>`` (and ``actions.``) -> the value of each login field the config's sources and
    actions have (a ``SecretStr``'s value, or a text field named like a login), in nested settings too but not in
    lists (a PLC's 30,000 nodes, subscriptions: no login there; walking them took 0.3 s at each agent's start)."""
    found: dict[str, str] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, BaseModel):
            for field in type(node).model_fields:
                value = getattr(node, field, None)
                where = f"{path}.{field}"
                if isinstance(value, SecretStr):
                    found[where] = value.get_secret_value()
                elif isinstance(value, str) and _LOGIN_FIELD.search(field):
                    found[where] = value
                else:
                    walk(value, where)
        elif isinstance(node, dict):  # a map of headers or options: its keys name the login
            for k, v in node.items():
                if isinstance(v, str) and isinstance(k, str) and _LOGIN_FIELD.search(k):
                    found[f"{path}.{k}"] = v
                else:
                    walk(v, f"{path}.{k}")

    for section in ("sources", "actions"):
        for name, settings in (getattr(cfg, section, None) or {}).items():
            walk(settings, f"{section}.{name}")
    return {k: v for k, v in found.items() if v}


# the fields of an event (docs/events.md), a state report's health or a result that hold free text: only these are
# rewritten (a source_down's last_error, an outbox_corrupt's moved_to, a refusal's reason, a command's detail); and a
# publish_down's client_id: a config's value (``${GW_ID}-pub``), which named in clear would also unhide it in the text
FREE_TEXT = frozenset({"message", "last_error", "reason", "detail", "moved_to", "error", "client_id"})
CLEAR_CACHE = 4096  # the records' clear values whose hidden form is kept (a source's, a version: a few dozen)


def names_in_clear(cfg: AgentConfig) -> set[str]:
    """What the agent tells the cloud in clear anyway: its id and labels, and the names its config gives."""
    names = {cfg.agent.id, cfg.agent.site, cfg.agent.line}
    names.update(cfg.sources, cfg.models, cfg.actions)
    names.update(p.name for p in cfg.pipelines)
    names.update(getattr(r, "name", "") for r in cfg.rules)
    return {n for n in names if n}


class CloudText:
    """``text(s)``, ``tree(obj)`` and ``payload(bytes)``: a text, the free text of a JSON-like tree (``FREE_TEXT``),
    or of a recorded event's JSON, as the cloud may be told it. The hiders are built once per config (an agent is
    built anew for another config)."""

    def __init__(self, cfg: AgentConfig) -> None:
        clear = names_in_clear(cfg)
        env = {k: v for k, v in cfg.env_values.items() if v not in clear}
        self._env = env_hider(env)
        logins = {k: v for k, v in login_values(cfg).items() if v not in clear}
        # the hider is given a name for each that no variable has (a digit first; letters, digits, _: what its
        # replacement may hold), then shown by its place: a source named 'line3\plc1' made re.sub read '\p' as an
        # escape and every text raise (the agent never started), and one named '\g<0>' put the login back
        self._login_names = {f"<${i}_LOGIN>": f"<{place}>" for i, place in enumerate(logins)}
        hidden = {f"{i}_LOGIN": value for i, value in enumerate(logins.values())}
        self._logins: Callable[..., str] = env_hider(hidden) if hidden else _same
        # how a hidden value is shown, longest first: kept as it is when a text is hidden again (a stored backlog is
        # hidden at send, also one this agent recorded before a restart): a user 'admin' on a source 'admin-plc'
        # hidden twice read '<sources.<sources.admin-plc.username>-plc.username>'
        self._placeholders = sorted(
            {f"<${name}>" for name in env} | set(self._login_names.values()), key=len, reverse=True
        )
        # value -> how it is shown hidden: put back where the same record sends it in clear (``text``'s ``clear``)
        self._shown: dict[str, list[str]] = {}
        for name, value in env.items():
            self._shown.setdefault(value, []).append(f"<${name}>")
        for place, value in logins.items():
            self._shown.setdefault(value, []).append(f"<{place}>")
        # a name sent in clear beside every text (an event's source) as the hiders leave it when a hidden value is
        # one of its words -> the name: put back whole after hiding (``text``). Hidden inside, 'admin-plc' read
        # '<sources.admin-plc.username>-plc' beside source: admin-plc, which told the login. Put back, not held
        # out before hiding: a name held out split a secret it stood in ('press' in a password 'press#2024')
        self._values = [v for v in {*env.values(), *logins.values()} if v]
        self._clear_hidden: dict[str, str] = {}  # a record's clear value -> as the hiders leave it
        self._names_hidden: dict[str, str] = {}
        for name in sorted(clear, key=len):  # a longer name's hidden form wins over a shorter one's
            if any(v in name for v in self._values) and (shown := self._hide(name)) != name:
                self._names_hidden[shown] = name

    def _hide(self, s: str) -> str:
        out = self._logins(self._env(mask_logins(s)))
        for shown, name in self._login_names.items():  # a field's place, not a variable: no '$'
            if shown in out:
                out = out.replace(shown, name)
        return out

    def text(self, s: str, clear: Iterable[str] = ()) -> str:
        """``s`` as the cloud may be told it; a value in ``clear`` (what the same record names in clear: a
        deployment's version, an event's source) stays as it is."""
        clear = tuple(clear)
        held: list[str] = []
        if "<" in s:  # a text hidden already: its placeholders held out of the hiders' reach, as they are
            for shown in self._placeholders:
                if shown in s:
                    s = s.replace(shown, f"\x00{chr(0xE000 + len(held))}\x00")
                    held.append(shown)
        out = self._hide(s)
        for i, shown in enumerate(held):
            out = out.replace(f"\x00{chr(0xE000 + i)}\x00", shown)
        # a name sent in clear (the config's, the record's own) whole again where the hiders took a word of it
        names = dict(self._names_hidden)
        for value in clear:
            if value and any(v in value for v in self._values):
                hidden = self._clear_hidden.get(value)
                if hidden is None:
                    # once per value (a tree's every free text names the same record's values: hiding each again
                    # took a 100-field health report 0.56 s of the loop instead of 0.014)
                    if len(self._clear_hidden) >= CLEAR_CACHE:
                        self._clear_hidden.clear()
                    hidden = self._clear_hidden[value] = self._hide(value)
                if hidden != value:
                    names[hidden] = value
        for shown, name in sorted(names.items(), key=lambda kv: len(kv[0]), reverse=True):
            if shown in out:
                # where the hiders' bounds put it (no letter or digit beside it: 'plc-admin.factory' too)
                out = re.sub(rf"(?<![^\W_]){re.escape(shown)}(?![^\W_])", _as_is(name), out)
        for value in clear:
            for shown in self._shown.get(value, ()):
                if shown in out:
                    out = out.replace(shown, value)
        return out

    def tree(self, obj: Any) -> Any:
        """``obj`` with the texts under a ``FREE_TEXT`` key (at any depth) hidden, but for a value the tree names in
        clear elsewhere (a ``swap_refused``'s reason naming its ``to_version``); every other value as it is."""
        clear: set[str] = set()
        _named(obj, False, clear)
        return self._tree(obj, False, clear)

    def _tree(self, obj: Any, free: bool, clear: set[str]) -> Any:
        if isinstance(obj, str):
            return self.text(obj, clear) if free else obj
        if isinstance(obj, dict):
            return {k: self._tree(v, free or k in FREE_TEXT, clear) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self._tree(v, free, clear) for v in obj]
        return obj

    def payload(self, data: bytes) -> bytes:
        """A recorded event's or alarm's JSON as it is sent (``edge_agent.uplink``): its free text hidden with this
        config's values: the outbox's own events (``outbox_corrupt``'s ``moved_to``) and a backlog a former version
        stored unhidden. The same bytes when nothing changes (an event this agent recorded was hidden then)."""
        if not any(f'"{k}"'.encode() in data for k in FREE_TEXT):
            return data
        try:
            obj = json.loads(data)
        except ValueError:
            return data
        if not isinstance(obj, dict):
            return data
        shown = self.tree(obj)
        if shown == obj:
            return data
        return json_codec.dumps(shown, separators=(",", ":")).encode()  # as the outbox writes it


def _as_is(text: str) -> Callable[[re.Match[str]], str]:
    """A replacement for ``re.sub`` that is ``text`` as it is (a name may hold a backslash: no template)."""
    return lambda _m: text


def _named(obj: Any, free: bool, into: set[str]) -> None:
    """The texts of ``obj`` that are not free text (``FREE_TEXT``): what it names in clear."""
    if isinstance(obj, str):
        if not free:
            into.add(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _named(v, free or k in FREE_TEXT, into)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _named(v, free, into)


def _same(text: str, where: str | None = None) -> str:
    return text
