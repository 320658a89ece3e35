# ruff: noqa: E501 (the CSV exports keep their real, long header lines)
"""CRM exports into deal histories: the shipped HubSpot, Pipedrive and Salesforce mappings read
exports with those CRMs' column names; bad rows are reported by line and skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.history.importer import parse_file, read_mapping
from vectoros.errors import ConfigError

MAPPINGS = Path(__file__).parents[2] / "docs" / "mappings"

HUBSPOT = '''Record ID,Deal Name,Create Date,Close Date,Deal Stage,Amount,Currency,Deal owner,Pipeline,Deal Type,Original Source Type,Number of Associated Contacts,"Date entered ""Appointment Scheduled (Sales Pipeline)""","Date entered ""Qualified To Buy (Sales Pipeline)""","Date entered ""Decision Maker Bought-In (Sales Pipeline)""","Date entered ""Contract Sent (Sales Pipeline)"""
101,Acme renewal,2025-01-02 09:00,2025-03-01 10:00,Closed Won,"12,000",EUR,Ada Lovelace,Sales Pipeline,existingbusiness,Direct,3,2025-01-02 09:00,2025-01-10 09:00,2025-02-01 09:00,2025-02-20 09:00
102,Globex,2025-01-05,2025-02-01,Closed Lost,5000,,Ada Lovelace,Sales Pipeline,newbusiness,Organic,1,2025-01-05,,,
103,Initech,2025-02-05,,Contract Sent,7000,USD,Bob,Sales Pipeline,newbusiness,Organic,,2025-02-05,,,2025-02-25
104,Hooli,yesterday,2025-02-01,Closed Won,5000,USD,Bob,Sales Pipeline,,,,,,,
105,Umbrella,2025-01-05,,Closed Won,5000,USD,Bob,Sales Pipeline,,,,,,,
106,Vandelay,2025-01-05,2025-02-01,Closed Lost,lots,USD,Bob,Sales Pipeline,,,,,,,
101,Acme again,2025-01-05,2025-02-01,Closed Lost,1,USD,Bob,Sales Pipeline,,,,,,,
'''

PIPEDRIVE = """Deal - ID,Deal - Title,Deal - Deal created,Deal - Deal closed on,Deal - Status,Deal - Stage,Deal - Value,Deal - Currency,Deal - Owner,Deal - Expected close date,Deal - Organization,Deal - Pipeline,Deal - Source channel,Deal - Lost reason,Deal - Product quantity
7,Big deal,2025-03-01 08:00:00,2025-04-01 12:00:00,Won,Negotiations Started,9000,EUR,Carla,2025-03-30,Acme,Default,Web,,2
8,Small deal,2025-03-02 08:00:00,,Open,Proposal Made,900,EUR,Carla,2025-05-30,Globex,Default,,,1
"""

SALESFORCE = """Opportunity ID,Opportunity Name,Created Date,Close Date,Stage,Amount,Opportunity Currency,Opportunity Owner,Account Name,Type,Lead Source,Fiscal Period
0061x00000A,Acme - 200 seats,1/15/2025,3/31/2025,Closed Won,"$48,000.00",USD,Dana Scully,Acme,New Business,Web,Q1-2025
0061x00000B,Globex - pilot,2/01/2025,4/15/2025,Closed Lost,"9,500",USD,Dana Scully,Globex,New Business,Partner,Q2-2025
0061x00000C,Initech,2/01/2025,6/30/2025,Negotiation/Review,"20,000",USD,Fox Mulder,Initech,Existing Business,Web,Q2-2025
"""


def parse(tmp_path: Path, crm: str, text: str) -> tuple[dict[str, object], list[str]]:
    path = tmp_path / f"{crm}.csv"
    path.write_text(text, encoding="utf-8")
    deals, report = parse_file(path, read_mapping(MAPPINGS / f"{crm}.yaml"), "ws-import")
    return {d.deal_id: d for d in deals}, [str(e) for e in report.errors]


def test_hubspot_export_with_bad_rows(tmp_path: Path) -> None:
    deals, errors = parse(tmp_path, "hubspot", HUBSPOT)
    assert errors == [
        "line 5: created (Create Date): 'yesterday' is not a date",
        "line 6: closed (Close Date) is empty for a won deal",
        "line 7: value (Amount): 'lots' is not a number",
        "line 8: deal '101' again (first on line 2)",
    ]
    assert set(deals) == {"101", "102", "103"}
    won = deals["101"]
    assert won.outcome == "won"  # type: ignore[attr-defined]
    assert (won.value, won.currency, won.workspace_id) == (12_000, "EUR", "ws-import")  # type: ignore[attr-defined]
    assert [(s.stage, s.days()) for s in won.stages] == [  # type: ignore[attr-defined]
        ("lead", 8.0),
        ("qualified", 22.0),
        ("proposal", 19.0),
        ("negotiation", 9 + 1 / 24),
    ]
    assert won.attributes == {  # type: ignore[attr-defined]
        "Pipeline": "Sales Pipeline",
        "Deal Type": "existingbusiness",
        "Original Source Type": "Direct",
        "Number of Associated Contacts": 3.0,
    }
    assert deals["102"].currency == "USD"  # type: ignore[attr-defined]  # default_currency
    open_deal = deals["103"]
    assert (open_deal.outcome, open_deal.stage) == (None, "negotiation")  # type: ignore[attr-defined]
    assert open_deal.stages[-1].left_ms is None  # type: ignore[attr-defined]


def test_pipedrive_export(tmp_path: Path) -> None:
    deals, errors = parse(tmp_path, "pipedrive", PIPEDRIVE)
    assert errors == []
    assert deals["7"].outcome == "won"  # type: ignore[attr-defined]
    assert str(deals["7"].close_date) == "2025-03-30"  # type: ignore[attr-defined]
    assert (deals["8"].outcome, deals["8"].stage) == (None, "proposal")  # type: ignore[attr-defined]
    assert deals["8"].company == "Globex"  # type: ignore[attr-defined]


def test_salesforce_export(tmp_path: Path) -> None:
    deals, errors = parse(tmp_path, "salesforce", SALESFORCE)
    assert errors == []
    assert [(d.outcome, d.value) for d in deals.values()] == [  # type: ignore[attr-defined]
        ("won", 48_000),
        ("lost", 9_500),
        (None, 20_000),
    ]
    assert deals["0061x00000C"].stage == "negotiation"  # type: ignore[attr-defined]


def test_a_mapping_naming_missing_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("Record ID,Deal Name\n1,a\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="does not have: Amount"):
        parse_file(path, read_mapping(MAPPINGS / "hubspot.yaml"), None)


def test_a_bad_mapping_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("columns: {deal_id: x}\noutcomes: {won: [a], lost: [b]}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"columns\.created: Field required"):
        read_mapping(path)
