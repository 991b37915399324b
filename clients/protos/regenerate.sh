#!/usr/bin/env bash
# Regenerate the *_pb2.py modules from the .proto files beside this script.
# grpcio-tools pins its own protobuf, so run it from a scratch venv, never the project's:
#   python3 -m venv /tmp/protogen && /tmp/protogen/bin/pip install grpcio-tools
#   PROTOC_PY=/tmp/protogen/bin/python clients/protos/regenerate.sh
# The generated code must be no newer than the protobuf runtime pinned in pyproject.toml
# (the header says "Protobuf Python Version"); tests/clients/test_client_protos.py checks that
# the modules import and match TensorFlow Serving's field numbers.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PROTOC_PY:-python3}
INCLUDE=$("$PY" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
"$PY" -m grpc_tools.protoc -I. -I"$INCLUDE" --python_out=. \
  clients/protos/tf_core.proto clients/protos/tf_error_codes.proto clients/protos/serving_apis.proto
