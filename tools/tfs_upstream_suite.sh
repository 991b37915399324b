#!/usr/bin/env bash
# Run TensorFlow Serving's own integration suite, unchanged, against the embedded server.
#
#   tools/tfs_upstream_suite.sh PATH_TO_A_TENSORFLOW_SERVING_CHECKOUT [TEST_NAME ...]
#
# The suite is tensorflow_serving/model_servers/tensorflow_model_server_test.py with
# test_util/tensorflow_model_server_test_base.py and the SavedModels under
# tensorflow_serving/servables/tensorflow/testdata/, all read from the checkout you give; none of
# it is copied into this repository. What this script builds, in a scratch directory:
#
#   * TEST_SRCDIR/tf_serving/tensorflow_serving/model_servers/tensorflow_model_server: a shim
#     that execs `python -m serving.modelserver --bind_address=127.0.0.1 "$@"` with this
#     project's venv; .../servables links to the checkout's servables/ (the testdata);
#   * a `tensorflow_serving` package that merges the installed tensorflow-serving-api (apis/,
#     config/: the checkout has no generated *_pb2.py) with the checkout's
#     model_servers/test_util/tensorflow_model_server_test_base.py;
#   * a scratch venv that sees this project's venv (TensorFlow, grpcio, the serving API) and adds
#     the suite's own needs, portpicker and six, and tf-keras: the two Keras tests build their
#     models with `tf.keras` and send an input named after the Input layer ("x"), which is
#     the signature's input name under Keras 2 (tf-keras, TF_USE_LEGACY_KERAS=1). Keras 3 names
#     it "inputs", so with TFS_SUITE_KERAS=3 those two tests fail on any server (the request
#     does not match the SavedModel the test itself wrote); the server is the same either way.
#
# Every test runs in its own process (and process group, killed afterwards with every server
# it started), one at a time: every server the harness starts listens on the same Unix socket
# (/tmp/tf-serving.sock), so the Unix-socket test only means something when no other server
# runs. Each test is bounded by TFS_SUITE_TIMEOUT seconds (default 300). Tests that need TF Lite
# models, the profiler service or tf_text are reported as not applicable, with the reason. The
# last lines are a per-test table; the exit code is 0 only when every applicable test passed.
#
# Environment: PROJECT_PYTHON (default: .venv/bin/python of this repository),
# TFS_SUITE_WORKDIR (default: a new directory under /tmp), TFS_SUITE_TIMEOUT, TFS_SUITE_KERAS
# (2, the default: tf-keras for the tests' tf.keras; 3: the Keras 3 of the project's venv).
set -euo pipefail

