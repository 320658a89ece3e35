"""Stage mapping: each CRM's stage ids onto the monitor's stages (or won/lost -> ``deal.closed``).

Built-in defaults cover the CRMs' default pipelines; ``VECTOROS_GATEWAY_STAGES_FILE`` (YAML or
JSON) adds to them and overrides them, for every workspace and per workspace::

    defaults:                 # every workspace
      pipedrive:
        "1": lead             # Pipedrive stage ids are numbers, per company
        "2": qualified
        "3": proposal
        "4": negotiation
    workspaces:
      ws-acme:
        hubspot:
          "12345678": negotiation   # a custom pipeline's stage id
          "12345679": lost

Values: ``lead``, ``qualified``, ``proposal``, ``negotiation``, ``won``, ``lost``. Keys are
matched without regard to case or surrounding spaces. Unknown sections or values are an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from producer.gateway.settings import SOURCES
from schemas.events import Outcome, Stage
from vectoros.errors import ConfigError

StageTarget = Stage | Outcome

_VALUES: dict[str, StageTarget] = {
    **{stage.value: stage for stage in Stage},
    **{outcome.value: outcome for outcome in Outcome},
}

BUILTIN: dict[str, dict[str, StageTarget]] = {
    # HubSpot's default sales pipeline (internal stage ids).
    "hubspot": {
        "appointmentscheduled": Stage.LEAD,
        "qualifiedtobuy": Stage.QUALIFIED,
        "presentationscheduled": Stage.PROPOSAL,
        "decisionmakerboughtin": Stage.NEGOTIATION,
        "contractsent": Stage.NEGOTIATION,
        "closedwon": Outcome.WON,
        "closedlost": Outcome.LOST,
    },
    # Pipedrive stage ids are per company: configure them.
    "pipedrive": {},
    # Salesforce's default Opportunity StageName picklist.
    "salesforce": {
        "prospecting": Stage.LEAD,
        "qualification": Stage.QUALIFIED,
        "needs analysis": Stage.QUALIFIED,
        "value proposition": Stage.PROPOSAL,
        "id. decision makers": Stage.PROPOSAL,
        "perception analysis": Stage.PROPOSAL,
        "proposal/price quote": Stage.PROPOSAL,
        "negotiation/review": Stage.NEGOTIATION,
        "closed won": Outcome.WON,
        "closed lost": Outcome.LOST,
    },
    # Twenty's default opportunity stages (it has no "lost" by default).
    "twenty": {
        "new": Stage.LEAD,
        "screening": Stage.QUALIFIED,
        "meeting": Stage.QUALIFIED,
        "proposal": Stage.PROPOSAL,
        "customer": Outcome.WON,
    },
}


def _key(value: object) -> str:
    return str(value).strip().casefold()


def _section(data: Any, where: str) -> dict[str, dict[str, StageTarget]]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"stages file: {where} must be a mapping of source -> stages")
    out: dict[str, dict[str, StageTarget]] = {}
    for source, stages in data.items():
        if source not in SOURCES:
            raise ConfigError(
                f"stages file: {where}.{source}: unknown source (use {', '.join(SOURCES)})"
            )
        if not isinstance(stages, Mapping):
            raise ConfigError(f"stages file: {where}.{source} must map stage ids to stages")
        mapped: dict[str, StageTarget] = {}
        for crm_stage, target in stages.items():
            value = _VALUES.get(str(target).strip().lower())
            if value is None:
                raise ConfigError(
                    f"stages file: {where}.{source}.{crm_stage}: {target!r} is not one of "
                    f"{', '.join(_VALUES)}"
                )
            mapped[_key(crm_stage)] = value
        out[source] = mapped
    return out


@dataclass(frozen=True)
class StageMap:
    """Lookup order: the workspace's own mapping, the file's defaults, the built-ins."""

    defaults: dict[str, dict[str, StageTarget]] = field(default_factory=dict)
    workspaces: dict[str, dict[str, dict[str, StageTarget]]] = field(default_factory=dict)

    def lookup(self, source: str, workspace: str, crm_stage: object) -> StageTarget | None:
        key = _key(crm_stage)
        for table in (
            self.workspaces.get(workspace, {}).get(source, {}),
            self.defaults.get(source, {}),
            BUILTIN.get(source, {}),
        ):
            if key in table:
                return table[key]
        return None

    @classmethod
    def from_data(cls, data: Any) -> StageMap:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ConfigError("stages file: the top level must be a mapping")
        unknown = set(data) - {"defaults", "workspaces"}
        if unknown:
            raise ConfigError(
                f"stages file: unknown keys {sorted(map(str, unknown))}; use defaults, workspaces"
            )
        workspaces_data = data.get("workspaces") or {}
        if not isinstance(workspaces_data, Mapping):
            raise ConfigError("stages file: workspaces must map workspace ids to sources")
        return cls(
            defaults=_section(data.get("defaults"), "defaults"),
            workspaces={
                str(ws): _section(sources, f"workspaces.{ws}")
                for ws, sources in workspaces_data.items()
            },
        )

    @classmethod
    def load(cls, path: Path | None) -> StageMap:
        """The mapping of ``path`` (YAML or JSON); the built-ins alone when ``None``."""
        if path is None:
            return cls()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read stages file {path}: {exc.strerror}") from exc
        try:
            data = orjson.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"stages file {path} is not valid YAML/JSON: {exc}") from exc
        return cls.from_data(data)
