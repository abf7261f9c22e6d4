"""Every link in README.md and docs/ resolves: relative links and images point at files of the repository, anchors
at headings of their page, and no doc names a markdown file (`DESIGN.md`) that is not in the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_MD = re.compile(r"`([\w./-]+\.md)`")


def _docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to '-'."""
    out = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip().lower()
            out.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text)))
    return out


def test_every_link_in_the_docs_resolves() -> None:
    broken = []
    for doc in _docs():
        text = doc.read_text(encoding="utf-8")
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target):  # http(s), mailto: not checked (no network at test time)
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
        for name in CODE_MD.findall(text):  # a markdown file named in code style must be in the repository
            if not ((doc.parent / name).exists() or (ROOT / name).exists() or list(ROOT.rglob(Path(name).name))):
                broken.append(f"{doc.relative_to(ROOT)}: `{name}` (not in the repository)")
    assert not broken, "\n".join(broken)


def test_the_walk_finds_the_links_it_checks() -> None:
    """The checker is not vacuous: the theory page's links are found, and a made-up one would be reported."""
    theory = (ROOT / "docs" / "theory.md").read_text(encoding="utf-8")
    targets = LINK.findall(theory)
    assert "figures/theory_old_mass.png" in targets and "../README.md#the-check-theory-beside-learned-models" in targets
    assert "the-check-theory-beside-learned-models" in _anchors(ROOT / "README.md")
    assert LINK.findall("see [x](nowhere.md) and ![y](img.png)") == ["nowhere.md", "img.png"]
