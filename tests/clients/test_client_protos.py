"""The private protos match TensorFlow Serving's descriptors and interoperate on the wire."""

from __future__ import annotations

import numpy as np
import pytest

from clients import codec, protos
from clients.protos import serving_apis_pb2, tf_core_pb2, tf_error_codes_pb2

PRIVATE_PREFIX = "mnistserving.client."
# Fields we leave out on purpose (documented in the .proto files).
OMITTED = {
    "tensorflow.TensorProto": {"resource_handle_val", "variant_val"},
    "tensorflow.TensorInfo": {"composite_tensor"},
    "tensorflow.serving.PredictRequest": {
        "predict_streamed_options",
        "client_id",
        "request_options",
    },
    "tensorflow.serving.SamplingConfig": {"per_task_sampling_configs"},
    # Only the nested ServableVersionPolicy is needed (ModelConfig.model_version_policy).
    "tensorflow.serving.FileSystemStoragePathSourceConfig": {
        "servables",
        "file_system_poll_wait_seconds",
        "fail_if_zero_versions_at_startup",
        "servable_versions_always_present",
    },
}


@pytest.fixture(scope="session")
def tf_pool(tf):
    # Importing these registers TF Serving's descriptors in the default pool.
    from google.protobuf import descriptor_pool
    from tensorflow_serving.apis import (  # noqa: F401
        classification_pb2,
        get_model_metadata_pb2,
        get_model_status_pb2,
        inference_pb2,
        model_management_pb2,
        predict_pb2,
        regression_pb2,
    )
    from tensorflow_serving.config import model_server_config_pb2  # noqa: F401

    return descriptor_pool.Default()


def _ours(module):
    for desc in module.DESCRIPTOR.message_types_by_name.values():
        yield desc
        stack = list(desc.nested_types)
        while stack:
            nested = stack.pop()
            stack.extend(nested.nested_types)
            yield nested


def _public(full_name: str) -> str:
    assert full_name.startswith(PRIVATE_PREFIX), full_name
    return full_name[len(PRIVATE_PREFIX) :]


MODULES = [tf_core_pb2, serving_apis_pb2]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_messages_have_tensorflow_serving_field_numbers(tf_pool, module):
    checked = 0
    for ours in _ours(module):
        name = _public(ours.full_name)
        theirs = tf_pool.FindMessageTypeByName(name)
        their_fields = {f.name: f for f in theirs.fields}
        for field in ours.fields:
            ref = their_fields.get(field.name)
            assert ref is not None, f"{name}.{field.name} is not in TF Serving's proto"
            assert (field.number, field.type, field.is_repeated) == (
                ref.number,
                ref.type,
                ref.is_repeated,
            ), f"{name}.{field.name}"
            sub = field.message_type or field.enum_type
            ref_sub = ref.message_type or ref.enum_type
            if sub is not None:
                sub_name = sub.full_name
                if sub_name.startswith(PRIVATE_PREFIX):
                    sub_name = _public(sub_name)
                assert sub_name == ref_sub.full_name, f"{name}.{field.name}"
            checked += 1
        missing = set(their_fields) - {f.name for f in ours.fields}
        assert missing <= OMITTED.get(name, set()), f"{name} lacks {sorted(missing)}"
    assert checked > 20


def test_enums_match(tf_pool):
    pairs = [
        (tf_core_pb2.DataType.DESCRIPTOR, "tensorflow.DataType"),
        (tf_error_codes_pb2.Code.DESCRIPTOR, "tensorflow.error.Code"),
        (serving_apis_pb2.ModelType.DESCRIPTOR, "tensorflow.serving.ModelType"),
        (
            serving_apis_pb2.ModelVersionStatus.State.DESCRIPTOR,
            "tensorflow.serving.ModelVersionStatus.State",
        ),
    ]
    for ours, name in pairs:
        theirs = tf_pool.FindEnumTypeByName(name)
        mine = {v.name: v.number for v in ours.values}
        ref = {v.name: v.number for v in theirs.values}
        assert {k: ref[k] for k in mine} == mine
        if name != "tensorflow.DataType":  # DataType's *_REF values are graph-internal
            assert mine == ref
    # The codec's table agrees with the proto enum.
    for member in codec.DataType:
        assert tf_core_pb2.DataType.Value(member.name) == member.value


def _predict_request(cls_module) -> object:
    req = cls_module.PredictRequest()
    req.model_spec.name = "mnist"
    req.model_spec.version.value = 7
    req.model_spec.signature_name = "predict_images"
    codec.fill_tensor_proto(
        req.inputs["images"], np.linspace(0, 1, 784, dtype=np.float32).reshape(1, 784)
    )
    codec.fill_tensor_proto(req.inputs["png"], np.array([b"\x89PNG..."], dtype=object))
    req.output_filter.append("scores")
    return req


