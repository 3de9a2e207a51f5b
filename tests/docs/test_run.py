"""The documentation test's own matching rules (tests/docs/run.py)."""

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("run", Path(__file__).with_name("run.py"))
run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run)


def test_json_placeholders_stand_for_any_value_and_nothing_else():
    assert run.json_matches({"at": "<time>", "n": 1}, {"at": "2026-12-08T00:00:00Z", "n": 1}) == []
    assert run.json_matches({"at": "<time>"}, {"at": None}) == []
    assert run.json_matches({"n": 1}, {"n": 2}) != []
    assert run.json_matches({"n": 1}, {"n": 1.0}) != [], "a number's type is shown too"
    assert run.json_matches({"n": 1}, {"n": 1, "m": 2}) != [], "a key not shown is a difference"
    assert run.json_matches({"n": 1, "...": "..."}, {"n": 1, "m": 2}) == []
    assert run.json_matches({"n": 1, "m": 2}, {"n": 1}) != []
    assert run.json_matches([1, "..."], [1, 2, 3]) == []
    assert run.json_matches([1, 2], [1, 2, 3]) != []
    assert run.json_matches([1, "..."], []) != []


def test_text_placeholders_stay_within_a_line_and_dots_take_lines():
    assert run.text_matches("id: <id>\n", "id: 0192-ab\n") == []
    assert run.text_matches("id: <id>\n", "id: \n") != [], "a placeholder stands for something"
    assert run.text_matches("a\n...\nz\n", "a\nb\nc\nz\n") == []
    assert run.text_matches("a\n...\nz\n", "a\nz\n") == []
    assert run.text_matches("a\nz\n", "a\nb\nz\n") != []
    assert run.text_matches("a\n", "b\n") != []
    assert run.text_matches("<h1>Report</h1>\n", "<p>real</p>\n") != [], "markup is text, not a placeholder"


def test_blocks_are_read_with_their_kind_and_line(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# t\n\n```sh\necho hi\n```\n\n```text output\nhi\n```\n\n````md\n```sh\nx\n```\n````\n")
    assert run.blocks(page) == [(3, "sh", "echo hi\n"), (7, "text output", "hi\n"), (11, "md", "```sh\nx\n```\n")]


def test_a_block_in_a_list_item_is_read_too(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("1. Run:\n\n   ```sh\n   echo hi\n     indented\n   ```\n")
    assert run.blocks(page) == [(3, "sh", "echo hi\n  indented\n")]


def test_a_block_shown_but_not_run_is_still_checked():
    subcommands = {"serve", "classify"}
    assert run.check_not_run("enc classify web01\n", subcommands) == []
    assert run.check_not_run("enc clasify web01\n", subcommands) != []
    assert run.check_not_run("if then\n", subcommands) != []
    assert run.check_not_run('rm -rf $DIR/*\n', subcommands) != [], "shellcheck's warnings count"
