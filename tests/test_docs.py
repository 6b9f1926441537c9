"""The repository's own docs hold up: README stays a short guide whose links and DAG are right, every docs/ page
and section a file cites exists, and nothing cites a file a reader of the repository cannot open."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# Files outside the repository that comments once cited: the project's seed specifications and its shared notes.
# Written in pieces so that this file does not cite them itself.
OUTSIDE = re.compile("|".join([r"\bseed[ -]?00\d", r"\bseed \d\.\d", "shared" + "/", "KNOWN" + "-ISSUES",
                               r"\bSTYLE" + r"\.md", r"\bDESIGN" + r"\.md"]), re.I)
CITE = re.compile(r'docs/(\w+)\.md "([^"]+)"')


def tracked(*suffixes: str) -> list[Path]:
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    return [REPO / n for n in names if n.endswith(suffixes) and (REPO / n).is_file()]


def test_nothing_cites_a_file_outside_the_repository():
    found = [f"{path.relative_to(REPO)}:{i}: {line.strip()}"
             for path in tracked(".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".json", ".html")
             for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if OUTSIDE.search(line)]
    assert found == []


def test_readme_is_a_short_guide():
    assert len(README.read_text().splitlines()) <= 160


def test_every_docs_link_resolves():
    """README's links and bare docs/*.md mentions, and the relative links of every docs page."""
    text = README.read_text()
    linked = set(re.findall(r"\]\(((?:docs|benchmarks)/[^)#]+)", text)) | set(re.findall(r"\bdocs/\w+\.md", text))
    assert {"docs/data.md", "docs/training.md", "docs/alignment.md", "docs/evaluation.md", "docs/serving.md",
            "docs/orchestration.md", "docs/registry.md", "docs/results.md", "docs/model.md"} <= linked
    assert [p for p in sorted(linked) if not (REPO / p).is_file()] == []
    for page in (REPO / "docs").glob("*.md"):
        targets = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text())
        assert [t for t in targets if not (page.parent / t).exists()] == [], page.name


def sections(page: Path) -> list[str]:
    """A page's headings and its bold paragraph titles (`**Towers that start random train.**`)."""
    text = page.read_text()
    found = re.findall(r"^#+ (.+)$", text, re.M) + re.findall(r"^\*\*([^*]+)\*\*", text, re.M)
    return [" ".join(s.split()) for s in found]


def test_every_cited_docs_section_exists():
    """`docs/model.md "Alignment"` in a comment names a heading (or bold title) of that page that starts so."""
    wrong = []
    for path in tracked(".py", ".md", ".yaml", ".toml"):
        for page, title in CITE.findall(path.read_text(errors="replace")):
            title = " ".join(title.split())  # a title may wrap across lines
            target = REPO / "docs" / f"{page}.md"
            if not target.is_file() or not any(s.startswith(title) for s in sections(target)):
                wrong.append(f"{path.relative_to(REPO)}: docs/{page}.md \"{title}\"")
    assert wrong == []


def test_readme_dag_is_dvc_yaml():
    """README's mermaid picture has exactly the edges `dvc dag` finds in dvc.yaml."""
    block = re.search(r"^```mermaid\n(.*?)^```$", README.read_text(), re.S | re.M).group(1)
    drawn = set(re.findall(r"^\s*(\w+) --> (\w+)\s*$", block, re.M))
    out = subprocess.run([sys.executable, "-m", "dvc", "dag", "--mermaid"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    names = dict(re.findall(r'^\s*(node\d+)\["([^"]+)"\]', out, re.M))
    edges = {(names[a], names[b]) for a, b in re.findall(r"^\s*(node\d+)-->(node\d+)", out, re.M)}
    assert edges and drawn == edges