usage() { echo "usage: $0 PATH_TO_A_TENSORFLOW_SERVING_CHECKOUT [TEST_NAME ...]" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
CHECKOUT=$(cd "$1" && pwd) || usage
shift
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROJECT_PYTHON=${PROJECT_PYTHON:-$REPO/.venv/bin/python}
TIMEOUT_S=${TFS_SUITE_TIMEOUT:-300}
KERAS=${TFS_SUITE_KERAS:-2}
TESTS_DIR=$CHECKOUT/tensorflow_serving/model_servers
TEST_FILE=$TESTS_DIR/tensorflow_model_server_test.py
BASE_FILE=$TESTS_DIR/test_util/tensorflow_model_server_test_base.py
TESTDATA=$CHECKOUT/tensorflow_serving/servables/tensorflow/testdata

for f in "$TEST_FILE" "$BASE_FILE" "$TESTDATA/saved_model_half_plus_two_cpu"; do
  [[ -e $f ]] || { echo "not a TensorFlow Serving checkout: $f is missing" >&2; exit 2; }
done
[[ -x $PROJECT_PYTHON ]] || { echo "no project venv at $PROJECT_PYTHON (run make venv)" >&2; exit 2; }

WORK=${TFS_SUITE_WORKDIR:-$(mktemp -d /tmp/tfs-upstream.XXXXXX)}
mkdir -p "$WORK"/logs "$WORK"/tmp
echo "scratch directory: $WORK"

# --- scratch venv: the project's packages underneath, portpicker and six on top ------------
VENV=$WORK/venv
if [[ ! -x $VENV/bin/python ]]; then
  base_python=$("$PROJECT_PYTHON" -c 'import sys; print(sys._base_executable)')
  "$base_python" -m venv "$VENV"
  project_site=$("$PROJECT_PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  scratch_site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$project_site" > "$scratch_site/project_venv.pth"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check portpicker==1.6.0 six==1.17.0
fi
PY=$VENV/bin/python
LEGACY_KERAS=0
if [[ $KERAS == 2 ]]; then
  "$PY" -c 'import tf_keras' 2>/dev/null ||
    "$PY" -m pip install -q --disable-pip-version-check tf-keras==2.21.0
  LEGACY_KERAS=1
fi

# --- tensorflow_serving: installed apis/config + the checkout's test_util --------------------
PKGS=$WORK/pkgs
installed=$("$PY" -c 'import os, tensorflow_serving as t; print(os.path.dirname(t.__file__))')
rm -rf "$PKGS" && mkdir -p "$PKGS/tensorflow_serving/model_servers/test_util"
for entry in "$installed"/*; do
  name=$(basename "$entry")
  [[ $name == __pycache__ || $name == model_servers ]] && continue
  ln -s "$entry" "$PKGS/tensorflow_serving/$name"
done
touch "$PKGS/tensorflow_serving/model_servers/__init__.py" \
      "$PKGS/tensorflow_serving/model_servers/test_util/__init__.py"
ln -s "$BASE_FILE" "$PKGS/tensorflow_serving/model_servers/test_util/"

# --- TEST_SRCDIR with the shim ------------------------------------------------------------
SRCDIR=$WORK/srcdir
rm -rf "$SRCDIR" && mkdir -p "$SRCDIR/tf_serving/tensorflow_serving/model_servers"
ln -s "$CHECKOUT/tensorflow_serving/servables" "$SRCDIR/tf_serving/tensorflow_serving/servables"
SHIM=$SRCDIR/tf_serving/tensorflow_serving/model_servers/tensorflow_model_server
cat > "$SHIM" <<EOF
#!/bin/sh
# tensorflow_model_server for TF Serving's test harness: the embedded server of $REPO.
exec "$PROJECT_PYTHON" -m serving.modelserver --bind_address=127.0.0.1 "\$@"
EOF
chmod +x "$SHIM"

# --- which tests -----------------------------------------------------------------------------
not_applicable_reason() {
  case $1 in
    testPredictOnTfLite|testPredictWithSignatureDefOnTfLite)
      echo "TF Lite model (--prefer_tflite_model): the embedded server serves SavedModels only" ;;
    test_profiler_service_with_valid_trace_request)
      echo "needs TF Serving's profiler gRPC service, which the embedded server does not have" ;;
    test_tf_text)
      echo "needs the tf_text ops (tensorflow-text) and its testdata model, not part of this setup" ;;
    *) echo "" ;;
  esac
}

if [[ $# -gt 0 ]]; then
  TESTS=("$@")
else
  mapfile -t TESTS < <(sed -n 's/^  def \(test[A-Za-z0-9_]*\)(self.*/\1/p' "$TEST_FILE")
fi

RESULTS=()
passed=0 failed=0 skipped=0
for test in "${TESTS[@]}"; do
  reason=$(not_applicable_reason "$test")
  if [[ -n $reason ]]; then
    RESULTS+=("$test|n/a|-|$reason")
    skipped=$((skipped + 1))
    continue
  fi
  log=$WORK/logs/$test.log
  tmp=$WORK/tmp/$test
  rm -rf "$tmp" && mkdir -p "$tmp"
  echo "== $test"
  start=$(date +%s)
  # setsid: the test and every server it starts share one new process group, ended below even
  # if the test is killed before its atexit handlers run.
  set +e
  (
    cd "$TESTS_DIR"
    exec setsid env TEST_SRCDIR="$SRCDIR" TEST_TMPDIR="$tmp" PYTHONPATH="$PKGS" \
      TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1 TF_USE_LEGACY_KERAS=$LEGACY_KERAS \
      timeout --kill-after=10 "$TIMEOUT_S" "$PY" "$TEST_FILE" "TensorflowModelServerTest.$test"
  ) > "$log" 2>&1 &
  pid=$!
  wait "$pid"
  code=$?
  set -e
  kill -TERM -- "-$pid" 2>/dev/null || true
  sleep 0.5
  kill -KILL -- "-$pid" 2>/dev/null || true
  seconds=$(( $(date +%s) - start ))
  if [[ $code -eq 0 ]] && grep -q '^OK' "$log"; then
    RESULTS+=("$test|PASS|$seconds|")
    passed=$((passed + 1))
  else
    if [[ $code -eq 124 || $code -eq 137 ]]; then
      note="timed out after ${TIMEOUT_S} s"
    else
      note=$(grep -E '^\s*details = |^(AssertionError|[A-Za-z_.]*Error)' "$log" | tail -1 | sed 's/^\s*//' | cut -c1-140)
    fi
    RESULTS+=("$test|FAIL|$seconds|$note (log: $log)")
    failed=$((failed + 1))
  fi
  echo "   $(tail -1 <<<"${RESULTS[-1]}" | cut -d'|' -f2) in ${seconds}s"
done

echo
printf '%-52s %-5s %6s  %s\n' "test" "result" "sec" "note"
printf '%-52s %-5s %6s  %s\n' "----" "------" "---" "----"
for row in "${RESULTS[@]}"; do
  IFS='|' read -r name result seconds note <<<"$row"
  printf '%-52s %-6s %5s  %s\n' "$name" "$result" "$seconds" "$note"
done
echo
echo "applicable: $((passed + failed)), passed: $passed, failed: $failed, not applicable: $skipped"
[[ $failed -eq 0 ]]
