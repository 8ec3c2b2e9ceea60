"""The real side's cache: kept, found again, never stale, safe to damage or delete."""

from __future__ import annotations

import json

import pytest
import torch

from vaegen.evaluation import real_cache
from vaegen.evaluation.real_cache import NUMBERS, TENSORS, cache_key, open_real_side

RECIPE = {"data_sha256": "ab" * 32, "feature_net": "cd" * 32, "n": 100, "seed": 0}


def _fill(recipe=RECIPE):
    side = open_real_side(recipe)
    calls = []

    def make():
        calls.append(1)
        return torch.arange(6.0).reshape(2, 3)

    side.tensor("features.test", make)
    side.number("frechet.floor", lambda: {"value": 1.5, "low": 1.0, "high": 2.0})
    side.save()
    return side, calls


def test_an_entry_is_found_by_the_next_evaluation_with_the_same_recipe():
    first, calls = _fill()
    assert first.summary()["measured"] == ["features.test", "frechet.floor"]
    second = open_real_side(dict(RECIPE))
    got = second.tensor("features.test", lambda: pytest.fail("measured again"))
    assert torch.equal(got, torch.arange(6.0).reshape(2, 3))
    assert second.number("frechet.floor", lambda: pytest.fail("measured again"))["low"] == 1.0
    assert second.summary()["found"] == ["features.test", "frechet.floor"]
    assert not second.summary()["measured"]
    second.save()  # nothing new: nothing written
    assert calls == [1]


@pytest.mark.parametrize("change", ["data_sha256", "feature_net", "n", "seed"])
def test_another_dataset_network_or_recipe_is_another_entry(change):
    _fill()
    other = {**RECIPE, change: RECIPE[change] + 1 if isinstance(RECIPE[change], int) else "ef"}
    assert cache_key(other) != cache_key(RECIPE)
    side = open_real_side(other)
    assert side.folder != open_real_side(RECIPE).folder and not side.tensors and not side.numbers


@pytest.mark.parametrize("damage", ["tensors", "numbers", "recipe"])
def test_a_damaged_entry_is_measured_again_and_replaced(damage):
    first, _ = _fill()
    folder = first.folder
    if damage == "tensors":
        (folder / TENSORS).write_bytes((folder / TENSORS).read_bytes()[:-3] + b"xyz")
    elif damage == "numbers":
        (folder / NUMBERS).write_text("{not json")
    else:
        numbers = json.loads((folder / NUMBERS).read_text())
        numbers["recipe"]["n"] = 7  # a file moved between keys by hand
        (folder / NUMBERS).write_text(json.dumps(numbers))
    again, calls = _fill()
    assert calls == [1] and again.summary()["measured"] == ["features.test", "frechet.floor"]
    assert open_real_side(RECIPE).numbers  # replaced whole, readable again


def test_the_cache_is_off_with_vaegen_no_cache(monkeypatch):
    monkeypatch.setenv("VAEGEN_NO_CACHE", "1")
    side, _ = _fill()
    assert side.folder is None and real_cache.cache_folder() is None
    assert open_real_side(RECIPE).tensors == {}
