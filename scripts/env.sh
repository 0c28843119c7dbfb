# Sourced by the other scripts: where d2ae keeps its caches and how cargo finds libtorch.
# Everything heavy lives outside the checkout so that CI runs and later sessions reuse it.
D2AE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export D2AE_ROOT
export D2AE_CACHE="${D2AE_CACHE:-$HOME/.cache/d2ae}"
export D2AE_VENV="${D2AE_VENV:-$D2AE_CACHE/venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$D2AE_CACHE/target}"
# tch 0.26 is built against PyTorch 2.13.0; torch-sys asks the venv's python where libtorch is.
export D2AE_TORCH_VERSION="2.13.0"
export VIRTUAL_ENV="$D2AE_VENV"
export PATH="$D2AE_VENV/bin:$HOME/.cargo/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
# Test binaries of crates without a build.rs rpath (loader with its tch feature) need this.
# (No match before the first bootstrap: must not trip callers' `set -e -o pipefail`.)
_torch_lib="$(ls -d "$D2AE_VENV"/lib/python3*/site-packages/torch/lib 2>/dev/null | head -n1 || true)"
if [ -n "$_torch_lib" ]; then
  export D2AE_TORCH_LIB="$_torch_lib"
  export LD_LIBRARY_PATH="$_torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
unset _torch_lib
# The binaries, once built.
export D2AE_BIN="$CARGO_TARGET_DIR/release"
say() { printf '\033[1;34m[d2ae]\033[0m %s\n' "$*" >&2; }
