"""The label journal: append-only, undo as an entry, a torn last line ignored and cut before the next
append, sequence numbers continuing."""

from __future__ import annotations

import json

import pytest

from dalkit.errors import DatasetFormatError
from dalkit.label.journal import Journal


def test_undo_pops_the_items_latest_entry_in_force(tmp_path):
    j = Journal(tmp_path / "journal.jsonl")
    j.append([{"op": "label", "item": "a", "label": "cat"}])
    j.append([{"op": "label", "item": "a", "label": "dog"}, {"op": "ood", "item": "b"}])
    assert j.state()["a"].label == "dog" and j.state()["b"].ood
    j.append([{"op": "undo", "item": "a"}])
    assert j.state()["a"].label == "cat"  # back to the earlier label, not unlabeled
    j.append([{"op": "undo", "item": "a"}, {"op": "undo", "item": "b"}])
    assert j.state() == {}
    lines = (tmp_path / "journal.jsonl").read_text().splitlines()
    assert [json.loads(x)["seq"] for x in lines] == list(range(6))  # nothing edited, one line per entry
    assert [json.loads(x)["op"] for x in lines] == ["label", "label", "ood", "undo", "undo", "undo"]


def test_torn_last_line_is_ignored_then_cut(tmp_path):
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    j.append([{"op": "label", "item": "a", "label": "cat"}])
    with open(path, "ab") as fh:  # a crash in the middle of a write
        fh.write(b'{"seq":1,"time":"x","op":"label","item":"b","lab')
    assert list(j.state()) == ["a"]
    j.append([{"op": "label", "item": "c", "label": "dog"}])
    entries = j.read()
    assert [e["item"] for e in entries] == ["a", "c"] and [e["seq"] for e in entries] == [0, 1]
    assert path.read_bytes().endswith(b"\n") and b'"lab\n' not in path.read_bytes()


def test_a_damaged_line_in_the_middle_is_refused(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_text('{"seq":0,"op":"label","item":"a","label":"x"}\nnot json\n'
                    '{"seq":2,"op":"ood","item":"b"}\n')
    with pytest.raises(DatasetFormatError, match="line 2 is damaged"):
        Journal(path).read()
