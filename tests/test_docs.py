"""The documentation: the MkDocs site builds with --strict (every page of docs/ in the navigation, every link and
anchor between pages resolving), and every link from the README into docs/ names a file (and heading) that exists."""
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from conftest import ROOT

LINK = re.compile(r"\]\(([^)\s]+)\)")          # [text](target)
ID = re.compile(r"""\bid=["']([^"']+)["']""")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Build the site once into a temporary folder: (exit status, MkDocs' output, the site's folder)."""
    out = tmp_path_factory.mktemp("site")
    p = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                        "--site-dir", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout + p.stderr, out


def test_site_builds_strictly(site):
    """A page of docs/ left out of the nav, or a link to a page or heading that does not exist, fails the build."""
    status, output, _ = site
    if "No module named mkdocs" in output:
        pytest.fail("mkdocs is not installed: pip install -e '.[dev]' (scripts/setup does)")
    assert status == 0, f"mkdocs build --strict failed:\n{output}"


def readme_links() -> list[str]:
    text = (ROOT / "README.md").read_text()
    text = re.sub(r"```.*?```", "", text, flags=re.S)      # links in code blocks are not links
    return [t for t in LINK.findall(text) if t.startswith("docs/")]


def test_readme_links_into_docs_resolve(site):
    links = readme_links()
    assert links, "the README links to no page of docs/"
    _, _, out = site
    problems = []
    for link in links:
        path, _, anchor = link.partition("#")
        target = ROOT / unquote(path)
        if not target.is_file():
            problems.append(f"{link}: no file {path}")
            continue
        if not anchor:
            continue
        if target.suffix != ".md":
            problems.append(f"{link}: an anchor into a file that is not a page")
            continue
        # the page as MkDocs built it: docs/x.md -> x/index.html (docs/index.md -> index.html)
        page = Path(path).relative_to("docs").with_suffix("")
        html = out / ("index.html" if page.name == "index" and page.parent == Path(".") else page / "index.html")
        if not html.is_file():
            problems.append(f"{link}: the site did not build, so its anchor cannot be checked")
        elif unquote(anchor) not in ID.findall(html.read_text()):
            problems.append(f"{link}: no heading with id {anchor!r} in {path}")
    assert not problems, "README links into docs/ that do not resolve:\n" + "\n".join(problems)
