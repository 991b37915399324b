"""Export: train MNIST models and publish them as versioned SavedModels (``python -m export``).

Owns: MNIST loading and checksums (``mnist_data``), the two architectures (``models``), training
(``training``), the serving signatures (``signatures``), warmup records (``warmup``), metadata
and the training report (``metadata``, ``report``), the validation gate and its infra check
(``gate``, ``infra_check``), the train -> gate -> publish pipeline (``pipeline``), the model
repository with its one staging/publish helper, retention and rollout state (``repository``,
``retention``, ``rollout_state``), the mobile artefacts (``mobile/``), the command line
(``cli``, ``commands/``) and a tiny real model for tests (``tiny``).

Imports: numpy, TensorFlow/Keras, the ``tensorflow-serving-api`` protos (the pip package
``tensorflow_serving``, not this project's ``serving``), matplotlib, the converters of the
``mobile`` extra. It never imports this project's ``serving`` or ``clients``: serving sits
above export (it reads the repository through ``export.repository`` and
``export.rollout_state``) and clients sit beside it. The gate's infra check therefore runs
the model server as a plain child process (``python -m serving.modelserver``) and talks to it
over HTTP only. tests/export/test_export_layout.py checks this.
"""
