"""Prometheus metrics with TF Serving's metric names (spec section 9).

TF Serving names its metrics like ``/tensorflow/serving/request_count`` and its exporter
(``util/prometheus_exporter.cc``) turns every character outside ``[A-Za-z0-9_]`` into ``:``
(``:tensorflow:serving:request_count``), label names' non-alphanumerics into ``_``, and prints
``# TYPE`` lines without ``# HELP``. Histograms use exclusive upper bounds: a value lands in the
first bucket whose limit is *greater* than it (2 goes to ``le="4"`` when the limits are
1, 2, 4, ...), and buckets are printed cumulatively with a final ``le="+Inf"``.

Everything here is thread-safe: the REST event loop, gRPC worker threads, the batching threads
and the model manager all record into one ``Metrics`` instance. One lock per family keeps
contention low; recording is a dict lookup and an add.

Typical use (``Metrics`` is the only class callers need)::

    m = Metrics()
    m.record_request("mnist", "predict", "REST", errors.Code.OK)
    m.observe_latency("mnist", "predict", "REST", 0.0012)
    m.record_model_load("mnist", 3, 0.25, ok=True, model_path="/models/mnist/3")
    text = m.render()   # served with Content-Type text/plain

Size: one job, TF Serving's metrics; the exposition rules (names, labels, exclusive
histogram bounds) and the one declaration per TF Serving metric name are what make it long.
"""

from __future__ import annotations

import bisect
import math
import re
import threading
from collections.abc import Iterable, Sequence

from serving.modelserver.errors import Code

# TF Serving's request-latency buckets: ExponentialBuckets(scale=10, growth=1.8, count=33),
# in microseconds (servables/tensorflow/util.cc).
REQUEST_LATENCY_BUCKETS_US: tuple[float, ...] = tuple(10 * 1.8**i for i in range(33))
# TF core's load-latency-by-stage histogram uses the same shape (saved_model/loader.cc).
LOAD_STAGE_BUCKETS_US: tuple[float, ...] = REQUEST_LATENCY_BUCKETS_US
# Batch sizes: powers of two up to 2**13 (batching_session.cc uses exponential buckets too).
BATCH_SIZE_BUCKETS: tuple[float, ...] = tuple(float(2**i) for i in range(14))
# Example counts per request (servables/tensorflow/util.cc: exponential(1, 2, 16)).
EXAMPLE_COUNT_BUCKETS: tuple[float, ...] = tuple(float(2**i) for i in range(16))

_NAME_BAD = re.compile(r"[^A-Za-z0-9_]")
_LABEL_BAD = re.compile(r"[^A-Za-z0-9_]")


def exported_metric_name(tf_name: str) -> str:
    """``/tensorflow/serving/request_count`` -> ``:tensorflow:serving:request_count``."""
    name = _NAME_BAD.sub(":", tf_name)
    if name and name[0].isdigit():
        name = "_" + name
    return name


def exported_label_name(name: str) -> str:
    """``my-name+1`` -> ``my_name_1``."""
    return _LABEL_BAD.sub("_", name)


def escape_label_value(value: str) -> str:
    """Prometheus text format: escape backslash, double quote and newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_number(value: float) -> str:
    """Integral values print as integers (``222``); others with up to 17 significant digits."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def format_bucket_limit(limit: float) -> str:
    """Bucket limits print like abseil's six-significant-digit rendering: ``32.4``, ``1.47476e+09``."""
    return f"{limit:g}"


_STATUS_NAMES: dict[int, str] = {int(c): c.name for c in Code}


def status_name(status: Code | int | str) -> str:
    """The ``status`` label: the canonical code's name (``OK``, ``NOT_FOUND``, ...)."""
    if isinstance(status, str):
        return status
    name = _STATUS_NAMES.get(status)  # Code members hash like their int values
    if name is not None:
        return name
    try:
        return Code(int(status)).name
    except ValueError:
        return str(status)


