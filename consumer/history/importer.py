"""``vectoros history import``: a CRM export (CSV) straight into ``deal_history``.

The whole file is read and checked first; rows that cannot be read are reported by line and
skipped; then every good row is written in ONE transaction, so an interrupted or failed import
leaves nothing behind (running it again is harmless: rows are upserted by workspace and deal).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from consumer.history.store import upsert_histories
from consumer.intelligence.crm_import import ImportMapping, RowError, RowParser, load_mapping
from consumer.intelligence.projection import DealHistory
from vectoros.db import PgPool
from vectoros.errors import ConfigError

CHUNK = 1000
Progress = Callable[[str, int, int], None]
"""``(phase, done, total)``: phase ``read`` (rows) then ``write`` (deals)."""


@dataclass
class ImportReport:
    imported: int = 0
    errors: list[RowError] = field(default_factory=list)
    rows: int = 0


def read_mapping(path: Path) -> ImportMapping:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the mapping: {exc}") from None
    try:
        return load_mapping(raw)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_file(
    path: Path, mapping: ImportMapping, workspace: str | None, progress: Progress | None = None
) -> tuple[list[DealHistory], ImportReport]:
    """Every deal of the export that can be read, and the report of the rest."""
    parser = RowParser(mapping, workspace)
    report = ImportReport()
    deals: dict[str, tuple[int, DealHistory]] = {}
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    with handle:
        total = sum(1 for _ in handle) - 1
        handle.seek(0)
        reader = csv.DictReader(handle, delimiter=mapping.delimiter)
        missing = parser.missing_columns(reader.fieldnames or [])
        if missing:
            raise ConfigError(
                f"{path}: the mapping names columns the file does not have: {', '.join(missing)}"
            )

        def rows() -> Iterator[tuple[int, dict[str, str]]]:
            for row in reader:
                yield reader.line_num, row

        for item in parser.parse(rows()):
            report.rows += 1
            if isinstance(item, RowError):
                report.errors.append(item)
            elif item.deal_id in deals:
                first = deals[item.deal_id][0]
                report.errors.append(
                    RowError(
                        reader.line_num, f"deal {item.deal_id!r} again (first on line {first})"
                    )
                )
            else:
                deals[item.deal_id] = (reader.line_num, item)
            if progress is not None and report.rows % CHUNK == 0:
                progress("read", report.rows, max(total, report.rows))
    if progress is not None:
        progress("read", report.rows, report.rows)
    return [h for _, h in deals.values()], report


async def write_all(
    pool: PgPool, deals: list[DealHistory], progress: Progress | None = None
) -> int:
    """Every deal in one transaction (all or nothing)."""
    async with pool.acquire() as conn, conn.transaction():
        done = 0
        for start in range(0, len(deals), CHUNK):
            done += await upsert_histories(conn, deals[start : start + CHUNK])
            if progress is not None:
                progress("write", done, len(deals))
    return done


async def import_csv(
    pool: PgPool,
    path: Path,
    mapping: ImportMapping,
    workspace: str | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    deals, report = parse_file(path, mapping, workspace, progress)
    report.imported = await write_all(pool, deals, progress)
    return report
