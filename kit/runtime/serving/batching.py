"""The request queue and the micro-batcher.

One worker thread takes requests from a bounded FIFO queue, gathers those
that can share a batch (same signature, same per-example shapes and dtypes)
until the largest built batch size is reached or `max_delay` has passed since
the first one was taken (waiting only while more requests are being
received), pads the batch to the nearest built batch size and runs the
model once. Padding matters on a Jetson: TF-TRT built one engine per
batch size, and any other size would make it build a new engine at runtime
(about 30 minutes on a Nano). A request larger than the largest built batch
is split into chunks of that size and reassembled.

Padding repeats the last real example (valid for every dtype, strings too),
and the padded rows are cut off again before anything is returned.

The queue is bounded in *items*: one item per request, or, for a request
split into chunks, one per chunk. `submit` raises QueueFull beyond
`max_queue` items; the server answers 503 with Retry-After.

No TensorFlow here: the worker calls a plain `run(signature, inputs)` function.
"""

import threading
import time
from collections import OrderedDict, deque

import numpy as np


class QueueFull(Exception):
    """The queue holds max_queue items; the caller should retry later."""


class Stopped(Exception):
    """The batcher is draining for shutdown and takes no new work."""


class BatchPlan(object):
    """The built batch sizes and the arithmetic on them."""

    def __init__(self, batch_sizes):
        sizes = sorted(set(int(b) for b in batch_sizes))
        if not sizes or sizes[0] < 1:
            raise ValueError("batch sizes must be positive integers, got %r" % (batch_sizes,))
        self.sizes = sizes
        self.max_size = sizes[-1]

    def padded_size(self, rows):
        """The smallest built batch size that holds `rows` examples."""
        for size in self.sizes:
            if size >= rows:
                return size
        raise ValueError("%d rows exceed the largest built batch size %d" % (rows, self.max_size))

    def chunks(self, rows):
        """(start, stop) ranges of at most max_size rows covering `rows` examples."""
        return [(start, min(start + self.max_size, rows)) for start in range(0, rows, self.max_size)]


def pad_rows(array, target):
    """`array` grown to `target` rows by repeating its last row."""
    missing = target - array.shape[0]
    if missing <= 0:
        return array
    return np.concatenate([array, np.repeat(array[-1:], missing, axis=0)], axis=0)


def assemble(job_inputs, target):
    """Concatenate the inputs of several jobs (key -> array) and pad to `target` rows."""
    if len(job_inputs) == 1:
        merged = job_inputs[0]
    else:
        merged = OrderedDict((key, np.concatenate([inputs[key] for inputs in job_inputs], axis=0))
                             for key in job_inputs[0])
    return OrderedDict((key, pad_rows(value, target)) for key, value in merged.items())


def batch_key(signature_key, inputs):
    """Jobs can share a batch only when everything but the batch dimension agrees."""
    return (signature_key,) + tuple((key, value.shape[1:], value.dtype.str) for key, value in inputs.items())


class Pending(object):
    """A submitted request: its parts complete independently, `wait` reassembles them."""

    def __init__(self, parts):
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._results = [None] * parts
        self._remaining = parts
        self._error = None
        self._callbacks = []

    def _complete(self, index, outputs=None, error=None):
        with self._lock:
            if error is not None and self._error is None:
                self._error = error
            self._results[index] = outputs
            self._remaining -= 1
            done = self._remaining == 0
            callbacks = self._callbacks if done else ()
        if done:
            self._event.set()
            for callback in callbacks:
                callback()

    def add_done_callback(self, callback):
        """Call callback() once every part completed (at once if they have; else on the worker thread)."""
        with self._lock:
            if self._remaining > 0:
                self._callbacks.append(callback)
                return
        callback()

    def done(self):
        return self._event.is_set()

    def wait(self, timeout=None):
        """The outputs (key -> array, de-padded, reassembled), or raise the model's error."""
        if not self._event.wait(timeout):
            raise TimeoutError("the request did not complete in %s s" % timeout)
        if self._error is not None:
            raise self._error
        if len(self._results) == 1:
            return self._results[0]
        first = self._results[0]
        return OrderedDict((key, np.concatenate([part[key] for part in self._results], axis=0)) for key in first)


class _Job(object):
    __slots__ = ("pending", "index", "signature", "inputs", "rows", "key", "batchable")

    def __init__(self, pending, index, signature, inputs, rows, batchable):
        self.pending = pending
        self.index = index
        self.signature = signature
        self.inputs = inputs
        self.rows = rows
        self.batchable = batchable
        self.key = batch_key(signature, inputs) if batchable else None


