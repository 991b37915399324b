"""Small real SavedModels for the REST conformance suite (each builds in about a second).

* ``build_half_plus_two``: TF Serving's own test model rebuilt with the TF1 SavedModel builder,
  so tensor names (``x:0``, ``y:0``), signature keys (``serving_default``, ``classify_x_to_y``,
  ``regress_x_to_y``, ...) and method names match upstream's testdata: y = 0.5 * x + 2.
* ``build_echo``: a TF2 model with int32/int64/float/double/string/bool inputs, a ``_bytes``
  output, a float16 input, a scalar output, a signature without inputs and a busy-wait one.
"""

from __future__ import annotations

import os


def build_half_plus_two(export_dir: str, *, x_unknown_shape: bool) -> str:
    """``x_unknown_shape`` False: x is [-1, 1] as in ``saved_model_half_plus_two_2_versions``;
    True: x has unknown rank, so ``{"instances": [2.0, 3.0, 4.0]}`` works as with the CPU one."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        a = v1.Variable(0.5, name="a")
        b = v1.Variable(2.0, name="b")
        c = v1.Variable(3.0, name="c")
        serialized = v1.placeholder(tf.string, name="tf_example")
        parsed = tf.io.parse_example(
            serialized,
            {
                "x": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
                "x2": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
            },
        )
        if x_unknown_shape:
            x = v1.placeholder_with_default(parsed["x"], shape=None, name="x")
        else:
            # Upstream's x is the parsed feature with static shape [-1, 1].
            x = v1.placeholder_with_default(parsed["x"], shape=[None, 1], name="x")
        x2 = tf.identity(parsed["x2"], name="x2")
        y = tf.add(tf.multiply(a, x), b, name="y")
        y2 = tf.add(tf.multiply(a, x), c, name="y2")
        y3 = tf.add(tf.multiply(a, x2), c, name="y3")

        sig = v1.saved_model.signature_def_utils
        predict = sig.predict_signature_def({"x": x}, {"y": y})
        signatures = {
            "serving_default": predict,
            "regress_x_to_y": sig.regression_signature_def(serialized, y),
            "regress_x_to_y2": sig.regression_signature_def(serialized, y2),
            "regress_x2_to_y3": sig.regression_signature_def(serialized, y3),
            "classify_x_to_y": sig.classification_signature_def(serialized, None, y),
            "classify_x2_to_y3": sig.classification_signature_def(serialized, None, y3),
        }
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(export_dir)
            builder.add_meta_graph_and_variables(
                session, [v1.saved_model.tag_constants.SERVING], signature_def_map=signatures
            )
            builder.save()
    return export_dir


def build_echo(export_dir: str) -> str:
    import tensorflow as tf

    class Echo(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.int32, name="i"),
                tf.TensorSpec([None, 2], tf.float32, name="f"),
                tf.TensorSpec([None], tf.string, name="s"),
                tf.TensorSpec([None], tf.bool, name="b"),
            ]
        )
        def echo(self, i, f, s, b):
            return {
                "i_out": tf.identity(i),
                "f_out": tf.identity(f),
                "s_out": tf.identity(s),
                "s_out_bytes": tf.identity(s),
                "b_out": tf.logical_not(b),
            }

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.int64, name="l"),
                tf.TensorSpec([None], tf.float64, name="d"),
            ]
        )
        def wide(self, l, d):  # noqa: E741 - the input is named "l"
            return {"l_out": l + 1, "d_out": d / 3.0}

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def triple(self, x):
            return {"y": x * 3.0}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float16, name="h")])
        def half(self, h):
            return {"h_out": h}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def total(self, x):
            return {"sum": tf.reduce_sum(x)}

        @tf.function(input_signature=[])
        def noinput(self):
            return {"one": tf.constant([1.0])}

        @tf.function(input_signature=[tf.TensorSpec([], tf.float64, name="seconds")])
        def busy(self, seconds):
            start = tf.timestamp()
            (n,) = tf.while_loop(
                lambda k: tf.timestamp() - start < seconds, lambda k: (k + 1,), [tf.constant(0)]
            )
            return {"iterations": n}

    module = Echo()
    tf.saved_model.save(
        module,
        export_dir,
        signatures={
            "serving_default": module.echo,
            "wide": module.wide,
            "triple": module.triple,
            "half": module.half,
            "total": module.total,
            "noinput": module.noinput,
            "busy": module.busy,
        },
    )
    return export_dir


def build_repo(
    root: str, mnist_base: str, identity_inputs: list[dict[str, str]] | None = None
) -> str:
    """All conformance models under ``root`` plus a ModelServerConfig text file; returns it.

    ``identity_inputs``: one identity model per signature-input set (the jsonl's
    ``signature_inputs``), named by ``identity_model_name``; ``default`` int32 models also get
    the ``predict_images`` signature that one upstream case names.
    """
    extra = []
    for inputs in identity_inputs or []:
        name = identity_model_name(inputs)
        base = os.path.join(root, name)
        build_identity(os.path.join(base, "1"), inputs, aliases=("predict_images",))
        extra.append(
            f'  config {{\n    name: "{name}"\n    base_path: "{base}"\n'
            '    model_platform: "tensorflow"\n  }\n'
        )
    hp2 = os.path.join(root, "half_plus_two_2_versions")
    build_half_plus_two(os.path.join(hp2, "123"), x_unknown_shape=False)
    build_half_plus_two(os.path.join(hp2, "124"), x_unknown_shape=False)
    build_half_plus_two(os.path.join(root, "half_plus_two", "123"), x_unknown_shape=True)
    build_echo(os.path.join(root, "echo", "1"))
    config = f"""
