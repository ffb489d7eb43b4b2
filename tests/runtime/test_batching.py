"""The micro-batcher without HTTP or TF (kit/runtime/serving/batching.py).

The "model" is a numpy function whose every output row depends only on its
own input row, like a real inference model, so padding and splitting must
give back exactly the rows of an unbatched call. It records the batch sizes
it was called with: only built sizes may ever appear.
"""

import threading
import time
from collections import OrderedDict

import numpy as np
import pytest

from kit.runtime.serving.batching import BatchPlan, MicroBatcher, QueueFull, Stopped, pad_rows


class RowModel(object):
    def __init__(self, gate=None, poison=None):
        self.calls = []
        self.gate = gate
        self.poison = poison
        self.lock = threading.Lock()

    def __call__(self, signature, inputs):
        x = inputs["x"]
        if self.gate is not None:
            self.gate.wait(10)
        if self.poison is not None and (x == self.poison).any():
            raise ValueError("poisoned row")
        with self.lock:
            self.calls.append(x.shape[0])
        return OrderedDict([("y", x * 2.0 + x.sum(axis=1, keepdims=True)), ("n", x.shape[0] + 0 * x[:, 0])])


def expected(x):
    return x * 2.0 + x.sum(axis=1, keepdims=True)


def test_plan_padding_and_chunks():
    plan = BatchPlan([8, 1, 4, 4])
    assert plan.sizes == [1, 4, 8] and plan.max_size == 8
    assert [plan.padded_size(n) for n in (1, 2, 4, 5, 8)] == [1, 4, 4, 8, 8]
    assert plan.chunks(19) == [(0, 8), (8, 16), (16, 19)]
    assert plan.chunks(8) == [(0, 8)]
    with pytest.raises(ValueError):
        plan.padded_size(9)
    with pytest.raises(ValueError):
        BatchPlan([0, 2])


def test_pad_rows_repeats_the_last_row_for_any_dtype():
    x = np.array([[1, 2], [3, 4]], np.int32)
    np.testing.assert_array_equal(pad_rows(x, 4), [[1, 2], [3, 4], [3, 4], [3, 4]])
    s = np.array([b"a", b"b"], dtype=object)
    assert list(pad_rows(s, 3)) == [b"a", b"b", b"b"]
    assert pad_rows(x, 2) is x


def run_batcher(model, plan_sizes, max_delay=0.05, max_queue=64):
    batcher = MicroBatcher(model, BatchPlan(plan_sizes), max_delay=max_delay, max_queue=max_queue)
    batcher.start()
    return batcher


def test_a_partial_batch_is_padded_and_depadded_exactly():
    model = RowModel()
    batcher = run_batcher(model, [1, 4, 8], max_delay=0.0)
    x = np.random.RandomState(0).rand(3, 5).astype(np.float32)
    out = batcher.submit("s", {"x": x}, 3).wait(5)
    batcher.stop(5)
    assert model.calls == [4]  # 3 rows ran as the built size 4
    assert out["y"].shape == (3, 5)
    np.testing.assert_array_equal(out["y"], expected(x))


def test_concurrent_requests_share_batches_of_built_sizes_only():
    model = RowModel()
    batcher = run_batcher(model, [1, 4, 8], max_delay=0.2)
    rng = np.random.RandomState(1)
    xs = [rng.rand(1, 3).astype(np.float32) for _ in range(12)]
    results = [None] * len(xs)
    barrier = threading.Barrier(len(xs))

    def client(i):
        barrier.wait()
        results[i] = batcher.submit("s", {"x": xs[i]}, 1).wait(10)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.stop(5)
    for x, out in zip(xs, results):
        np.testing.assert_array_equal(out["y"], expected(x))
    assert set(model.calls) <= {1, 4, 8}
    assert len(model.calls) < len(xs)  # requests were really batched together
    assert sum(model.calls) >= len(xs)


def test_an_oversized_request_is_split_and_reassembled_in_order():
    model = RowModel()
    batcher = run_batcher(model, [2, 4], max_delay=0.0)
    x = np.arange(22, dtype=np.float32).reshape(11, 2)
    out = batcher.submit("s", {"x": x}, 11).wait(5)
    batcher.stop(5)
    np.testing.assert_array_equal(out["y"], expected(x))
    assert out["y"].shape == (11, 2)
    assert sorted(model.calls) == [4, 4, 4]  # 4 + 4 + 3 (padded to 4)


