"""Policy documents: schema, hash, errors that name field and line, and the policy commands."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from atlas.errors import PolicyError
from scanner.cli import register
from scanner.extract import Extractor
from scanner.facts import PaperText
from scanner.policy import CATALOGUE_IDS, diff_policies, load_policy, parse_policy

REPO = Path(__file__).resolve().parent.parent
POLICY = REPO / "policies" / "v0.1.yaml"


@pytest.fixture
def text() -> str:
    return POLICY.read_text("utf-8")


def app() -> typer.Typer:
    root = typer.Typer()
    register(root)
    return root


def test_v01_loads_with_every_catalogue_id_and_a_byte_hash():
    policy = load_policy(POLICY)
    assert policy.version == "0.1"
    assert [c.id for c in policy.criteria] == [
        "holmes_1988", "oxford_1991", "fukuda_1994", "london", "ramsay", "ccc_2003", "reeves_2005",
        "pediatric_2006", "nice_2007", "icc_2011", "iom_2015", "nice_2021", "other"]
    assert sorted(c.id for c in policy.criteria) == sorted(CATALOGUE_IDS)
    assert policy.hash == hashlib.sha256(POLICY.read_bytes()).hexdigest()


def test_v01_pem_requirements_follow_the_reference_table():
    requires = load_policy(POLICY).requires_pem
    assert {k for k, v in requires.items() if v is True} == {
        "ccc_2003", "icc_2011", "iom_2015", "nice_2021", "pediatric_2006", "london", "ramsay"}
    assert {k for k, v in requires.items() if v is False} == {
        "fukuda_1994", "oxford_1991", "holmes_1988", "reeves_2005", "nice_2007"}
    assert requires["other"] is None


def test_london_and_ramsay_decisions_carry_a_reason():
    policy = load_policy(POLICY)
    for cid in ("london", "ramsay"):
        assert "compulsory" in policy.criterion(cid).reason


def test_every_badge_has_wording_and_an_explainer():
    policy = load_policy(POLICY)
    assert policy.badges["required"].label == "PEM required"
    assert "explicit, required inclusion criterion" in policy.badges["required"].explainer
    assert "Fukuda" in policy.badges["not_required"].explainer
    assert set(policy.badges) == {"required", "not_required", "unclear", "not_applicable"}


def test_a_one_character_edit_is_a_new_identity(text):
    a = parse_policy(text.encode())
    b = parse_policy((text + "\n# comment\n").encode())
    assert a.hash != b.hash and a.version == b.version


def test_bad_value_error_names_field_and_line(text):
    broken = text.replace("    requires_pem: false\n    reason: \"Six months", "    requires_pem: sometimes\n    reason: \"Six months", 1)
    line = broken.splitlines().index("    requires_pem: sometimes") + 1
    with pytest.raises(PolicyError) as error:
        parse_policy(broken.encode(), source="p.yaml")
    message = str(error.value)
    assert f"line {line}" in message and "criteria.1.requires_pem" in message


def test_unknown_field_is_rejected_with_its_line(text):
    broken = text.replace("rules:\n", "rules:\n  surprise: true\n", 1)
    line = broken.splitlines().index("  surprise: true") + 1
    with pytest.raises(PolicyError, match=rf"line {line}: rules.surprise: Extra inputs are not permitted"):
        parse_policy(broken.encode())


def test_a_check_across_fields_is_reported_at_the_field_it_names(text):
    broken = text.replace("{from: 2022, id: nice_2021}", "{from: 2022, id: nice_2099}", 1)
    line = broken.splitlines().index("  nice:") + 1
    with pytest.raises(PolicyError, match=rf"line {line}: \(document\): ambiguous.nice: 'nice_2099' is not a catalogue id"):
        parse_policy(broken.encode())


def test_missing_catalogue_id_and_unquoted_version_are_errors(text):
    without_ramsay = text.replace("  - id: ramsay\n", "  - id: ramsay_typo\n", 1)
    with pytest.raises(PolicyError, match="unknown criterion id 'ramsay_typo'"):
        parse_policy(without_ramsay.encode())
    with pytest.raises(PolicyError, match=r"line 11: version: .*quoted string"):
        parse_policy(text.replace('version: "0.1"', "version: 0.1", 1).encode())


def test_not_yaml_is_a_policy_error_with_a_line():
    with pytest.raises(PolicyError, match="line 2 not valid YAML"):
        parse_policy(b"version: '0.1'\ncriteria: : x\n")


def test_policy_aliases_are_recognised_by_the_extractor_as_their_definition():
    """The policy's alias lists are what the extractor actually matches (families resolve by year)."""
    policy = load_policy(POLICY)
    extractor = Extractor()
    for criterion in policy.criteria:
        for alias in criterion.aliases:
            if "(" in alias:  # "NICE criteria (2022 onwards)": a note, resolved by year below
                continue
            facts = extractor.extract(PaperText(abstract=f"All patients met the {alias} and were recruited.", year=2020))
            found = {m.criterion for m in facts.mentions}
            resolved = {policy.ambiguous[k].resolve(2020) if k in policy.ambiguous else k for k in found}
            assert criterion.id in resolved, f"{alias!r} was read as {found}"


def test_ambiguous_names_resolve_by_year():
    policy = load_policy(POLICY)
    assert policy.ambiguous["cdc"].resolve(1990) == "holmes_1988"
    assert policy.ambiguous["cdc"].resolve(2001) == "fukuda_1994"
    assert policy.ambiguous["cdc"].resolve(None) == "fukuda_1994"
    assert policy.ambiguous["nice"].resolve(2015) == "nice_2007"
    assert policy.ambiguous["nice"].resolve(2023) == "nice_2021"
    assert policy.ambiguous["nice"].resolve(None) == "nice_2007"


def test_cli_validate_show_and_diff(tmp_path, text):
    runner = CliRunner()
    ok = runner.invoke(app(), ["policy", "validate", str(POLICY)])
    assert ok.exit_code == 0 and "policy v0.1" in ok.output
    shown = runner.invoke(app(), ["policy", "show"], terminal_width=200)
    assert shown.exit_code == 0 and "fukuda_1994" in shown.output and "PEM required" in shown.output

    stricter = tmp_path / "v0.2.yaml"
    stricter.write_text(text.replace('version: "0.1"', 'version: "0.2"').replace(
        "    requires_pem: false\n    reason: \"PEM over 24 hours", "    requires_pem: true\n    reason: \"PEM over 24 hours"))
    changes = dict((path, (a, b)) for path, a, b in diff_policies(load_policy(POLICY), load_policy(stricter)))
    assert changes["criteria.fukuda_1994.requires_pem"] == (False, True)
    diffed = runner.invoke(app(), ["policy", "diff", str(POLICY), str(stricter)], terminal_width=250)
    assert diffed.exit_code == 0 and "criteria.fukuda_1994.requires_pem" in diffed.output

    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("  not_stated: unclear", "  not_stated: perhaps"))
    failed = runner.invoke(app(), ["policy", "validate", str(bad)])
    assert failed.exit_code == 1 and "rules.not_stated" in failed.output and "line" in failed.output
