"""The random streams are frozen: their offsets are part of what every past seed means."""

from __future__ import annotations

from dataclasses import asdict

from vaegen.seeds import CLASSIFIER, EVALUATION, TRAINING


def test_the_training_streams_are_frozen():
    assert asdict(TRAINING) == {
        "init": 0,
        "shuffle": 1,
        "noise": 2,
        "test_loss": 3,
        "parity": 4,
        "prior": 0,
    }


def test_the_evaluation_streams_are_frozen():
    assert asdict(EVALUATION) == {
        "real_subset": 0,
        "elbo": 1,
        "binarize": 2,
        "iwae": 3,
        "generated": 4,
        "tstr": 5,
        "holdout": 6,
        "bootstrap": 7,
        "two_sample": 8,
        "kid": 9,
        "tstr_mlp": 10,
    }


def test_the_classifier_streams_are_frozen():
    assert asdict(CLASSIFIER) == {"init": 0, "batches": 1}


def test_the_streams_within_one_table_are_distinct():
    """Two streams of one table at one offset would draw the same numbers (the prior's fit and
    the initialisation use different generators: torch's and scikit-learn's)."""
    for table, shared in ((TRAINING, {"init", "prior"}), (EVALUATION, set()), (CLASSIFIER, set())):
        offsets = {k: v for k, v in asdict(table).items() if k not in shared or k == min(shared)}
        assert len(set(offsets.values())) == len(offsets), table
