"""Validating an agent configuration in the cloud with the agent's own validator, before a rollout.

The cloud and the agent meet only on the wire (DESIGN.md: ``cloud_trainer`` never imports ``edge_agent``),
so the cloud does not import the validator: it runs it, ``edge-agent validate --fleet FILE`` of the same
installation, in a child process (about half a second; an admin's act, not a hot path). That is the very
code the agents run on the document they receive, so a config the cloud accepts is one the agents'
validator accepts, field for field; what only an agent can check (its files, its broker answering) is
checked there, and a failure there halts the rollout like a model's. The validator's process gets none of the
service's environment variables but those a Python process needs (``CHILD_ENV``), and substitutes no ``${VAR}`` from
any environment: a tenant's config cannot read the platform's credentials back in a refusal.

``validate_agent_config(data, name)`` raises ``ValueError`` with the validator's lines, each naming the
field (``NAME: pipelines[0].threshold: ...``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

MAX_BYTES = 256 * 1024  # an agent configuration is a page of YAML, not a payload
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# the service's environment variables the validator's process is given (and LC_*): nothing a tenant's config could
# read back (``${VAR}`` is not substituted from the environment in the cloud's check either: edge_agent.config)
CHILD_ENV = frozenset(
    {"PATH", "HOME", "LANG", "LANGUAGE", "TMPDIR", "TEMP", "TMP", "SYSTEMROOT", "VIRTUAL_ENV", "PYTHONPATH"}
    # where an interpreter built with a shared libpython outside the system's folders finds it and its library
    | {"LD_LIBRARY_PATH", "PYTHONHOME"}
)


def validate_agent_config(data: bytes, name: str = "agent-config", timeout_s: float = 60.0) -> None:
    if not data:
        raise ValueError(f"{name}: the agent configuration is empty")
    if len(data) > MAX_BYTES:
        raise ValueError(f"{name}: {len(data)} bytes; an agent configuration is at most {MAX_BYTES} bytes")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name}: not UTF-8 text (byte {exc.start})") from exc
    if not _NAME_RE.fullmatch(name):
        name = "agent-config"
    with tempfile.TemporaryDirectory(prefix="fleet-config-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        # the validator reads a tenant's document: it gets none of the service's own variables (the object store's
        # and database's credentials), only what a Python process needs to start
        env = {k: v for k, v in os.environ.items() if k in CHILD_ENV or k.startswith("LC_")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(_root()), os.environ.get("PYTHONPATH")] if p)
        try:
            r = subprocess.run(
                [sys.executable, "-m", "edge_agent.cli", "validate", "--fleet", str(path)],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env=env,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"the agent's validator did not answer within {timeout_s:.0f} s") from exc
    if r.returncode == 0:
        return
    lines = [ln.replace(str(path), name) for ln in r.stderr.splitlines() if ln.strip()]
    if not lines or "Traceback" in r.stderr:
        raise RuntimeError(f"the agent's validator failed (exit {r.returncode}): {r.stderr.strip()[-500:]}")
    raise ValueError("agent configuration refused: " + "; ".join(lines[:20]))


def _root() -> Path:
    """The folder holding the installation's packages (so the child finds ``edge_agent`` as this process does)."""
    return Path(__file__).resolve().parents[2]