model_config_list {{
  config {{
    name: "saved_model_half_plus_two_2_versions"
    base_path: "{hp2}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 123 }} }}
    version_labels {{ key: "Version_Label" value: 123 }}
  }}
  config {{
    name: "default"
    base_path: "{os.path.join(root, "half_plus_two")}"
    model_platform: "tensorflow"
  }}
  config {{
    name: "echo"
    base_path: "{os.path.join(root, "echo")}"
    model_platform: "tensorflow"
  }}
  config {{
    name: "my model"
    base_path: "{os.path.join(root, "echo")}"
    model_platform: "tensorflow"
  }}
  config {{
    name: "mnist"
    base_path: "{mnist_base}"
    model_platform: "tensorflow"
  }}
{"".join(extra)}}}
"""
    path = os.path.join(root, "models.config")
    with open(path, "w") as fh:
        fh.write(config)
    with open(os.path.join(root, "monitoring.config"), "w") as fh:
        fh.write('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')
    return path


TF_DTYPES = {
    "DT_FLOAT": "float32",
    "DT_DOUBLE": "float64",
    "DT_INT32": "int32",
    "DT_INT64": "int64",
    "DT_STRING": "string",
    "DT_BOOL": "bool",
    "DT_HALF": "float16",
}


def build_identity(export_dir: str, inputs: dict[str, str], aliases: tuple[str, ...] = ()) -> str:
    """serving_default returns every input unchanged under the same name (unknown shapes), so a
    response shows exactly which tensors the server decoded from the JSON request."""
    import tensorflow as tf

    names = list(inputs)
    specs = [tf.TensorSpec(None, getattr(tf, TF_DTYPES[inputs[n]]), name=n) for n in names]

    def identity(*args):
        return {n: tf.identity(a) for n, a in zip(names, args, strict=True)}

    module = tf.Module()
    module.identity = tf.function(identity, input_signature=specs)
    signatures = {"serving_default": module.identity}
    signatures.update({alias: module.identity for alias in aliases})
    tf.saved_model.save(module, export_dir, signatures=signatures)
    return export_dir


def identity_model_name(signature_inputs: dict[str, str]) -> str:
    return "case_" + "_".join(f"{k}_{v[3:].lower()}" for k, v in sorted(signature_inputs.items()))
