"""What every action plugin is: a settings class (``ActionSettings``) and an ``act`` function.

An action type is one row of ``edge_agent.config.ACTION_PLUGINS``: ``type -> (settings
"module:Class", implementation "module:function")``, imported lazily like ``devices.SOURCE_TYPES``.
The settings class is the plugin's config (``extra="forbid"``, frozen) and owns its cross-checks:
``source_fields`` names the fields that refer to a source and the source type each needs,
``problems()`` returns what else is wrong within it, and ``cross_check(name, cfg, report)`` what is
wrong against the rest of the config. The implementation is

    async def act(ctx, name, action, result, item, value=None) -> str | None

called for each result whose ``when`` holds (``ctx``: the ``ActionRunner``, with ``cfg``,
``sources``, ``stats[name]`` and ``state[name]``, a dict of the action's own state); it returns
``"queued"`` when the work is held for later (e.g. a broker that is away), else None, and raises
to fail (``exc.retryable = False``: not retried). Two kinds are driven differently by the runner:
``OutputAction`` subclasses (level / on_change / pulse writes; ``act`` gets the ``value`` to write)
and ``alarm`` (hysteresis; its ``act`` signals a transition). docs/plugins.md shows a whole one.
This module imports pydantic only: validating a config must not load a protocol library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class RetrySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(3, ge=1, le=100)
    backoff_s: float = Field(0.5, ge=0)


class ActionSettings(BaseModel):
    """The options every action has; a plugin adds ``type: Literal["<its type>"]`` and its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # field -> the source type it must name (checked by `validate` against the config's sources)
    source_fields: ClassVar[dict[str, str]] = {}
    if TYPE_CHECKING:  # each plugin declares it as its Literal; declared here so the union's members share it
        type: str

    when: dict[str, Any] | None = Field(None, description="condition on the result; absent = always")
    retry: RetrySettings = RetrySettings()

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) of what is wrong within this action beyond its fields' own checks
        (field "" for the action as a whole); the config adds the location."""
        return []

    def cross_check(self, name: str, cfg: Any, report: Any) -> None:
        """Checks against the whole config (``cfg``: the ``AgentConfig``, every entry already valid on
        its own): report with ``report.error(path, message)`` or ``report.warning(path, message)``,
        ``path`` being where in the file (e.g. ``rules[0].actions[1]``). Source settings may have the
        same hook. Default: nothing to check."""

    def write_targets(self) -> list[tuple[str, str, str, Any]]:
        """(opcua source, option, node_id, value) of each value this action may write to an OPC UA
        server, checked against the live server by ``validate --online`` and after each connect."""
        return []