def test_different_example_shapes_never_share_a_batch():
    model = RowModel()
    batcher = run_batcher(model, [8], max_delay=0.1)
    a = batcher.submit("s", {"x": np.ones((1, 3), np.float32)}, 1)
    b = batcher.submit("s", {"x": np.ones((1, 5), np.float32)}, 1)
    assert a.wait(5)["y"].shape == (1, 3) and b.wait(5)["y"].shape == (1, 5)
    batcher.stop(5)
    assert model.calls == [8, 8]


def test_queue_full_raises_and_counts_chunks_as_items():
    gate = threading.Event()
    model = RowModel(gate=gate)
    batcher = run_batcher(model, [2], max_delay=0.0, max_queue=3)
    first = batcher.submit("s", {"x": np.ones((1, 2), np.float32)}, 1)
    deadline = time.time() + 5
    while batcher.depth() and time.time() < deadline:  # the worker took it and blocks in the model
        time.sleep(0.01)
    batcher.submit("s", {"x": np.ones((4, 2), np.float32)}, 4)  # 2 chunks = 2 items
    assert batcher.depth() == 2 and batcher.has_room(1) and not batcher.has_room(2)
    with pytest.raises(QueueFull):
        batcher.submit("s", {"x": np.ones((3, 2), np.float32)}, 3)  # 2 more items: 4 > 3
    gate.set()
    assert first.wait(5)["y"].shape == (1, 2)
    batcher.stop(5)


def test_one_bad_request_does_not_fail_its_batch_neighbours():
    model = RowModel(poison=-1.0)
    batcher = run_batcher(model, [4], max_delay=0.2)
    good = batcher.submit("s", {"x": np.ones((1, 2), np.float32)}, 1)
    bad = batcher.submit("s", {"x": -np.ones((1, 2), np.float32)}, 1)
    np.testing.assert_array_equal(good.wait(5)["y"], expected(np.ones((1, 2), np.float32)))
    with pytest.raises(ValueError, match="poisoned"):
        bad.wait(5)
    batcher.stop(5)


def test_unbatchable_jobs_run_alone_and_unpadded():
    model = RowModel()
    batcher = run_batcher(model, [4], max_delay=0.0)
    out = batcher.submit("s", {"x": np.ones((3, 2), np.float32)}, 3, batchable=False).wait(5)
    batcher.stop(5)
    assert model.calls == [3] and out["y"].shape == (3, 2)


def test_stop_finishes_queued_work_then_refuses_new_work():
    gate = threading.Event()
    model = RowModel(gate=gate)
    batcher = run_batcher(model, [1], max_delay=0.0)
    pending = [batcher.submit("s", {"x": np.full((1, 2), i, np.float32)}, 1) for i in range(3)]
    stopper = threading.Thread(target=batcher.stop, args=(10,))
    stopper.start()
    time.sleep(0.1)
    with pytest.raises(Stopped):
        batcher.submit("s", {"x": np.ones((1, 2), np.float32)}, 1)
    gate.set()
    stopper.join(10)
    assert not stopper.is_alive()
    for i, p in enumerate(pending):
        np.testing.assert_array_equal(p.wait(1)["y"], expected(np.full((1, 2), i, np.float32)))


def test_a_lone_request_does_not_wait_when_nobody_else_is_arriving():
    model = RowModel()
    batcher = MicroBatcher(model, BatchPlan([1, 8]), max_delay=2.0, arriving=lambda: 0)
    batcher.start()
    start = time.monotonic()
    batcher.submit("s", {"x": np.ones((1, 2), np.float32)}, 1).wait(5)
    assert time.monotonic() - start < 1.0  # far less than max_delay
    batcher.stop(5)
    assert model.calls == [1]


def test_a_partial_batch_waits_for_requests_still_arriving():
    model = RowModel()
    arriving = [1]
    batcher = MicroBatcher(model, BatchPlan([1, 2, 4]), max_delay=2.0, arriving=lambda: arriving[0])
    batcher.start()
    first = batcher.submit("s", {"x": np.ones((1, 2), np.float32)}, 1)
    time.sleep(0.2)
    assert not first.done()  # the worker waits: one more request is on its way
    second = batcher.submit("s", {"x": np.zeros((1, 2), np.float32)}, 1)
    arriving[0] = 0
    batcher.wake()
    first.wait(5), second.wait(5)
    batcher.stop(5)
    assert model.calls == [2]  # both ran in one batch
