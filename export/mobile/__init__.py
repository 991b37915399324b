"""Mobile artefacts of published versions: TF Lite and Core ML, checked against the SavedModel.

For version N of ``<repo>/<model_name>/`` the mobile export writes, under
``<repo>/mobile/<model_name>/<N>/`` (never inside the numeric version directory: published
versions are immutable and TF Serving reads them)::

    <model_name>_float32.tflite   float32, converted from the ``predict_images`` signature
    <model_name>_int8.tflite      dynamic-range int8 (int8 weights, float32 in and out)
    <model_name>.mlpackage        Core ML mlprogram from the same signature's concrete function
    parity.json                   the figures printed by the command

Both .tflite files are run with LiteRT over the official test set and compared with the
SavedModel; Core ML's spec is checked (Core ML predicts only on macOS). Everything is built in a
hidden staging directory and renamed into place only when every check passed, so a refused
export publishes nothing and a reader never sees half a directory.

Modules: :mod:`~export.mobile.build` (the whole export: inputs, checks, staging, publish),
:mod:`~export.mobile.tflite`, :mod:`~export.mobile.coreml` (one converter each) and
:mod:`~export.mobile.report` (plain data and rendering; no TensorFlow). The command line is
``export/commands/mobile.py`` (``python -m export mobile``).

Imports: the rest of ``export`` (repository, mnist_data) and the converters' own packages,
never ``serving`` or ``clients``; nothing outside ``export`` imports this package. TensorFlow,
LiteRT and coremltools load inside functions, so importing the package stays cheap.
"""
