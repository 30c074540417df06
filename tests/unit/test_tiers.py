"""The tier runner's JUnit merge (tests/tiers.py): every tier's suite in one file, none lost."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tests.tiers import merge


def test_each_tiers_suites_land_in_one_file_and_a_missing_tier_is_left_out(tmp_path):
    (tmp_path / "u.xml").write_text('<testsuites><testsuite name="pytest" tests="2"><testcase name="a"/>'
                                    '<testcase name="b"/></testsuite></testsuites>')
    (tmp_path / "e.xml").write_text('<testsuite name="pytest" tests="1" failures="1"><testcase name="c">'
                                    '<failure message="boom"/></testcase></testsuite>')
    merge([tmp_path / "u.xml", tmp_path / "none.xml", tmp_path / "e.xml"], tmp_path / "all.xml")
    root = ET.parse(tmp_path / "all.xml").getroot()
    assert root.tag == "testsuites" and [s.get("tests") for s in root] == ["2", "1"]
    assert [c.get("name") for c in root.iter("testcase")] == ["a", "b", "c"]
    assert root.find(".//failure").get("message") == "boom"
