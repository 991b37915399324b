#!/bin/sh
# Copy every complete model version from $MODEL_SOURCE (an rclone remote path) that is not yet
# in $MODEL_TARGET, each one atomically: download into a hidden, non-numeric directory (TF
# Serving ignores it: only whole-integer names are versions), check it, then rename(2) it to its
# numeric name on the same filesystem. A server polling the directory never sees half a version.
#
# A version is complete in the bucket once the publisher has written the marker "<v>.ready"
# after all of its files (object stores have no atomic directory rename). Versions are
# immutable: an existing <v> is never rewritten, and nothing is deleted here.
set -eu
umask 022

: "${MODEL_SOURCE:?set MODEL_SOURCE, e.g. store:bucket/models/mnist}"
: "${MODEL_TARGET:?set MODEL_TARGET, e.g. /models/mnist}"

mkdir -p "$MODEL_TARGET"

# One writer at a time (CronJob concurrencyPolicy: Forbid), so hidden leftovers belong to a
# run that died; they were never visible to a server.
for stale in "$MODEL_TARGET"/.incoming-*; do
  if [ -e "$stale" ]; then
    echo "removing leftover $stale"
    rm -rf "$stale"
  fi
done

listing=$(mktemp)
trap 'rm -f "$listing"' EXIT
rclone lsf --files-only --max-depth 1 "$MODEL_SOURCE" >"$listing"

failed=0
copied=0
for version in $(sed -n 's/^\([0-9][0-9]*\)\.ready$/\1/p' "$listing" | sort -n); do
  target="$MODEL_TARGET/$version"
  if [ -e "$target" ]; then
    continue
  fi
  incoming="$MODEL_TARGET/.incoming-$version"
  echo "copying version $version"
  if ! rclone copy --checksum "$MODEL_SOURCE/$version" "$incoming"; then
    echo "ERROR: copy of version $version failed; it stays invisible" >&2
    rm -rf "$incoming"
    failed=1
    continue
  fi
  if [ ! -f "$incoming/saved_model.pb" ] || [ ! -f "$incoming/variables/variables.index" ]; then
    echo "ERROR: version $version lacks saved_model.pb or variables/; not publishing it" >&2
    rm -rf "$incoming"
    failed=1
    continue
  fi
  sync
  mv "$incoming" "$target"
  copied=$((copied + 1))
  echo "published version $version"
done

echo "sync done: $copied new version(s) under $MODEL_TARGET"
exit "$failed"