def test_predict_request_both_ways(tf_pool):
    from tensorflow_serving.apis import predict_pb2

    ours = _predict_request(serving_apis_pb2)
    theirs = predict_pb2.PredictRequest.FromString(ours.SerializeToString())
    assert theirs.model_spec.name == "mnist" and theirs.model_spec.version.value == 7
    assert theirs.model_spec.WhichOneof("version_choice") == "version"
    assert list(theirs.output_filter) == ["scores"]
    back = serving_apis_pb2.PredictRequest.FromString(theirs.SerializeToString())
    assert back == ours
    for key in ("images", "png"):
        a = codec.tensor_proto_to_ndarray(ours.inputs[key])
        b = codec.tensor_proto_to_ndarray(theirs.inputs[key])
        assert a.tolist() == b.tolist()

    # A TF-built response (typed fields, the server's default) parses with ours.
    import tensorflow as tf

    resp = predict_pb2.PredictResponse()
    resp.outputs["scores"].CopyFrom(tf.make_tensor_proto(np.eye(3, 10, dtype=np.float32)))
    resp.model_spec.name = "mnist"
    resp.model_spec.version_label = "stable"
    mine = serving_apis_pb2.PredictResponse.FromString(resp.SerializeToString())
    np.testing.assert_array_equal(
        codec.tensor_proto_to_ndarray(mine.outputs["scores"]), np.eye(3, 10, dtype=np.float32)
    )
    assert mine.model_spec.WhichOneof("version_choice") == "version_label"


def test_unknown_fields_survive_a_round_trip(tf_pool):
    from tensorflow_serving.apis import predict_pb2

    theirs = predict_pb2.PredictRequest()
    theirs.model_spec.name = "m"
    theirs.client_id = b"abc"  # a field our copy leaves out
    ours = serving_apis_pb2.PredictRequest.FromString(theirs.SerializeToString())
    again = predict_pb2.PredictRequest.FromString(ours.SerializeToString())
    assert again.client_id == b"abc"


def test_classification_and_status_and_metadata_both_ways(tf_pool):
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_management_pb2,
    )

    req = protos.ClassificationRequest()
    req.model_spec.name = "mnist"
    ex = req.input.example_list_with_context.examples.add()
    ex.features.feature["pixels"].float_list.value.extend([0.0, 0.5, 1.0])
    ex.features.feature["id"].bytes_list.value.append(b"x")
    req.input.example_list_with_context.context.features.feature["n"].int64_list.value.append(3)
    theirs = classification_pb2.ClassificationRequest.FromString(req.SerializeToString())
    assert list(
        theirs.input.example_list_with_context.examples[0]
        .features.feature["pixels"]
        .float_list.value
    ) == [0.0, 0.5, 1.0]
    assert protos.ClassificationRequest.FromString(theirs.SerializeToString()) == req

    status = get_model_status_pb2.GetModelStatusResponse()
    row = status.model_version_status.add()
    row.version, row.state = 3, get_model_status_pb2.ModelVersionStatus.AVAILABLE
    row.status.error_code = 5
    row.status.error_message = "gone"
    mine = protos.GetModelStatusResponse.FromString(status.SerializeToString())
    assert mine.model_version_status[0].version == 3
    assert protos.ModelVersionStatus.State.Name(mine.model_version_status[0].state) == "AVAILABLE"
    assert mine.model_version_status[0].status.error_message == "gone"

    sig_map = get_model_metadata_pb2.SignatureDefMap()
    sig = sig_map.signature_def["serving_default"]
    sig.method_name = "tensorflow/serving/predict"
    sig.inputs["images"].name = "x:0"
    sig.inputs["images"].dtype = 1
    sig.inputs["images"].tensor_shape.dim.add().size = -1
    meta = get_model_metadata_pb2.GetModelMetadataResponse()
    meta.metadata["signature_def"].Pack(sig_map)
    mine = protos.GetModelMetadataResponse.FromString(meta.SerializeToString())
    packed = mine.metadata["signature_def"]
    assert packed.type_url.endswith("/" + protos.SIGNATURE_DEF_MAP_TYPE)
    parsed = protos.SignatureDefMap.FromString(packed.value)
    assert parsed.signature_def["serving_default"].inputs["images"].tensor_shape.dim[0].size == -1

    reload = protos.ReloadConfigRequest()
    cfg = reload.config.model_config_list.config.add()
    cfg.name, cfg.base_path, cfg.model_platform = "mnist", "/models/mnist", "tensorflow"
    cfg.model_version_policy.specific.versions.extend([1, 2])
    cfg.version_labels["stable"] = 1
    theirs = model_management_pb2.ReloadConfigRequest.FromString(reload.SerializeToString())
    assert theirs.config.model_config_list.config[0].version_labels["stable"] == 1
    assert list(
        theirs.config.model_config_list.config[0].model_version_policy.specific.versions
    ) == [1, 2]


def test_rpc_table_paths():
    assert protos.RPCS["Predict"][0] == "/tensorflow.serving.PredictionService/Predict"
    assert protos.RPCS["GetModelStatus"][0] == "/tensorflow.serving.ModelService/GetModelStatus"
    assert protos.RPCS["HandleReloadConfigRequest"][0].endswith(
        "ModelService/HandleReloadConfigRequest"
    )
