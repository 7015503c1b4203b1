"""The docs site: its generated tables current and complete, every page in the navigation,
the README short, and evalkit.catalog's tables, rendering and syncing."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from evalkit import catalog

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SYNC = "python -m evalkit.catalog"


def generated_blocks() -> dict[str, list[str]]:
    """Every generated block of the docs, by name -> the first cells of its table's rows (the
    header and the separator line left out); read here, independently of evalkit.catalog."""
    blocks: dict[str, list[str]] = {}
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        for name, body in re.findall(r"^<!-- generated: (\S+) -->\n(.*?)^<!-- end generated -->$", text, re.S | re.M):
            assert name not in blocks, f"the generated block {name!r} is in the docs twice"
            rows = [line for line in body.splitlines() if line.startswith("|")][2:]
            blocks[name] = [row.split("|")[1].strip() for row in rows]
    return blocks


def registry_names(kind: str) -> list[str]:
    from evalkit.models import MODELS
    from evalkit.registry import FAMILIES, METHODS, TASKS

    return {"methods": METHODS, "models": MODELS, "families": FAMILIES, "tasks": TASKS}[kind].names()


def nav_pages(nav) -> list[str]:
    """The page files of a mkdocs ``nav`` (nested sections flattened, external links left out)."""
    items = nav if isinstance(nav, list) else [nav]
    pages = []
    for item in items:
        for entry in item.values() if isinstance(item, dict) else [item]:
            if isinstance(entry, (list, dict)):
                pages += nav_pages(entry)
            elif not re.match(r"[a-z]+://", entry):
                pages.append(entry)
    return pages


def test_the_generated_tables_are_current():
    stale = catalog.sync_docs(DOCS, check=True)
    assert not stale, f"the registries changed since these tables were written: {stale}; run `{SYNC}`"


@pytest.mark.parametrize("kind", ["methods", "models", "families", "tasks"])
def test_every_registered_name_is_in_the_docs_tables(kind):
    blocks = generated_blocks()
    assert kind in blocks, f"no '<!-- generated: {kind} -->' block in docs/"
    names, listed = registry_names(kind), blocks[kind]
    missing, extra = set(names) - set(listed), set(listed) - set(names)
    assert not missing and not extra, f"{kind}: missing from the docs {missing}, not registered {extra}; run `{SYNC}`"
    assert len(listed) == len(set(listed))


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config["docs_dir"] == "docs"
    in_nav = nav_pages(config["nav"])
    pages = [p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")]
    assert len(in_nav) == len(set(in_nav)), "a page is in the nav twice"
    assert sorted(in_nav) == sorted(pages), (
        f"not in mkdocs.yml's nav: {set(pages) - set(in_nav)}; in the nav but not in docs/: {set(in_nav) - set(pages)}"
    )


def test_the_readme_stays_short_and_points_at_the_docs():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300, "the README is a front page: move the detail into docs/"
    for page in nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]):
        assert page == "index.md" or f"(docs/{page})" in text, f"the README does not link docs/{page}"


@pytest.mark.parametrize("listing, table", [("methods", catalog.methods_table), ("tasks", catalog.tasks_table)])
def test_the_text_tables_are_what_the_cli_listings_print(listing, table):
    from evalkit.cli import app

    result = CliRunner().invoke(app, [listing])
    assert result.exit_code == 0, result.output
    assert result.output == catalog.render(*table(), "table") + "\n"


def test_markdown_cells_cannot_break_the_table_or_read_as_html():
    text = catalog.render(["a", "b"], [("x | y", "<N> and *z*"), ("two\nlines", "")], "markdown")
    assert text.splitlines() == ["| a | b |", "|---|---|", r"| x \| y | &lt;N> and \*z\* |", "| two lines |  |"]
    assert catalog.render(["a", "bb"], [("ccc", "d")], "table") == "a    bb\nccc  d"
    with pytest.raises(ValueError, match="unknown table format"):
        catalog.render(["a"], [], "html")


def test_sync_rewrites_only_the_blocks_and_check_writes_nothing(tmp_path):
    page = tmp_path / "tasks.md"
    old = "# Tasks\n\nprose `<!-- generated: tasks -->` quoted\n\n<!-- generated: tasks -->\n| old |\n<!-- end generated -->\n\nmore\n"
    page.write_text(old, encoding="utf-8")
    assert catalog.sync_docs(tmp_path, check=True) == ["tasks.md: tasks"]
    assert page.read_text(encoding="utf-8") == old
    assert catalog.sync_docs(tmp_path) == ["tasks.md: tasks"]
    new = page.read_text(encoding="utf-8")
    assert new.startswith("# Tasks\n\nprose `<!-- generated: tasks -->` quoted\n\n") and new.endswith("\nmore\n")
    assert catalog.render(*catalog.tasks_table(), "markdown") in new
    assert catalog.sync_docs(tmp_path, check=True) == []


@pytest.mark.parametrize(
    "text, error",
    [
        ("<!-- generated: nonsense -->\n<!-- end generated -->\n", "unknown generated block"),
        ("<!-- generated: tasks -->\n| no end |\n", "without its"),
    ],
)
def test_sync_refuses_an_unknown_or_unclosed_block(tmp_path, text, error):
    (tmp_path / "page.md").write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=error):
        catalog.sync_docs(tmp_path, check=True)


def test_the_catalog_imports_no_registry_until_a_table_is_asked_for():
    code = (
        "import sys, evalkit.catalog; "
        "print(sorted(m for m in ('torch', 'evalkit.patches', 'evalkit.tasks') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
