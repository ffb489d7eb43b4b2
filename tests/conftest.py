"""Shared fixtures. SavedModels are made for real (tests/models.py), once per session."""

import pytest

import models


@pytest.fixture(scope="session")
def saved_models(tmp_path_factory):
    """Real SavedModels: cnn, cnn_other (same graph, other weights), two_inputs, dynamic."""
    root = tmp_path_factory.mktemp("saved-models")
    return {
        "cnn": models.make_cnn(root / "cnn", seed=0),
        "cnn_other": models.make_cnn(root / "cnn_other", seed=1),
        "two_inputs": models.make_two_input(root / "two_inputs"),
        "dynamic": models.make_dynamic(root / "dynamic"),
        "tf1_multi": models.make_tf1_multi_input(root / "tf1_multi"),
    }
