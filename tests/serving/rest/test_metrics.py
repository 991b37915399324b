"""metrics.py: TF Serving's exposition rules and thread safety (no server needed)."""

from __future__ import annotations

import threading

import pytest

from serving.modelserver.errors import Code
from serving.modelserver.metrics import (
    REQUEST_LATENCY_BUCKETS_US,
    Metrics,
    Registry,
    exported_label_name,
    exported_metric_name,
)


def lines(text: str) -> list[str]:
    return text.splitlines()


def test_names_follow_the_exporter() -> None:
    assert exported_metric_name("/tensorflow/serving/request_count") == (
        ":tensorflow:serving:request_count"
    )
    assert exported_metric_name("0/path-total_count") == "_0:path:total_count"
    assert exported_label_name("my-name+1") == "my_name_1"


def test_request_metrics() -> None:
    m = Metrics()
    m.record_request("mnist", "predict", "REST", Code.OK)
    m.record_request("mnist", "predict", "REST", 0)
    m.record_request("mnist", "", "REST", "NOT_FOUND")
    m.record_request("x", "Predict", "GRPC", Code.INVALID_ARGUMENT)
    m.observe_latency("mnist", "predict", "REST", 0.0012)  # 1200 us
    text = m.render()
    assert "# TYPE :tensorflow:serving:request_count counter" in lines(text)
    assert ':tensorflow:serving:request_count{model_name="mnist",status="OK"} 2' in lines(text)
    assert ':tensorflow:serving:request_count{model_name="mnist",status="NOT_FOUND"} 1' in text
    assert ':tensorflow:serving:request_count{model_name="x",status="INVALID_ARGUMENT"} 1' in text
    assert "# TYPE :tensorflow:serving:request_latency histogram" in lines(text)
    labels = 'model_name="mnist",API="predict",entrypoint="REST"'
    # 10 * 1.8^8 = 1101.996 < 1200 < 1983.59 = 10 * 1.8^9
    assert f':tensorflow:serving:request_latency_bucket{{{labels},le="1102"}} 0' in text
    assert f':tensorflow:serving:request_latency_bucket{{{labels},le="1983.59"}} 1' in text
    assert f':tensorflow:serving:request_latency_bucket{{{labels},le="1.47476e+09"}} 1' in text
    assert f':tensorflow:serving:request_latency_bucket{{{labels},le="+Inf"}} 1' in text
    assert f":tensorflow:serving:request_latency_sum{{{labels}}} 1200" in text
    assert f":tensorflow:serving:request_latency_count{{{labels}}} 1" in text
    assert len(REQUEST_LATENCY_BUCKETS_US) == 33


def test_load_warmup_and_batching_metrics() -> None:
    m = Metrics()
    m.record_model_load("mnist", 3, 0.25, True, model_path="/m/mnist/3")
    m.record_model_load("mnist", 4, 0.1, False, model_path="/m/mnist/4")
    m.record_warmup("/m/mnist/3", 0.01, 5, ok=True)
    m.record_batch("mnist_predict", 3, 4)
    m.observe_queuing_latency("batch_threads", 0.001)
    m.record_example_count("mnist", 32)
    m.set_version_available("mnist", 3, True)
    text = m.render()
    expected = [
        ':tensorflow:cc:saved_model:load_attempt_count{model_path="/m/mnist/3",status="success"} 1',
        ':tensorflow:cc:saved_model:load_attempt_count{model_path="/m/mnist/4",status="fail"} 1',
        ':tensorflow:cc:saved_model:load_latency{model_path="/m/mnist/3"} 250000',
        ':tensorflow:serving:model_warmup_records_read{model_path="/m/mnist/3",status="OK"} 5',
        ":tensorflow:serving:batching_session:wrapped_run_count{} 1",
        ':tensorflow:serving:mnist_predict:padding_size_bucket{le="2"} 1',
        ':tensorflow:serving:request_example_count_total{model="mnist"} 32',
        ':tensorflow:serving:embedded:model_version_available{model_name="mnist",version="3"} 1',
    ]
    for line in expected:
        assert line in lines(text), line
    # Without a path the load is keyed by name/version.
    m.record_model_load("other", 1, 0.1, True)
    assert 'model_path="other/1"' in m.render()


def test_label_values_are_escaped() -> None:
    reg = Registry()
    reg.counter("/a/b", ("name",)).inc('q"b\\s\nn')
    assert ':a:b{name="q\\"b\\\\s\\nn"} 1' in lines(reg.render())


def test_wrong_label_count_and_shape_conflicts_are_errors() -> None:
    reg = Registry()
    c = reg.counter("/a", ("x",))
    with pytest.raises(ValueError):
        c.inc("1", "2")
    with pytest.raises(ValueError):
        reg.gauge("/a", ("x",))
    assert reg.counter("/a", ("x",)) is c


def test_empty_registry_renders_nothing() -> None:
    assert Registry().render() == ""
    assert Metrics().render() == ""


def test_concurrent_recording_loses_nothing() -> None:
    m = Metrics()

    def work() -> None:
        for _ in range(2000):
            m.record_request("m", "predict", "REST", Code.OK)
            m.observe_latency("m", "predict", "REST", 0.0001)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert m.request_count.get("m", "OK") == 16000
    _, _, count = m.request_latency.snapshot("m", "predict", "REST")
    assert count == 16000
