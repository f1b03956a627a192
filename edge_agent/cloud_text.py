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
A host or user written in the config itself stays in the gateway's own log, status page and MQTT events as it was.
The labels a state report carries (site, line) are sent as they are: the fleet selects agents by them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, SecretStr

from edge_agent.config import AgentConfig, env_hider
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


class CloudText:
    """``text(s)`` and ``tree(obj)``: a text, or every text in a JSON-like tree, as the cloud may be told it. The
    hiders are built once per config (an agent is built anew for another config)."""

    def __init__(self, cfg: AgentConfig) -> None:
        self._env = env_hider(cfg.env_values)
        logins = login_values(cfg)
        self._logins: Callable[..., str] = env_hider(logins) if logins else _same
        self._login_names = {f"<${name}>": f"<{name}>" for name in logins}

    def text(self, s: str) -> str:
        out = self._logins(self._env(mask_logins(s)))
        for shown, name in self._login_names.items():  # a field's place, not a variable: no '$'
            if shown in out:
                out = out.replace(shown, name)
        return out

    def tree(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {k: self.tree(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.tree(v) for v in obj]
        return obj


def _same(text: str, where: str | None = None) -> str:
    return text