class _Family:
    """One metric name with a fixed list of label names; values keyed by label tuples."""

    kind = "untyped"

    def __init__(self, tf_name: str, label_names: Sequence[str]) -> None:
        self.tf_name = tf_name
        self.name = exported_metric_name(tf_name)
        self.label_names = tuple(label_names)
        self._lock = threading.Lock()

    def _key(self, labels: Sequence[str]) -> tuple[str, ...]:
        if len(labels) != len(self.label_names):
            raise ValueError(f"{self.tf_name} takes labels {self.label_names}, got {tuple(labels)}")
        for v in labels:  # recorded on every request: skip the copy when all are str already
            if type(v) is not str:
                return tuple(str(v) for v in labels)
        return labels if type(labels) is tuple else tuple(labels)

    def _label_text(self, values: Sequence[str], extra: str = "") -> str:
        parts = [
            f'{exported_label_name(n)}="{escape_label_value(v)}"'
            for n, v in zip(self.label_names, values, strict=True)
        ]
        if extra:
            parts.append(extra)
        return "{" + ",".join(parts) + "}"

    def render_lines(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError


class CounterFamily(_Family):
    """Monotonic counter (``# TYPE ... counter``)."""

    kind = "counter"

    def __init__(self, tf_name: str, label_names: Sequence[str]) -> None:
        super().__init__(tf_name, label_names)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, amount: float = 1) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def get(self, *labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0)

    def render_lines(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{self._label_text(k)} {format_number(v)}" for k, v in items]


class GaugeFamily(CounterFamily):
    """Settable value (``# TYPE ... gauge``)."""

    kind = "gauge"

    def set(self, *labels: str, value: float) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = value


class HistogramFamily(_Family):
    """Histogram with fixed, increasing bucket limits (exclusive upper bounds, as in TF)."""

    kind = "histogram"

    def __init__(
        self, tf_name: str, label_names: Sequence[str], bucket_limits: Iterable[float]
    ) -> None:
        super().__init__(tf_name, label_names)
        self.limits = tuple(float(b) for b in bucket_limits)
        if list(self.limits) != sorted(set(self.limits)):
            raise ValueError("bucket limits must be strictly increasing")
        # per label key: [bucket counts (len(limits)+1, last = overflow), sum, count]
        self._values: dict[tuple[str, ...], list] = {}

    def observe(self, *labels: str, value: float) -> None:
        key = self._key(labels)
        idx = bisect.bisect_right(self.limits, value)
        with self._lock:
            entry = self._values.get(key)
            if entry is None:
                entry = [[0] * (len(self.limits) + 1), 0.0, 0]
                self._values[key] = entry
            entry[0][idx] += 1
            entry[1] += value
            entry[2] += 1

    def snapshot(self, *labels: str) -> tuple[list[int], float, int]:
        """(non-cumulative bucket counts incl. overflow, sum, count) for one label set."""
        with self._lock:
            entry = self._values.get(self._key(labels))
            if entry is None:
                return [0] * (len(self.limits) + 1), 0.0, 0
            return list(entry[0]), entry[1], entry[2]

    def render_lines(self) -> list[str]:
        with self._lock:
            items = sorted((k, (list(v[0]), v[1], v[2])) for k, v in self._values.items())
        lines: list[str] = []
        for key, (buckets, total, count) in items:
            running = 0
            for limit, n in zip(self.limits, buckets, strict=False):
                running += n
                le = f'le="{format_bucket_limit(limit)}"'
                lines.append(f"{self.name}_bucket{self._label_text(key, le)} {running}")
            running += buckets[-1]
            inf = 'le="+Inf"'
            lines.append(f"{self.name}_bucket{self._label_text(key, inf)} {running}")
            lines.append(f"{self.name}_sum{self._label_text(key)} {format_number(total)}")
            lines.append(f"{self.name}_count{self._label_text(key)} {count}")
        return lines


class Registry:
    """Families by TF name; ``render`` prints them in name order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}

    def _get_or_add(self, family: _Family) -> _Family:
        with self._lock:
            existing = self._families.get(family.tf_name)
            if existing is None:
                self._families[family.tf_name] = family
                return family
        if type(existing) is not type(family) or existing.label_names != family.label_names:
            raise ValueError(f"metric {family.tf_name} already registered with another shape")
        return existing

    def counter(self, tf_name: str, label_names: Sequence[str]) -> CounterFamily:
        return self._get_or_add(CounterFamily(tf_name, label_names))  # type: ignore[return-value]

    def gauge(self, tf_name: str, label_names: Sequence[str]) -> GaugeFamily:
        return self._get_or_add(GaugeFamily(tf_name, label_names))  # type: ignore[return-value]

    def histogram(
        self, tf_name: str, label_names: Sequence[str], bucket_limits: Iterable[float]
    ) -> HistogramFamily:
        return self._get_or_add(  # type: ignore[return-value]
            HistogramFamily(tf_name, label_names, bucket_limits)
        )

    # -- summing over worker processes (--num_workers) --------------------------------------

    def snapshot(self) -> list[list]:
        """Every family's cells as plain data (JSON-safe): ``[tf_name, kind, label_names,
        limits, [[labels, value], ...]]``; a histogram's value is ``[buckets, sum, count]``."""
        with self._lock:
            families = list(self._families.values())
        out: list[list] = []
        for fam in families:
            with fam._lock:
                if isinstance(fam, HistogramFamily):
                    cells = [[list(k), [list(v[0]), v[1], v[2]]] for k, v in fam._values.items()]
                    limits = list(fam.limits)
                else:
                    cells = [[list(k), v] for k, v in fam._values.items()]  # type: ignore[attr-defined]
                    limits = []
            out.append([fam.tf_name, fam.kind, list(fam.label_names), limits, cells])
        return out

    def add_snapshot(self, snap: list[list]) -> None:
        """Add another registry's ``snapshot()``: counters and histograms are summed, gauges
        keep the largest value (the embedded availability gauge is the same in every worker,
        a sum would count it once per worker)."""
        for tf_name, kind, label_names, limits, cells in snap:
            if kind == "histogram":
                hist = self.histogram(tf_name, label_names, limits)
                with hist._lock:
                    for labels, (buckets, total, count) in cells:
                        entry = hist._values.setdefault(
                            tuple(labels), [[0] * (len(hist.limits) + 1), 0.0, 0]
                        )
                        entry[0] = [a + b for a, b in zip(entry[0], buckets, strict=True)]
                        entry[1] += total
                        entry[2] += count
                continue
            fam = self.gauge(tf_name, label_names) if kind == "gauge" else self.counter(
                tf_name, label_names
            )
            with fam._lock:
                for labels, value in cells:
                    key = tuple(labels)
                    if kind == "gauge":
                        fam._values[key] = max(fam._values.get(key, value), value)
                    else:
                        fam._values[key] = fam._values.get(key, 0) + value

    def render(self) -> str:
        with self._lock:
            families = sorted(self._families.values(), key=lambda f: f.name)
        out: list[str] = []
        for fam in families:
            lines = fam.render_lines()
            if not lines:
                continue  # TF's exporter skips metrics that have no cells yet
            out.append(f"# TYPE {fam.name} {fam.kind}")
            out.extend(lines)
        return "\n".join(out) + ("\n" if out else "")


