"""Prometheus text exposition (format 0.0.4) for the model server, stdlib only.

Counters, gauges and histograms with labels, thread safe; gauges may read
their value from a function at scrape time (queue depth, readiness). The
device's telemetry (GPU, memory, temperatures, power rails) comes from
telemetry.py, read at scrape time and cached.
"""

import threading
import time

from kit.runtime.serving.telemetry import JetsonTelemetry, TelemetryMetrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Request latencies on a Jetson range from ~1 ms (tiny models) to seconds (a cold engine).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names, values, extra=None):
    pairs = list(zip(names, values))
    if extra:
        pairs.append(extra)
    if not pairs:
        return ""
    return "{" + ",".join('%s="%s"' % (k, _escape(v)) for k, v in pairs) + "}"


def _number(value):
    if value == float("inf"):
        return "+Inf"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


class _Metric(object):
    kind = "untyped"

    def __init__(self, registry, name, help_text, labels=()):
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self._lock = registry.lock
        registry.metrics.append(self)

    def _header(self):
        return ["# HELP %s %s" % (self.name, self.help), "# TYPE %s %s" % (self.name, self.kind)]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, registry, name, help_text, labels=()):
        _Metric.__init__(self, registry, name, help_text, labels)
        self._values = {}

    def inc(self, amount=1, *label_values):
        key = tuple(str(v) for v in label_values)
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def value(self, *label_values):
        return self._values.get(tuple(str(v) for v in label_values), 0)

    def total(self):
        return sum(self._values.values())

    def render(self):
        lines = self._header()
        items = sorted(self._values.items()) or ([((), 0)] if not self.label_names else [])
        for key, value in items:
            lines.append("%s%s %s" % (self.name, _labels(self.label_names, key), _number(value)))
        return lines


class Gauge(_Metric):
    kind = "gauge"

    def __init__(self, registry, name, help_text, read=None):
        _Metric.__init__(self, registry, name, help_text)
        self._value = 0
        self._read = read

    def set(self, value):
        self._value = value

    def value(self):
        return self._read() if self._read is not None else self._value

    def render(self):
        return self._header() + ["%s %s" % (self.name, _number(self.value()))]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, registry, name, help_text, buckets=LATENCY_BUCKETS):
        _Metric.__init__(self, registry, name, help_text)
        self.buckets = tuple(buckets)
        self._counts = [0] * len(self.buckets)
        self._sum = 0.0
        self._count = 0

    def observe(self, value):
        with self._lock:
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    self._counts[i] += 1
                    break
            self._sum += value
            self._count += 1

    @property
    def count(self):
        return self._count

    @property
    def total(self):
        return self._sum

    def render(self):
        lines = self._header()
        cumulative = 0
        for bound, count in zip(self.buckets, self._counts):
            cumulative += count
            lines.append('%s_bucket{le="%s"} %d' % (self.name, _number(float(bound)), cumulative))
        lines.append('%s_bucket{le="+Inf"} %d' % (self.name, self._count))
        lines.append("%s_sum %s" % (self.name, repr(self._sum)))
        lines.append("%s_count %d" % (self.name, self._count))
        return lines


class ModelStats(object):
    """What KServe v2's /v2/models/NAME/stats reports (Triton's statistics extension): model calls per batch
    size with their time, examples run, failed inference requests, the last inference's time."""

    def __init__(self):
        self._lock = threading.Lock()
        self.batches = {}  # batch size -> [calls, nanoseconds]
        self.inference_count = 0
        self.execution_count = 0
        self.failures = 0
        self.last_inference_ms = 0

    def batch(self, batch_size, rows, seconds):
        with self._lock:
            entry = self.batches.setdefault(batch_size, [0, 0])
            entry[0] += 1
            entry[1] += int(seconds * 1e9)
            self.inference_count += rows
            self.execution_count += 1
            self.last_inference_ms = int(time.time() * 1000)

    def fail(self):
        with self._lock:
            self.failures += 1


