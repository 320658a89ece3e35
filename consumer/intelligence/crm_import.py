"""CRM exports of past deals (CSV) into deal histories: the mapping file and the row parser.

Pure: the caller opens the file and writes the result. A mapping (YAML; examples for HubSpot,
Pipedrive and Salesforce in ``docs/mappings/``) names the export's columns for each field, the
values of the outcome column that mean won and lost, the CRM's stages as ours, and which other
columns to keep as categorical or numeric attributes. A row that cannot be read is reported
with its line number and skipped; the others are returned.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from consumer.intelligence.projection import DealHistory, StageSpell

StageName = Literal["lead", "qualified", "proposal", "negotiation"]


class Columns(BaseModel):
    """The export's column for each field (``None``: the export has none)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deal_id: str
    created: str
    closed: str | None = None
    outcome: str
    value: str
    owner: str
    stage: str | None = None
    title: str | None = None
    currency: str | None = None
    expected_close: str | None = None
    probability: str | None = None
    company: str | None = None


class Attributes(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    categorical: list[str] = Field(default_factory=list)
    numeric: list[str] = Field(default_factory=list)


class Outcomes(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    won: list[str]
    lost: list[str]

    @field_validator("won", "lost", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class ImportMapping(BaseModel):
    """A mapping file (YAML). Values of the outcome column other than ``won``/``lost`` are
    open deals. Matching of outcome and stage values ignores case and surrounding spaces."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = "csv"
    workspace: str = "default"
    columns: Columns
    outcomes: Outcomes
    stages: dict[str, StageName] = Field(default_factory=dict)
    stage_entered: dict[StageName, str] = Field(
        default_factory=dict, description="Our stage -> the export's 'date entered' column."
    )
    attributes: Attributes = Field(default_factory=Attributes)
    default_currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    probability_scale: float = Field(
        default=100, gt=0, description="100 when the export says 0-100, 1 when 0-1."
    )
    date_formats: list[str] = Field(
        default_factory=list, description="strptime formats tried after ISO 8601."
    )
    delimiter: str = Field(default=",", min_length=1, max_length=1)


def load_mapping(raw: Any) -> ImportMapping:
    """A mapping from the parsed YAML; ``ValueError`` with the key's path when it is wrong."""
    try:
        return ImportMapping.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "mapping"
        raise ValueError(f"{where}: {err['msg']}") from None


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}"


class _Bad(Exception):
    pass


def _key(text: str) -> str:
    return text.strip().casefold()


class RowParser:
    """Turns the rows of one export into deal histories, one at a time."""

    def __init__(self, mapping: ImportMapping, workspace: str | None = None) -> None:
        self.m = mapping
        self.workspace = workspace or mapping.workspace
        self._won = {_key(v) for v in mapping.outcomes.won}
        self._lost = {_key(v) for v in mapping.outcomes.lost}
        self._stages = {_key(k): v for k, v in mapping.stages.items()}

    def missing_columns(self, header: Iterable[str]) -> list[str]:
        """The mapped columns the export does not have (the import refuses to start)."""
        have = set(header)
        wanted = [c for c in self.m.columns.model_dump().values() if c is not None]
        wanted += list(self.m.stage_entered.values())
        wanted += self.m.attributes.categorical + self.m.attributes.numeric
        return sorted({c for c in wanted if c not in have})

    def parse(self, rows: Iterable[tuple[int, dict[str, str]]]) -> Iterator[DealHistory | RowError]:
        """Each ``(line, row)`` as a history, or the error of that line."""
        for line, row in rows:
            try:
                yield self.history(row)
            except _Bad as exc:
                yield RowError(line, str(exc))

    def _cell(self, row: dict[str, str], column: str | None) -> str:
        if column is None:
            return ""
        return (row.get(column) or "").strip()

    def _time(self, row: dict[str, str], column: str | None, what: str) -> int | None:
        text = self._cell(row, column)
        if not text:
            return None
        at: dt.datetime | None = None
        try:
            at = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            for fmt in self.m.date_formats:
                try:
                    at = dt.datetime.strptime(text, fmt)
                    break
                except ValueError:
                    continue
        if at is None:
            raise _Bad(f"{what} ({column}): {text!r} is not a date")
        if at.tzinfo is None:
            at = at.replace(tzinfo=dt.UTC)
        return int(at.timestamp() * 1000)

    def _number(self, text: str, what: str) -> float:
        cleaned = text.replace(",", "").replace(" ", "").lstrip("$€£")
        try:
            number = float(cleaned)
        except ValueError:
            raise _Bad(f"{what}: {text!r} is not a number") from None
        if not math.isfinite(number):
            raise _Bad(f"{what}: {text!r} is not a finite number")
        return number

    def history(self, row: dict[str, str]) -> DealHistory:
        c = self.m.columns
        deal_id = self._cell(row, c.deal_id)
        if not deal_id:
            raise _Bad(f"deal_id ({c.deal_id}) is empty")
        created = self._time(row, c.created, "created")
        if created is None:
            raise _Bad(f"created ({c.created}) is empty")
        status = _key(self._cell(row, c.outcome))
        outcome = "won" if status in self._won else "lost" if status in self._lost else None
        closed = self._time(row, c.closed, "closed") if outcome is not None else None
        if outcome is not None and closed is None:
            raise _Bad(f"closed ({c.closed}) is empty for a {outcome} deal")
        if closed is not None and closed < created:
            raise _Bad("closed is before created")
        value_text = self._cell(row, c.value)
        value = self._number(value_text, f"value ({c.value})") if value_text else None
        if value is not None and value < 0:
            raise _Bad(f"value ({c.value}) is negative")
        currency = self._cell(row, c.currency).upper() or self.m.default_currency
        if len(currency) != 3 or not currency.isalpha():
            raise _Bad(f"currency ({c.currency}): {currency!r} is not an ISO 4217 code")
        h = DealHistory(
            workspace_id=self.workspace,
            deal_id=deal_id,
            source="import",
            title=self._cell(row, c.title) or None,
            value=value,
            currency=currency,
            owner_id=self._cell(row, c.owner) or None,
            owner_name=self._cell(row, c.owner) or None,
            company=self._cell(row, c.company) or None,
            created_ms=created,
            updated_ms=closed or created,
            outcome=outcome,
            closed_ms=closed,
        )
        expected = self._time(row, c.expected_close, "expected_close")
        if expected is not None:
            h.close_date = dt.datetime.fromtimestamp(expected / 1000, dt.UTC).date()
        prob_text = self._cell(row, c.probability)
        if prob_text:
            p = self._number(prob_text.rstrip("%"), f"probability ({c.probability})")
            p = p * 100 / self.m.probability_scale
            if not 0 <= p <= 100:
                raise _Bad(f"probability ({c.probability}): {prob_text!r} is not within 0-100")
            h.probability = p
            h.probabilities.append((created, p))
        h.stages = self._stages_of(row, created, closed)
        crm_stage = self._stages.get(_key(self._cell(row, c.stage)))
        h.stage = crm_stage if outcome is None else None
        if outcome is None and not h.stages and crm_stage is not None:
            h.stages = [StageSpell(crm_stage, created)]
        elif h.stages and outcome is None:
            h.stage = h.stages[-1].stage
        for column in self.m.attributes.categorical:
            if text := self._cell(row, column):
                h.attributes[column] = text
        for column in self.m.attributes.numeric:
            if text := self._cell(row, column):
                h.attributes[column] = self._number(text, column)
        return h

    def _stages_of(self, row: dict[str, str], created: int, closed: int | None) -> list[StageSpell]:
        entered: list[tuple[int, str]] = []
        for stage, column in self.m.stage_entered.items():
            at = self._time(row, column, f"stage_entered.{stage}")
            if at is not None:
                entered.append((at, str(stage)))
        entered.sort()
        spells: list[StageSpell] = []
        for i, (at, name) in enumerate(entered):
            left = entered[i + 1][0] if i + 1 < len(entered) else closed
            if left is not None and left < at:
                raise _Bad(f"stage_entered.{name} is after the deal closed")
            spells.append(StageSpell(name, max(at, created), left))
        return spells