class MicroBatcher(object):
    """One worker thread behind a bounded queue.

    run(signature_key, inputs) -> outputs: calls the model (key -> numpy arrays).
    on_batch(batch_size, rows, seconds): called after every model call
    (batch_size: what the model ran, rows: real examples in it).
    arriving(): optional, how many requests are being received right now and
    will be submitted soon. With it, a partial batch waits (up to max_delay)
    only while such requests exist, so a lone client never pays the delay;
    without it, a partial batch always waits max_delay for company.
    """

    def __init__(self, run, plan, max_delay=0.002, max_queue=64, on_batch=None, arriving=None):
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self._run = run
        self.plan = plan
        self.max_delay = float(max_delay)
        self.max_queue = int(max_queue)
        self._on_batch = on_batch
        self._arriving = arriving
        self._cond = threading.Condition()
        self._queue = deque()
        self._stopping = False
        self._thread = None

    # ---- client side -----------------------------------------------------

    def depth(self):
        """Items waiting in the queue (not counting the batch being run)."""
        return len(self._queue)

    def has_room(self, items=1):
        return len(self._queue) + items <= self.max_queue and not self._stopping

    def wake(self):
        """Let a waiting worker re-check arrivals (a request it waited for was dropped)."""
        with self._cond:
            self._cond.notify()

    def submit(self, signature, inputs, rows, batchable=True):
        """Queue a request (inputs: key -> array with `rows` examples); returns a Pending."""
        ranges = self.plan.chunks(rows) if batchable else [(0, rows)]
        pending = Pending(len(ranges))
        if batchable and len(ranges) > 1:
            jobs = [_Job(pending, i, signature, OrderedDict((k, v[a:b]) for k, v in inputs.items()), b - a, True)
                    for i, (a, b) in enumerate(ranges)]
        else:
            jobs = [_Job(pending, 0, signature, inputs, rows, batchable)]
        with self._cond:
            if self._stopping:
                raise Stopped("the server is shutting down")
            if len(self._queue) + len(jobs) > self.max_queue:
                raise QueueFull("the queue is full (%d of %d items)" % (len(self._queue), self.max_queue))
            self._queue.extend(jobs)
            self._cond.notify()
        return pending

    # ---- lifecycle -------------------------------------------------------

    def start(self):
        self._thread = threading.Thread(target=self._loop, name="kit-inference", daemon=True)
        self._thread.start()

    def stop(self, timeout=None):
        """Take no new work, finish what is queued, stop the worker. True if it stopped in time."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    # ---- worker ----------------------------------------------------------

    def _take_batch(self):
        """Block for the first job, then gather compatible ones until full or the delay ends."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            first = self._queue.popleft()
            batch, rows = [first], first.rows
            if first.batchable:
                deadline = time.monotonic() + self.max_delay
                while rows < self.plan.max_size:
                    if self._queue:
                        head = self._queue[0]
                        if not head.batchable or head.key != first.key or rows + head.rows > self.plan.max_size:
                            break  # FIFO: a job that cannot join closes the batch
                        batch.append(self._queue.popleft())
                        rows += head.rows
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stopping:
                        break
                    if self._arriving is not None and self._arriving() <= 0:
                        break  # nobody else is on the way: run now rather than wait
                    self._cond.wait(remaining)
        return batch, rows

    def _loop(self):
        while True:
            taken = self._take_batch()
            if taken is None:
                return
            batch, rows = taken
            try:
                self._execute(batch, rows)
            except BaseException as e:  # never let the worker die; fail the jobs instead
                for job in batch:
                    if not job.pending.done():
                        job.pending._complete(job.index, error=e)

    def _call(self, signature, inputs, batch_size, rows):
        start = time.monotonic()
        outputs = self._run(signature, inputs)
        if self._on_batch is not None:
            self._on_batch(batch_size, rows, time.monotonic() - start)
        return outputs

    def _execute(self, batch, rows):
        first = batch[0]
        if not first.batchable:
            try:
                first.pending._complete(first.index, outputs=self._call(first.signature, first.inputs, rows, rows))
            except Exception as e:
                first.pending._complete(first.index, error=e)
            return
        try:
            self._run_batch(batch, rows)
        except Exception as e:
            if len(batch) == 1:
                first.pending._complete(first.index, error=e)
                return
            # One bad request must not fail the others it shared a batch with: run each alone.
            for job in batch:
                try:
                    self._run_batch([job], job.rows)
                except Exception as e:
                    job.pending._complete(job.index, error=e)

    def _run_batch(self, batch, rows):
        target = self.plan.padded_size(rows)
        inputs = assemble([job.inputs for job in batch], target)
        outputs = self._call(batch[0].signature, inputs, target, rows)
        for key, value in outputs.items():
            if getattr(value, "ndim", 0) < 1 or value.shape[0] != target:
                raise ValueError("output %r has shape %s: its first dimension is not the batch of %d"
                                 % (key, list(getattr(value, "shape", ())), target))
        offset = 0
        for job in batch:
            part = OrderedDict((key, value[offset:offset + job.rows]) for key, value in outputs.items())
            offset += job.rows
            job.pending._complete(job.index, outputs=part)