class Registry(object):
    def __init__(self):
        self.lock = threading.Lock()
        self.metrics = []

    def render(self):
        lines = []
        for metric in self.metrics:
            lines.extend(metric.render())
        return ("\n".join(lines) + "\n").encode("utf-8")


class ServerMetrics(object):
    """Every metric the model server exposes on GET /metrics."""

    def __init__(self, queue_depth=lambda: 0, queue_capacity=0, ready=lambda: False, telemetry=None):
        r = self.registry = Registry()
        self.requests = Counter(r, "kit_requests_total", "HTTP requests answered, by endpoint and status code.",
                                ("endpoint", "code"))
        self.errors = Counter(r, "kit_request_errors_total", "HTTP requests answered with a 4xx or 5xx status, by code.",
                              ("code",))
        self.rejected = Counter(r, "kit_rejected_total", "Requests refused with 503 because the queue was full or the "
                                "server was draining, by reason.", ("reason",))
        self.batches = Counter(r, "kit_batches_total", "Model calls, by the (padded) batch size that ran.",
                               ("batch_size",))
        self.batch_rows = Counter(r, "kit_batch_rows_total", "Real examples run through the model.")
        self.padded_rows = Counter(r, "kit_batch_padding_rows_total",
                                   "Padding examples added to reach a built batch size.")
        self.padding_ratio = Gauge(r, "kit_padding_ratio", "Padding examples / all examples run (0: no waste).",
                                   read=self._padding_ratio)
        self.queue_depth = Gauge(r, "kit_queue_depth", "Items waiting in the request queue.", read=queue_depth)
        self.queue_capacity = Gauge(r, "kit_queue_capacity", "Queue bound (max_queue), in items.")
        self.queue_capacity.set(queue_capacity)
        self.ready = Gauge(r, "kit_ready", "1 once the model is loaded and warmed up at every built batch size.",
                           read=lambda: 1 if ready() else 0)
        self.request_latency = Histogram(r, "kit_request_latency_seconds",
                                         "Inference request latency, from the full body read to the response.")
        self.inference_latency = Histogram(r, "kit_inference_latency_seconds", "Model call latency per batch.")
        self.engine_builds = Counter(r, "kit_trt_engine_builds_total", "TensorRT engines built at runtime "
                                     "(from the TensorFlow log; each one stalls serving).")
        self.native_fallbacks = Counter(r, "kit_trt_native_fallbacks_total", "TF-TRT segments that ran natively "
                                        "instead of in an engine (from the TensorFlow log).")
        self.model_stats = ModelStats()
        self.warmup_seconds = Gauge(r, "kit_warmup_seconds", "Time the warm-up over every built batch size took.")
        # What the warm-up ran, so an operator (and a test of a built image) can see the manifest's samples ran.
        self.warmup_runs = Counter(r, "kit_warmup_runs_total", "Model calls of the warm-up, by where their inputs "
                                   "came from (samples, file, zeros) and batch size.", ("source", "batch_size"))
        # Last: the device's own gauges (absent files give no family at all).
        self.telemetry = TelemetryMetrics(r, telemetry if telemetry is not None else JetsonTelemetry())

    def _padding_ratio(self):
        real, padded = self.batch_rows.total(), self.padded_rows.total()
        return (padded / float(real + padded)) if (real + padded) else 0.0

    def record_batch(self, batch_size, rows, seconds):
        self.model_stats.batch(batch_size, rows, seconds)
        self.batches.inc(1, batch_size)
        self.batch_rows.inc(rows)
        self.padded_rows.inc(batch_size - rows)
        self.inference_latency.observe(seconds)

    def record_request(self, endpoint, code):
        self.requests.inc(1, endpoint, code)
        if code >= 400:
            self.errors.inc(1, code)

    def render(self):
        return self.registry.render()
