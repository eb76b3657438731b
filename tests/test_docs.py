"""The documentation holds together: the site builds strictly, the README's links lead
somewhere, and the pages that restate the code (settings, routes) say what the code says."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import ROOT
from livecam.cli import GENERATED_BEGIN, GENERATED_END
from livecam.config import settings_markdown

DOCS = ROOT / "docs"
BUILD_TIMEOUT = 120  # seconds; a build takes about one


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """Run mkdocs's strict build of ``config`` into ``site``."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documentation site, built strictly from the repository's own files."""
    out = tmp_path_factory.mktemp("site")
    done = build(ROOT / "mkdocs.yml", out)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}{done.stderr}"
    return out


def copy_of_docs(tmp_path: Path) -> Path:
    """A copy of mkdocs.yml and docs/ to break, so that the real ones stay as they are."""
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(DOCS, tmp_path / "docs")
    return tmp_path / "mkdocs.yml"


def test_the_site_builds_strictly_with_every_page_in_its_nav(site: Path) -> None:
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    listed = {page for entry in nav for page in entry.values()}
    assert listed == {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert (site / "configuration.html").is_file()


@pytest.mark.parametrize(
    ("page", "text", "complaint"),
    [
        ("security.md", "\nSee [nowhere](missing.md).\n", "missing.md"),
        ("security.md", "\nSee [a heading](routes.md#no-such-heading).\n", "no-such-heading"),
        ("orphan.md", "# Orphan\n", "orphan.md"),
    ],
)
def test_a_broken_link_or_a_page_left_out_of_the_nav_fails_the_build(
    tmp_path: Path, page: str, text: str, complaint: str
) -> None:
    config = copy_of_docs(tmp_path)
    with open(tmp_path / "docs" / page, "a", encoding="utf-8") as handle:
        handle.write(text)
    done = build(config, tmp_path / "site")
    assert done.returncode != 0
    assert complaint in done.stdout + done.stderr


def anchors(html: Path) -> set[str]:
    """The ids a page's headings (and anything else) carry."""
    return set(re.findall(r'\bid="([^"]+)"', html.read_text(encoding="utf-8")))


def test_the_readme_links_lead_somewhere(site: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert targets, "the README links to nothing"
    broken = []
    for target in targets:
        if re.match(r"[a-z]+:", target):
            continue  # an address elsewhere
        path, _, anchor = target.partition("#")
        if not (ROOT / path).exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in anchors(site / Path(path).relative_to("docs").with_suffix(".html")):
            broken.append(f"{target}: no such heading")
    assert not broken, "README.md: " + "; ".join(broken)


def test_the_settings_page_is_rendered_from_the_code() -> None:
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    written = page.partition(GENERATED_BEGIN)[2].partition(GENERATED_END)[0]
    assert written, f"docs/configuration.md lacks its {GENERATED_BEGIN} ... {GENERATED_END} markers"
    assert written.strip() == settings_markdown().strip(), (
        "docs/configuration.md's settings tables differ from livecam/config.py: run "
        "`.venv/bin/livecam docs-settings --write docs/configuration.md`"
    )


def routes_in_openapi() -> set[str]:
    """Every route of /openapi.yaml as "METHOD /path", a path parameter written as the page
    writes it ({camera_id} as ID, {event_id} as EVENT_ID)."""
    spec = yaml.safe_load((ROOT / "livecam" / "openapi.yaml").read_text(encoding="utf-8"))
    methods = {"get", "put", "post", "delete", "patch", "head", "options"}
    found = set()
    for path, item in spec["paths"].items():
        written = re.sub(r"\{(\w+)\}", lambda m: "ID" if m[1] == "camera_id" else m[1].upper(), path)
        found |= {f"{method.upper()} {written}" for method in item if method in methods}
    return found


def routes_on_page() -> set[str]:
    """Every route docs/routes.md names as `METHOD /path`."""
    page = (DOCS / "routes.md").read_text(encoding="utf-8")
    return set(re.findall(r"`((?:GET|PUT|POST|DELETE|PATCH|HEAD|OPTIONS) /[^`\s?]*)`", page))


def test_the_routes_page_names_every_route_of_the_openapi_description() -> None:
    described, written = routes_in_openapi(), routes_on_page()
    assert len(described) > 20
    assert written == described, (
        f"docs/routes.md and livecam/openapi.yaml differ: only on the page {sorted(written - described)}, "
        f"only in openapi.yaml {sorted(described - written)}"
    )


# Words that tell the documentation's history rather than what is true.
ASIDES = re.compile(r"\b(since then|used to|no longer|any ?more|not done yet|now)\b", re.IGNORECASE)


def prose(text: str) -> str:
    """Markdown without its code: fenced blocks and inline code."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))


def test_the_documentation_tells_no_history() -> None:
    found = []
    for path in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        for line in prose(path.read_text(encoding="utf-8")).splitlines():
            if match := ASIDES.search(line):
                found.append(f"{path.relative_to(ROOT)}: {match[0]!r} in {line.strip()!r}")
    assert not found, "say what is true, not what changed: " + "; ".join(found)


# Facts that go stale when written twice: each is stated on one page, the others link to it.
ONE_HOME = {
    "8192x8192": "reliability.md",  # the largest frame a camera or the bus may send
    "livecam_profile_": "operations.md",  # metric names
    "livecam_bus_": "operations.md",
    "WWW-Authenticate": "security.md",  # when livecam asks for Basic
    "Five failures": "security.md",  # the lockout
    "graceful timeout (5 s)": "reliability.md",
    "10 s with nobody watching": "design.md",  # the idle close
}


def test_a_fact_is_written_on_one_page_only() -> None:
    pages = {p.relative_to(DOCS).as_posix(): p.read_text(encoding="utf-8") for p in DOCS.rglob("*.md")}
    found = []
    for fact, home in ONE_HOME.items():
        where = sorted(name for name, text in pages.items() if fact in text)
        if where != [home]:
            found.append(f"{fact!r} is on {where}, expected on {home} alone (link to it from the others)")
    assert not found, "; ".join(found)
