#!/bin/sh
# The tensorflow/serving image's entrypoint, same flags: the model is named by MODEL_NAME and
# found under MODEL_BASE_PATH; anything after the image name on `docker run` is appended.
# `exec`: the server replaces this shell, so SIGTERM from `docker stop` / the kubelet reaches
# it directly (it drains in-flight requests, then exits).
exec /usr/bin/tensorflow_model_server --port=8500 --rest_api_port=8501 \
  --model_name="${MODEL_NAME}" --model_base_path="${MODEL_BASE_PATH}/${MODEL_NAME}" "$@"
