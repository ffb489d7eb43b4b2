"""kit.labels: the label keys and their small typed reader."""

from __future__ import annotations

import pytest

from kit import labels as lb


def test_text_writes_none_and_joins_lists():
    assert lb.text(None) == "none" and lb.text([1, 8]) == "1,8" and lb.text((4,)) == "4" and lb.text(3) == "3"


@pytest.mark.parametrize("raw", [None, "", "none", "NULL", "-", "  none  "])
def test_empty_spellings_read_as_none(raw):
    labels = {} if raw is None else {lb.L4T: raw}
    assert lb.value(labels, lb.L4T) is None


def test_value_strips():
    assert lb.value({lb.L4T: " 32.4.4 "}, lb.L4T) == "32.4.4"


@pytest.mark.parametrize("raw, sizes", [("1,8", [1, 8]), ("1, 4 ,", [1, 4]), ("none", []), ("1,x", []), (None, [])])
def test_batch_sizes(raw, sizes):
    assert lb.batch_sizes({} if raw is None else {lb.BATCH_SIZES: raw}) == sizes


def test_a_fingerprint_needs_every_required_label():
    full = {lb.DEVICE: "cpu", lb.OPTIMIZATION: "native", lb.MODEL_DIGEST: "sha256:1"}
    assert lb.Fingerprint.from_labels(full) is not None
    for key in lb.REQUIRED:
        assert lb.Fingerprint.from_labels(dict(full, **{key: "none"})) is None


def test_keys_are_unique_and_namespaced():
    keys = [v for k, v in vars(lb).items() if k.isupper() and isinstance(v, str) and k != "EMPTY"]
    assert len(keys) == len(set(keys))
    assert all(k.startswith(("kit.", "org.opencontainers.image.")) for k in keys)
