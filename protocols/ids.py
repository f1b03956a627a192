"""Identifier rules shared by the agent and the fleet service. Imports nothing of ours."""

from __future__ import annotations

import re

# an agent's id: the agent config's ``agent.id`` and the CN of its certificate, so never a path, a
# tenant-qualified name ('beta/gw-b') or empty
AGENT_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"
AGENT_ID_RE = re.compile(AGENT_ID_PATTERN)
