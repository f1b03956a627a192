"""The agent's status page and the fleet console run on the browsers that open them on a plant's floor: an HMI
panel's or an old iPad's WebKit as much as a desktop Chromium. One regular expression those cannot parse stops the
page's whole script, and the page shows nothing: a regex lookbehind (``(?<=`` or ``(?<!``) is such, unknown to
Safari and iOS before 16.4 (a SyntaxError when the script is parsed). The browser tests run Chromium, which parses
it, so this guard reads the pages' scripts instead."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "edge_agent" / "status_page.html", ROOT / "cloud_trainer" / "fleet" / "console.html"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_pages_scripts_use_no_regex_lookbehind_which_older_webkit_cannot_parse(page):
    scripts = "\n".join(re.findall(r"<script[^>]*>(.*?)</script>", page.read_text(), flags=re.S))
    assert scripts.strip(), f"{page.name}: no script found"
    found = [line.strip() for line in scripts.splitlines() if "(?<=" in line or "(?<!" in line]
    assert not found, f"{page.name}: a regex lookbehind, a SyntaxError on Safari/iOS before 16.4: {found}"
