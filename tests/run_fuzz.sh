#!/bin/sh
# Runs every libFuzzer target of a build for a bounded time, each on a copy of
# its seed corpus (tests/corpus/<fuzzer>/) so the repository stays untouched.
#   tests/run_fuzz.sh BUILD_DIR [SECONDS]   (build with -DMOEMLORA_BUILD_FUZZ=ON, clang)
set -eu
build=$(cd "${1:?usage: run_fuzz.sh BUILD_DIR [SECONDS]}" && pwd)
secs=${2:-20}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/mml_fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
status=0
for f in fuzz_csv fuzz_movielens fuzz_taobao fuzz_schema fuzz_ckpt fuzz_model fuzz_vocab; do
  bin=$(find "$build" -type f -name "$f" -perm -u+x | head -n 1)
  if [ -z "$bin" ]; then
    echo "run_fuzz: $f not built in $build (configure with -DMOEMLORA_BUILD_FUZZ=ON and clang)" >&2
    status=1
    continue
  fi
  mkdir -p "$work/$f"
  if [ -d "$here/corpus/$f" ]; then cp "$here/corpus/$f"/* "$work/$f/" 2>/dev/null || true; fi
  echo "== $f for ${secs}s"
  if ! (cd "$work" && "$bin" -max_total_time="$secs" -max_len=4096 -rss_limit_mb=2048 \
          -print_final_stats=1 "$work/$f" > "$work/$f.log" 2>&1); then
    echo "run_fuzz: $f FAILED; log and reproducer:" >&2
    tail -n 40 "$work/$f.log" >&2
    ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* 2>/dev/null | while read -r c; do
      cp "$c" "$build/" && echo "  saved $build/$(basename "$c")" >&2
    done
    status=1
  else
    grep -E "stat::number_of_executed_units|stat::new_units_added" "$work/$f.log" | tr '\n' ' '
    echo
  fi
done
exit $status
