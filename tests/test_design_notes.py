""" The package's comments and README cite the design notes kept in the repository (docs/design.md), by section
names that exist there, never a file outside it. """
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTES = REPO / 'docs' / 'design.md'


def _sources():
    yield REPO / 'README.md'
    yield REPO / 'Makefile'
    yield from sorted((REPO / 'sfsc_timm').rglob('*.py'))


def test_no_reference_to_a_design_file_outside_the_repository():
    stale = [f'{p.relative_to(REPO)}:{n}' for p in _sources() for n, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r'DESIGN(\.md| section| §)', line)]
    assert stale == []


def test_cited_sections_exist():
    sections = set(re.findall(r'^## (.+)$', NOTES.read_text(), flags=re.M))
    cited = {(p.relative_to(REPO), name) for p in _sources()
             for name in re.findall(r'docs/design\.md, "([^"]+)"', p.read_text())}
    assert cited, 'nothing cites the design notes'
    assert {c for c in cited if c[1] not in sections} == set()
