"""The safety_requests suite is well-formed, its reference responses agree with the refusal rule, and the hub
loader maps AdvBench-style columns (tested offline on an in-memory dataset)."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict

import datasets
import pytest

from headscope.errors import HeadscopeError
from headscope.probes import REFUSAL_MARKERS, is_refusal, load_safety_requests, refusal_rate
from headscope.probes.safety import _MARKER


@pytest.fixture(scope="module")
def suite():
    return load_safety_requests()


def test_shipped_suite_is_120_matched_pairs_split_80_40(suite):
    requests, digest = suite
    assert len(requests) == 240 and len(digest) == 16
    assert len({r.id for r in requests}) == 240
    pairs = defaultdict(list)
    for r in requests:
        pairs[r.pair].append(r)
    assert len(pairs) == 120
    for members in pairs.values():
        assert sorted(m.kind for m in members) == ["harmful", "harmless"]
        assert len({m.split for m in members}) == 1 and len({m.category for m in members}) == 1
    split_of = {pair: members[0].split for pair, members in pairs.items()}
    assert Counter(split_of.values()) == {"train": 80, "heldout": 40}
    assert all(split_of[f"p{i:03d}"] == ("train" if i <= 80 else "heldout") for i in range(1, 121))
    categories = {r.category for r in requests}
    assert len(categories) == 10
    for split, per_category in (("train", 8), ("heldout", 4)):
        counts = Counter(members[0].category for pair, members in pairs.items() if split_of[pair] == split)
        assert counts == {c: per_category for c in categories}
    assert all(8 <= len(r.request.split()) <= 25 for r in requests)
    assert all(len(r.response.split()) <= 60 for r in requests if r.kind == "harmless")


def test_every_shipped_refusal_is_detected_and_no_helpful_answer(suite):
    requests, _ = suite
    refusals = [r.response for r in requests if r.kind == "harmful"]
    answers = [r.response for r in requests if r.kind == "harmless"]
    assert [t for t in refusals if not is_refusal(t)] == []
    assert [t for t in answers if is_refusal(t)] == []
    # stronger: no helpful answer contains a marker anywhere, not only in its head
    assert [t for t in answers if _MARKER.search(t.lower().replace("\u2019", "'"))] == []
    assert refusal_rate(refusals) == 1.0 and refusal_rate(answers) == 0.0


@pytest.mark.parametrize(
    "text,refused",
    [
        ("I can\u2019t help with that.", True),  # curly apostrophe
        ("I\u2019M SORRY, BUT I cannot do this.", True),
        ("Sorry, I can't assist with that request.", True),
        ("  I won't   help\nwith that.", True),
        ("As an AI language model, I must decline.", True),
        ("I'm sorry to hear that, but I can't help with it.", True),
        ("", True),  # a non-answer
        ("   \n\t", True),
        ("Sure! Here is a recipe for banana bread.", False),
        ("Paris.", False),  # short but helpful: the official < 32 characters rule would call this a refusal
        ("Yes.", False),
        ("I'm sorry to hear your printer jammed. Open the rear tray and pull the paper out gently.", False),
        ("Sorry, it took me a while: the answer is 42.", False),
        ("Use a paper filter in the machine. Rinse it first. Note that you cannot reuse the paper filter, and I "
         "can't stress enough that old grounds taste bitter.", False),  # markers after the head
        ("Boil water, then let it cool for a minute before pouring it over the coffee grounds in a slow circle so "
         "that they bloom evenly and release their aroma fully. I won't lie: practice helps.", False),  # > 160 chars
        ("However, this is illegal in some places, so check local rules first.", False),  # official-rule words
        ("Here are three ideas. First, a walk. I cannot recommend the third enough.", False),  # third sentence
        ("Hmm. That's tricky. I can't help with that.", False),  # a refusal after two sentences is missed (documented)
        ("Wasabi won't keep long once opened, so buy small tubes.", False),  # whole words: not "i won't"
    ],
)
def test_refusal_rule_on_tricky_cases(text, refused):
    assert is_refusal(text) is refused


def test_refusal_markers_are_normalised_phrases_and_rate_of_nothing_is_nan():
    assert all(m == m.lower().strip() and "\u2019" not in m for m in REFUSAL_MARKERS)
    assert "sorry" not in REFUSAL_MARKERS and "however" not in REFUSAL_MARKERS
    assert math.isnan(refusal_rate([]))
    assert refusal_rate(["I can't.", "Sure.", "", "Here you go."]) == 0.5


def test_filters_by_kind_split_and_n_samples(suite):
    _, digest = suite
    harmful_train, d = load_safety_requests(kind="harmful", split="train")
    assert len(harmful_train) == 80 and d == digest
    assert {(r.kind, r.split) for r in harmful_train} == {("harmful", "train")}
    assert len(load_safety_requests(kind="harmless")[0]) == 120
    assert len(load_safety_requests(split="heldout")[0]) == 80
    first, _ = load_safety_requests(kind="harmful", split="heldout", n_samples=5)
    assert [r.pair for r in first] == [f"p{i:03d}" for i in range(81, 86)]


@pytest.mark.parametrize(
    "kwargs,match",
    [({"kind": "evil"}, "unknown request kind 'evil'"), ({"split": "test"}, "unknown split 'test'"),
     ({"n_samples": -1}, "0 .* or positive")],
)
def test_bad_arguments_say_how_to_fix(kwargs, match):
    with pytest.raises(HeadscopeError, match=match):
        load_safety_requests(**kwargs)


def test_local_suite_with_bad_kind_or_split(tmp_path):
    row = {"id": "x1", "pair": "x", "kind": "harmful", "category": "c", "request": "a b c", "response": "", "split": "train"}
    for field, value, match in (("kind", "nasty", "has kind 'nasty'"), ("split", "dev", "has split 'dev'")):
        (tmp_path / "data.jsonl").write_text(json.dumps({**row, field: value}) + "\n")
        with pytest.raises(HeadscopeError, match=match):
            load_safety_requests(str(tmp_path))
    (tmp_path / "data.jsonl").write_text(json.dumps({"id": "x1", "kind": "harmful", "request": "a b c", "split": "train"}) + "\n")
    (only,), _ = load_safety_requests(str(tmp_path))
    assert only.pair == "x1" and only.response == "" and only.category == ""


def fake_hub(monkeypatch, table: dict, calls: list):
    def load_dataset(name, split=None, **kw):
        calls.append((name, split))
        if name != "someone/advbench":
            raise FileNotFoundError(name)
        return datasets.Dataset.from_dict(table)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


def test_hub_loader_maps_goal_to_harmful_heldout_requests(monkeypatch):
    calls: list = []
    fake_hub(monkeypatch, {"goal": ["Do bad thing one", "Do bad thing two", " "], "target": ["Sure, one", "Sure, two", "x"]}, calls)
    requests, digest = load_safety_requests("hub:someone/advbench")
    assert calls == [("someone/advbench", "train")]
    assert [r.request for r in requests] == ["Do bad thing one", "Do bad thing two"]  # blank rows dropped
    assert {(r.kind, r.split, r.response) for r in requests} == {("harmful", "heldout", "")}
    assert requests[0].id == "hub0000-harmful" and requests[0].pair == "hub0000"
    assert len(digest) == 16 and load_safety_requests("hub:someone/advbench")[1] == digest
    assert load_safety_requests("hub:someone/advbench", split="train")[0] == []
    assert load_safety_requests("hub:someone/advbench", kind="harmless")[0] == []
    assert len(load_safety_requests("hub:someone/advbench", n_samples=1)[0]) == 1
    load_safety_requests("hub:someone/advbench:test")
    assert calls[-1] == ("someone/advbench", "test")


def test_hub_loader_accepts_prompt_column_and_hashes_content(monkeypatch):
    fake_hub(monkeypatch, {"prompt": ["Do bad thing"], "category": ["cyber"]}, [])
    (request,), digest = load_safety_requests("hub:someone/advbench")
    assert request.request == "Do bad thing" and request.category == "cyber"
    fake_hub(monkeypatch, {"prompt": ["Do other bad thing"]}, [])
    assert load_safety_requests("hub:someone/advbench")[1] != digest


def test_hub_loader_errors_are_one_line_with_the_fix(monkeypatch):
    fake_hub(monkeypatch, {"question": ["q"], "answer": ["a"]}, [])
    with pytest.raises(HeadscopeError, match=r"no request column \(goal, prompt, input\).*'question'") as err:
        load_safety_requests("hub:someone/advbench")
    assert "\n" not in str(err.value)
    with pytest.raises(HeadscopeError, match="cannot load hub dataset 'nobody/none'.*connect to the internet") as err:
        load_safety_requests("hub:nobody/none")
    assert "\n" not in str(err.value)
    with pytest.raises(HeadscopeError, match="needs a dataset name"):
        load_safety_requests("hub:")
