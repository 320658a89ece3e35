"""The docs stand alone: every relative link in README.md and docs/ points inside the
repository, at a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_relative_links_stay_inside_the_repository_and_resolve() -> None:
    checked = 0
    for doc in _docs():
        for target in _LINK.findall(doc.read_text()):
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            resolved = (doc.parent / target).resolve()
            assert resolved.is_relative_to(ROOT), f"{doc.name} links outside the repo: {target}"
            assert resolved.exists(), f"{doc.name} links to a missing file: {target}"
            checked += 1
    assert checked > 0


def test_the_readme_points_to_the_design_document() -> None:
    assert "(docs/design.md)" in (ROOT / "README.md").read_text()
