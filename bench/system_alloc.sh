# bench/system_alloc.sh — sourced by bench/allocs.sh and bench/alloc_sites.sh: sets BIN to a
# `crossfade` that allocates with glibc's malloc. Their LD_PRELOAD shim and heaptrack see the
# calls to glibc's malloc; mimalloc, the allocator of the default feature `mimalloc`, is linked
# into the binary, and neither would see one allocation.
#
# CROSSFADE_BIN set: that binary, refused if it allocates with mimalloc. Unset: builds
# `cargo build --release --locked --bin crossfade --no-default-features` in its own target
# directory, target/system-alloc (so target/release/crossfade, the default build, stays as it
# is; the first build there takes a release build's time, later ones only what changed).
# Needs ROOT (the repository).
if [ -n "${CROSSFADE_BIN:-}" ]; then
  BIN=$CROSSFADE_BIN
else
  echo "building crossfade with glibc's malloc (--no-default-features, target/system-alloc)" >&2
  (cd "$ROOT" && cargo build --release --locked --bin crossfade --no-default-features \
    --target-dir target/system-alloc) >&2
  BIN=$ROOT/target/system-alloc/release/crossfade
fi
[ -x "$BIN" ] || { echo "no crossfade binary at $BIN" >&2; exit 1; }
# mimalloc prints its options at start-up when asked (MIMALLOC_VERBOSE); glibc prints nothing.
# (Captured first: under pipefail, `grep -q` closing the pipe early would fail the pipeline.)
verbose=$(MIMALLOC_VERBOSE=1 "$BIN" --version 2>&1 >/dev/null || true)
if grep -q '^mimalloc:' <<<"$verbose"; then
  echo "$BIN allocates with mimalloc, which the counters cannot see: build it with" \
    "--no-default-features, or unset CROSSFADE_BIN to have it built" >&2
  exit 1
fi
