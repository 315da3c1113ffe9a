"""The offline contract: atlas scan classify --input IN.jsonl --output OUT.jsonl [--policy FILE]."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from scanner.cli import register

REPO = Path(__file__).resolve().parent.parent

RECORDS = [
    {"id": "a", "pmid": "1", "title": "Rituximab in ME/CFS: a randomized, placebo-controlled trial",
     "abstract": "151 patients aged 18 to 65 years who had ME/CFS according to Canadian consensus criteria were "
                 "randomised.", "methods": None},
    {"id": "b", "pmid": None, "title": "PACE", "abstract": "Patients meeting Oxford criteria for chronic fatigue "
     "syndrome were recruited from six clinics.", "methods": None},
    {"id": "c", "pmid": "3", "title": "Case definitions of ME/CFS: a narrative review",
     "abstract": "We discuss the Fukuda criteria and the CCC.", "methods": None},
    {"id": "d", "pmid": "4", "title": "Muscle oxygenation in ME/CFS", "abstract": None,
     "methods": "Inclusion criteria were a diagnosis of ME/CFS according to the International Consensus Criteria."},
    {"id": "e", "pmid": "5", "title": "Gut microbiome in chronic fatigue syndrome", "abstract": "Twenty patients "
     "and twenty healthy controls gave stool samples.", "methods": None},
]


def app() -> typer.Typer:
    root = typer.Typer()
    register(root)
    return root


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def run(args: list[str]):
    return CliRunner().invoke(app(), ["scan", "classify", *args])


def test_one_output_line_per_input_line_in_order_with_verbatim_quotes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default policy is found from any working directory
    source = write_lines(tmp_path / "in.jsonl", [json.dumps(r) for r in RECORDS])
    result = run(["--input", str(source), "--output", str(tmp_path / "out" / "out.jsonl")])
    assert result.exit_code == 0, result.output
    out = [json.loads(line) for line in (tmp_path / "out" / "out.jsonl").read_text("utf-8").splitlines()]
    assert [o["id"] for o in out] == ["a", "b", "c", "d", "e"]
    assert all(set(o) == {"id", "criteria", "pem", "design", "evidence"} for o in out)
    assert [(o["criteria"], o["pem"]) for o in out] == [
        (["ccc_2003"], "required"), (["oxford_1991"], "not_required"), (["not_stated"], "not_applicable"),
        (["icc_2011"], "required"), (["not_stated"], "unclear")]
    assert [o["design"] for o in out] == ["rct", "unknown", "review", "unknown", "case_control"]
    by_id = {r["id"]: r for r in RECORDS}
    for o in out:
        assert o["evidence"], o
        for item in o["evidence"]:
            assert set(item) == {"label", "quote", "source"}
            assert item["source"] in {"title", "abstract", "methods"}
            assert item["quote"] in by_id[o["id"]][item["source"]]
    assert out[3]["evidence"][0]["source"] == "methods"


@pytest.mark.parametrize("bad,problem", [
    ("{not json", "line 2: not valid JSON"),
    ('{"id": "x"}', "line 2: missing required field 'title'"),
    ('{"id": 5, "title": "t"}', "line 2: field 'id' must be a string"),
    ('{"id": "x", "title": "t", "abstract": 3}', "line 2: field 'abstract' must be a string or null"),
    ("[1, 2]", "line 2: expected a JSON object"),
    ("", "line 2: empty line"),
])
def test_a_bad_line_names_its_number_and_writes_no_output(tmp_path, bad, problem):
    source = write_lines(tmp_path / "in.jsonl", [json.dumps(RECORDS[0]), bad, json.dumps(RECORDS[1])])
    target = tmp_path / "out.jsonl"
    result = run(["--input", str(source), "--output", str(target)])
    assert result.exit_code == 1
    assert problem in result.output
    assert not target.exists()
    assert list(tmp_path.iterdir()) == [source]  # no temporary file left behind either


def test_a_line_that_is_not_utf8_is_named_and_a_bom_is_accepted(tmp_path):
    good = json.dumps(RECORDS[0]).encode()
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\xef\xbb\xbf" + good + b"\n" + good.replace(b'"title": "', b'"title": "\xe9', 1) + b"\n")
    result = run(["--input", str(source), "--output", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 1 and "line 2: not UTF-8 (byte 0xe9" in result.output
    assert not (tmp_path / "out.jsonl").exists()
    source.write_bytes(b"\xef\xbb\xbf" + good + b"\n")  # a byte-order mark before the first line is not data
    assert run(["--input", str(source), "--output", str(tmp_path / "out.jsonl")]).exit_code == 0


def test_an_existing_output_is_kept_when_the_input_is_bad(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("previous results\n")
    source = write_lines(tmp_path / "in.jsonl", [json.dumps(RECORDS[0]), "{broken"])
    assert run(["--input", str(source), "--output", str(target)]).exit_code == 1
    assert target.read_text() == "previous results\n"


def test_explicit_policy_changes_the_output(tmp_path):
    strict = tmp_path / "strict.yaml"
    strict.write_text((REPO / "policies" / "v0.1.yaml").read_text("utf-8").replace(
        "    requires_pem: false\n    reason: \"Six months", "    requires_pem: true\n    reason: \"Six months"))
    source = write_lines(tmp_path / "in.jsonl", [json.dumps(RECORDS[1])])
    assert run(["--input", str(source), "--output", str(tmp_path / "o.jsonl"), "--policy", str(strict)]).exit_code == 0
    assert json.loads((tmp_path / "o.jsonl").read_text())["pem"] == "required"


def test_missing_input_and_missing_policy_are_clear_errors(tmp_path):
    result = run(["--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 1 and "no such input file" in result.output
    source = write_lines(tmp_path / "in.jsonl", [json.dumps(RECORDS[0])])
    result = run(["--input", str(source), "--output", str(tmp_path / "o.jsonl"), "--policy", "nope.yaml"])
    assert result.exit_code == 1 and "no such policy file" in result.output


def test_optional_year_resolves_bare_names(tmp_path):
    record = {"id": "n", "pmid": None, "title": "T", "abstract": "Patients met the NICE criteria and were recruited.",
              "methods": None}
    source = write_lines(tmp_path / "in.jsonl", [json.dumps(record), json.dumps({**record, "id": "y", "year": 2024}),
                                                 json.dumps({**record, "id": "s", "year": "2024"})])
    assert run(["--input", str(source), "--output", str(tmp_path / "o.jsonl")]).exit_code == 0
    out = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [(o["criteria"], o["pem"]) for o in out] == [(["nice_2007"], "not_required"), (["nice_2021"], "required"),
                                                        (["nice_2021"], "required")]  # a year given as digits