def _us(seconds: float) -> float:
    return seconds * 1e6


class Metrics:
    """The server's metrics, named as TF Serving names them.

    All ``record_*``/``observe_*`` methods are safe to call from any thread. Latencies are
    passed in seconds and recorded in microseconds, as TF Serving does. ``status`` arguments
    take an ``errors.Code``, its int value, or its name.
    """

    def __init__(self) -> None:
        self.registry = Registry()
        self._batch_families: dict[str, tuple[HistogramFamily, ...]] = {}
        r = self.registry
        # --- serving repo (servables/tensorflow/util.cc, model_servers/*) ---
        self.request_count = r.counter(
            "/tensorflow/serving/request_count", ("model_name", "status")
        )
        self.request_latency = r.histogram(
            "/tensorflow/serving/request_latency",
            ("model_name", "API", "entrypoint"),
            REQUEST_LATENCY_BUCKETS_US,
        )
        self.runtime_latency = r.histogram(
            "/tensorflow/serving/runtime_latency",
            ("model_name", "API", "runtime"),
            REQUEST_LATENCY_BUCKETS_US,
        )
        self.request_example_counts = r.histogram(
            "/tensorflow/serving/request_example_counts", ("model",), EXAMPLE_COUNT_BUCKETS
        )
        self.request_example_count_total = r.counter(
            "/tensorflow/serving/request_example_count_total", ("model",)
        )
        self.warmup_latency = r.counter(
            "/tensorflow/serving/model_warmup_latency", ("model_path", "status")
        )
        self.warmup_records_read = r.counter(
            "/tensorflow/serving/model_warmup_records_read", ("model_path", "status")
        )
        self.queuing_latency = r.histogram(
            "/tensorflow/serving/batching_session/queuing_latency",
            ("thread_pool_name",),
            REQUEST_LATENCY_BUCKETS_US,
        )
        self.wrapped_run_count = r.counter(
            "/tensorflow/serving/batching_session/wrapped_run_count", ()
        )
        # --- TF core's SavedModel loader metrics (tensorflow/cc/saved_model/loader.cc) ---
        self.load_attempt_count = r.counter(
            "/tensorflow/cc/saved_model/load_attempt_count", ("model_path", "status")
        )
        self.load_latency = r.counter("/tensorflow/cc/saved_model/load_latency", ("model_path",))
        self.load_latency_by_stage = r.histogram(
            "/tensorflow/cc/saved_model/load_latency_by_stage",
            ("model_path", "stage"),
            LOAD_STAGE_BUCKETS_US,
        )
        # --- this server's own gauge (no TF Serving equivalent; documented in differences) ---
        self.model_version_state = r.gauge(
            "/tensorflow/serving/embedded/model_version_available", ("model_name", "version")
        )

    # -- requests --------------------------------------------------------------------------

    def record_request(
        self, model_name: str, api: str, entrypoint: str, status_code: Code | int | str
    ) -> None:
        """Count one request (every REST request incl. GETs; gRPC Predict/Classify/Regress).

        TF Serving's ``request_count`` is labelled by model and status only; ``api`` and
        ``entrypoint`` are accepted so callers report the same facts everywhere.
        """
        self.request_count.inc(model_name, status_name(status_code))

    def observe_latency(self, model_name: str, api: str, entrypoint: str, seconds: float) -> None:
        """Record a successful request's latency. REST: api ``predict``/``classify``/
        ``regress`` or ``""`` for GETs, entrypoint ``REST``; gRPC: ``Predict``..., ``GRPC``."""
        self.request_latency.observe(model_name, api, entrypoint, value=_us(seconds))

    def observe_runtime_latency(
        self, model_name: str, api: str, seconds: float, runtime: str = "TF2"
    ) -> None:
        """Time spent inside the model call itself."""
        self.runtime_latency.observe(model_name, api, runtime, value=_us(seconds))

    def record_example_count(self, model_name: str, count: int) -> None:
        """Examples (batch rows) in one request."""
        self.request_example_counts.observe(model_name, value=float(count))
        self.request_example_count_total.inc(model_name, amount=count)

    # -- model lifecycle -------------------------------------------------------------------

    def record_model_load(
        self,
        model_name: str,
        version: int,
        seconds: float,
        ok: bool,
        *,
        model_path: str | None = None,
        stage_seconds: dict[str, float] | None = None,
    ) -> None:
        """One SavedModel load attempt (TF core's loader metrics are keyed by export path).

        ``model_path`` should be the version directory; without it ``<name>/<version>`` is used.
        ``stage_seconds`` may carry TF's stages (``restore_graph``, ``init_graph``).
        """
        path = model_path or f"{model_name}/{version}"
        self.load_attempt_count.inc(path, "success" if ok else "fail")
        if ok:
            self.load_latency.inc(path, amount=int(_us(seconds)))
        for stage, secs in (stage_seconds or {}).items():
            self.load_latency_by_stage.observe(path, stage, value=_us(secs))

    def set_version_available(self, model_name: str, version: int, available: bool) -> None:
        """1 while a version serves, 0 after it is unloaded (embedded server only)."""
        self.model_version_state.set(model_name, str(version), value=1 if available else 0)

    def record_warmup(self, model_path: str, seconds: float, records: int, ok: bool) -> None:
        """Warmup replay of ``assets.extra/tf_serving_warmup_requests`` for one version."""
        status = "OK" if ok else "ERROR"
        self.warmup_latency.inc(model_path, status, amount=int(_us(seconds)))
        self.warmup_records_read.inc(model_path, status, amount=records)

    # -- batching --------------------------------------------------------------------------

    def observe_queuing_latency(self, thread_pool_name: str, seconds: float) -> None:
        """Time a task waited in the batching queue."""
        self.queuing_latency.observe(thread_pool_name, value=_us(seconds))

    def record_batch(
        self, task_name: str, input_batch_size: int, processed_batch_size: int
    ) -> None:
        """One merged batch: rows from requests, rows actually run (after padding)."""
        self.wrapped_run_count.inc()
        inp, proc, pad = self._batch_histograms(task_name)
        inp.observe(value=float(input_batch_size))
        proc.observe(value=float(processed_batch_size))
        pad.observe(value=float(processed_batch_size - input_batch_size))

    def _batch_histograms(
        self, task_name: str
    ) -> tuple[HistogramFamily, HistogramFamily, HistogramFamily]:
        found = self._batch_families.get(task_name)
        if found is None:
            base = f"/tensorflow/serving/{task_name}"
            found = tuple(  # type: ignore[assignment]
                self.registry.histogram(f"{base}/{what}", (), BATCH_SIZE_BUCKETS)
                for what in ("input_batch_size", "processed_batch_size", "padding_size")
            )
            self._batch_families[task_name] = found  # type: ignore[assignment]
        return found  # type: ignore[return-value]

    # -- exposition ------------------------------------------------------------------------

    def render(self) -> str:
        """Prometheus text exposition (serve as ``text/plain``)."""
        return self.registry.render()
