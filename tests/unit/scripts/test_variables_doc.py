# -*- coding: utf-8 -*-
# Copyright: (c) 2026, CYNIC cluster team
# MIT License (see LICENSE or https://opensource.org/licenses/MIT)
# SPDX-License-Identifier: MIT
"""docs/VARIABLES.md is what scripts/gen_variables_doc.py makes of the argument specs now, and every
relative link of README.md and docs/*.md reaches a file (and a heading, when it names one)."""

from __future__ import annotations

import importlib.util
import re
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
SCRIPT = REPO_ROOT / "scripts" / "gen_variables_doc.py"
_spec = importlib.util.spec_from_file_location("gen_variables_doc", SCRIPT)
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)


def test_variables_doc_is_generated_from_the_current_argument_specs():
    current = (REPO_ROOT / "docs" / "VARIABLES.md").read_text()
    assert current == gen.render(REPO_ROOT / "roles"), (
        "docs/VARIABLES.md is out of date: run make docs (python scripts/gen_variables_doc.py)")


def test_every_public_role_and_variable_is_on_the_page():
    page = (REPO_ROOT / "docs" / "VARIABLES.md").read_text()
    for specs_file in sorted((REPO_ROOT / "roles").glob("*/meta/argument_specs.yml")):
        role = specs_file.parent.parent.name
        if role.startswith("_"):
            assert f"## {role}\n" not in page
            continue
        assert f"## {role}\n" in page
        for entry in gen.yaml.safe_load(specs_file.read_text())["argument_specs"].values():
            for name in entry.get("options") or {}:
                assert f"| `{name}` |" in page, f"{role}: {name} missing from docs/VARIABLES.md"


def _write_role(roles, name, specs):
    (roles / name / "meta").mkdir(parents=True)
    (roles / name / "meta" / "argument_specs.yml").write_text(textwrap.dedent(specs))


@pytest.fixture
def roles(tmp_path):
    roles = tmp_path / "roles"
    _write_role(roles, "_hidden", """\
        argument_specs:
          main:
            options:
              _hidden_secret_thing: {type: str, default: x, description: internal}
        """)
    _write_role(roles, "web", """\
        argument_specs:
          main:
            short_description: A web tier
            options:
              web_port: {type: int, default: 80, description: [Port C(nginx) listens on., See docs/FIREWALL.md.]}
              web_name:
                type: str
                default: "{{ inventory_hostname | upper }}"
                description: Name of I(cynic@<id>).
              web_mode: {type: str, choices: [a, b], default: a, description: Mode.}
              web_password: {type: str, default: "", no_log: true, description: Secret.}
              web_backends:
                type: list
                elements: dict
                default: []
                description: Backends.
                options:
                  host: {type: str, required: true, description: Host.}
                  weight: {type: int, description: Weight.}
          extra:
            short_description: A web tier
            options:
              web_port: {type: int, default: 80, description: [Port C(nginx) listens on., See docs/FIREWALL.md.]}
              web_name:
                type: str
                default: "{{ inventory_hostname | upper }}"
                description: Name of I(cynic@<id>).
              web_mode: {type: str, choices: [a, b], default: a, description: Mode.}
              web_password: {type: str, default: "", no_log: true, description: Secret.}
              web_backends:
                type: list
                elements: dict
                default: []
                description: Backends.
                options:
                  host: {type: str, required: true, description: Host.}
                  weight: {type: int, description: Weight.}
          other:
            options:
              web_only_here: {type: bool, default: false, description: Other.}
        """)
    return roles


def test_render_lays_out_types_defaults_suboptions_and_skips_internal_roles(roles):
    page = gen.render(roles)
    assert "_hidden" not in page
    assert "| `web_port` | int | `80` | Port `nginx` listens on. See [docs/FIREWALL.md](FIREWALL.md). |" in page
    # A pipe inside a Jinja default must not split the table row; <id> must not become an HTML tag.
    assert "| `web_name` | str | `{{ inventory_hostname \\| upper }}` | Name of *cynic@&lt;id&gt;*. |" in page
    assert "| `web_mode` | str | `a` | Mode. Choices: `a`, `b`. |" in page
    assert "| `web_password` | str | `\"\"` | Secret. Secret: kept out of the output (`no_log`). |" in page
    assert "| `web_backends[].host` | str | required | Host. |" in page
    assert "| `web_backends[].weight` | int | (none) | Weight. |" in page
    assert "The same options as the entry point `main`." in page
    assert "| `web_only_here` | bool | `false` | Other. |" in page
    # main comes first, whatever the order in the file.
    assert page.index("| `web_port` |") < page.index("### Entry point `extra`")


def test_check_fails_on_a_stale_page_and_passes_once_written(roles, tmp_path, capsys):
    out = tmp_path / "VARIABLES.md"
    assert gen.main(["--roles", str(roles), "--output", str(out), "--check"]) == 1
    out.write_text(gen.render(roles) + "edited by hand\n")
    assert gen.main(["--roles", str(roles), "--output", str(out), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert gen.main(["--roles", str(roles), "--output", str(out)]) == 0
    assert gen.main(["--roles", str(roles), "--output", str(out), "--check"]) == 0


# --- links between the pages ------------------------------------------------------------------

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+).+?\1", re.S)
_LINK = re.compile(r"\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def _slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path):
    seen = {}
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text())):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        yield slug if n == 0 else f"{slug}-{n}"


def _links(path):
    text = _CODE_SPAN.sub("", _FENCE.sub("", path.read_text()))
    return _LINK.findall(text)


PAGES = [REPO_ROOT / "README.md"] + sorted((REPO_ROOT / "docs").glob("*.md"))


def test_slug_matches_github():
    assert _slug("SurrealDB: `surrealdb_sync_data` → `SURREAL_SYNC_DATA`") == "surrealdb-surrealdb_sync_data--surreal_sync_data"
    assert _slug("Kill -9 one instance — `kill_instance.yml`") == "kill--9-one-instance--kill_instanceyml"


def test_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# Top\n\n[a](missing.md) `[b](in-code.md)`\n\n```\n[c](in-fence.md)\n```\n[d](#top)\n")
    assert _links(page) == ["missing.md", "#top"]
    assert list(_anchors(page)) == ["top"]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO_ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page):
    broken = []
    for target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _sep, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in set(_anchors(dest)):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{page.relative_to(REPO_ROOT)}: " + "; ".join(broken)
