"""Backends: start, stop and inspect a model server, and talk to one that runs.

Owns: the Docker backend (tensorflow/serving through the Docker SDK), the embedded backend
(``python -m serving.modelserver`` as a child process), the server record of a running
backend (``record``), the repository view the launcher needs (``repo``), lifecycle commands
(``lifecycle``) and gRPC control of a running server (``control``, on the clients'
``GrpcClient``).

Must never import: TensorFlow or ``tensorflow_serving`` (operator commands stay fast), the
embedded server's internals beyond ``serving.modelserver.process`` (the child-process
handle), training code in ``export``.
"""
