"""Tensor codec cost: clients.codec vs TensorFlow's make_tensor_proto / make_ndarray.

    .venv/bin/python bench/codec_bench.py [--repeat 7] [--json bench/out/codec.json]

For 1 and 32 MNIST test images (float32 [n, 784]) it times, per call (median of --repeat
rounds, each long enough to be measurable):
  encode   ours (tensor_content), ours (float_val typed fields), tf.make_tensor_proto
  decode   ours on tensor_content, tf.make_ndarray on the same message; ours / tf on a
           float_val message (what TF Serving sends back by default)
  request  build + serialize a whole PredictRequest: ours vs tensorflow-serving-api + TF
  REST     the row-format JSON body: ours vs json.dumps({"instances": a.tolist()})
and prints the ratio (TensorFlow time / ours). Runs in a few seconds; no server needed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import timeit
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from clients import codec, protos  # noqa: E402
from clients.rest_client import encode_json, rows_to_json  # noqa: E402


def rest_body(images: np.ndarray) -> bytes:
    return encode_json({"instances": rows_to_json(images)})


def mnist_images(n: int) -> np.ndarray:
    """The first n official test digits as the model's input (float32 [n, 784] in [0, 1])."""
    path = ROOT / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"
    if path.exists():
        raw = gzip.decompress(path.read_bytes())
        pixels = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 784)[:n]
    else:  # same shape and value range, if the data folder is absent
        pixels = np.random.default_rng(0).integers(0, 256, (n, 784), dtype=np.uint8)
    return pixels.astype(np.float32) / np.float32(255.0)


def per_call_us(fn, repeat: int) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()  # enough calls for about 0.2 s
    rounds = timer.repeat(repeat=repeat, number=number)
    return statistics.median(rounds) / number * 1e6


def bench(n: int, repeat: int, tf, predict_pb2) -> dict[str, float]:
    images = mnist_images(n)
    ours_content = codec.ndarray_to_tensor_proto(images)
    ours_typed = codec.ndarray_to_tensor_proto(images, use_tensor_content=False)
    tf_proto = tf.make_tensor_proto(images)
    tf_typed = type(tf_proto)()
    tf_typed.CopyFrom(tf_proto)
    tf_typed.ClearField("tensor_content")
    tf_typed.float_val.extend(images.reshape(-1).tolist())
    assert np.array_equal(codec.tensor_proto_to_ndarray(tf_proto), images)
    assert np.array_equal(tf.make_ndarray(ours_content), images)
    ours_typed_bytes = ours_typed.SerializeToString()
    ours_typed_msg = protos.TensorProto.FromString(ours_typed_bytes)

    def ours_request() -> bytes:
        req = protos.PredictRequest()
        req.model_spec.name = "mnist"
        req.model_spec.signature_name = "predict_images"
        codec.fill_tensor_proto(req.inputs["images"], images)
        return req.SerializeToString()

    def tf_request() -> bytes:
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "mnist"
        req.model_spec.signature_name = "predict_images"
        req.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
        return req.SerializeToString()

    return {
        "encode_ours_tensor_content_us": per_call_us(
            lambda: codec.ndarray_to_tensor_proto(images), repeat
        ),
        "encode_ours_float_val_us": per_call_us(
            lambda: codec.ndarray_to_tensor_proto(images, use_tensor_content=False), repeat
        ),
        "encode_tf_make_tensor_proto_us": per_call_us(lambda: tf.make_tensor_proto(images), repeat),
        "decode_ours_tensor_content_us": per_call_us(
            lambda: codec.tensor_proto_to_ndarray(ours_content), repeat
        ),
        "decode_tf_make_ndarray_tensor_content_us": per_call_us(
            lambda: tf.make_ndarray(tf_proto), repeat
        ),
        "decode_ours_float_val_us": per_call_us(
            lambda: codec.tensor_proto_to_ndarray(ours_typed_msg), repeat
        ),
        "decode_tf_make_ndarray_float_val_us": per_call_us(
            lambda: tf.make_ndarray(tf_typed), repeat
        ),
        "request_ours_us": per_call_us(ours_request, repeat),
        "rest_json_ours_us": per_call_us(lambda: rest_body(images), repeat),
        "rest_json_tolist_us": per_call_us(
            lambda: json.dumps({"instances": images.tolist()}).encode(), repeat
        ),
        "rest_json_ours_bytes": float(len(rest_body(images))),
        "rest_json_tolist_bytes": float(len(json.dumps({"instances": images.tolist()}))),
        "request_tf_us": per_call_us(tf_request, repeat),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    results = {}
    for n in (1, 32):
        r = bench(n, args.repeat, tf, predict_pb2)
        r["encode_ratio"] = r["encode_tf_make_tensor_proto_us"] / r["encode_ours_tensor_content_us"]
        r["decode_ratio"] = (
            r["decode_tf_make_ndarray_tensor_content_us"] / r["decode_ours_tensor_content_us"]
        )
        r["decode_float_val_ratio"] = (
            r["decode_tf_make_ndarray_float_val_us"] / r["decode_ours_float_val_us"]
        )
        r["request_ratio"] = r["request_tf_us"] / r["request_ours_us"]
        results[n] = r
        print(f"batch {n:>2} (float32 [{n}, 784])")
        print(
            f"  encode : ours {r['encode_ours_tensor_content_us']:8.1f} us (tensor_content), "
            f"{r['encode_ours_float_val_us']:8.1f} us (float_val); "
            f"tf.make_tensor_proto {r['encode_tf_make_tensor_proto_us']:8.1f} us "
            f"-> {r['encode_ratio']:.1f}x faster"
        )
        print(
            f"  decode : ours {r['decode_ours_tensor_content_us']:8.1f} us; "
            f"tf.make_ndarray {r['decode_tf_make_ndarray_tensor_content_us']:8.1f} us "
            f"-> {r['decode_ratio']:.1f}x faster (tensor_content)"
        )
        print(
            f"           ours {r['decode_ours_float_val_us']:8.1f} us; "
            f"tf.make_ndarray {r['decode_tf_make_ndarray_float_val_us']:8.1f} us "
            f"-> {r['decode_float_val_ratio']:.1f}x faster (float_val)"
        )
        print(
            f"  request: ours {r['request_ours_us']:8.1f} us; TF + tensorflow-serving-api "
            f"{r['request_tf_us']:8.1f} us -> {r['request_ratio']:.1f}x faster "
            "(build + serialize PredictRequest)"
        )
        print(
            f"  REST   : ours {r['rest_json_ours_us']:8.1f} us, {r['rest_json_ours_bytes']:,.0f} B; "
            f"json.dumps(tolist) {r['rest_json_tolist_us']:8.1f} us, "
            f"{r['rest_json_tolist_bytes']:,.0f} B (row-format request body)"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
