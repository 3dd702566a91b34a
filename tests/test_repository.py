"""Repository basics a user and a journal look for: the licence the metadata names, how to
cite, what changed, and how to install each extra."""

import configparser

import yaml

from tests.conftest import REPO


def test_licence_file_matches_the_metadata():
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert setup["metadata"]["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_citation_cites_the_paper_and_the_package():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] and cff["license"] == "Apache-2.0" and cff["type"] == "software"
    paper = cff["preferred-citation"]
    assert paper["journal"] == "Frontiers in Physiology" and str(paper["start"]) == "882648"
    assert [a["family-names"] for a in paper["authors"]][:2] == ["Li", "Guo"]


def test_changelog_and_install_instructions_name_the_extras():
    assert (REPO / "CHANGELOG.md").read_text().startswith("# Changelog")
    readme = (REPO / "README.md").read_text()
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    for extra in setup["options.extras_require"]:
        assert f'pip install -e ".[{extra}]"' in readme, extra
