#!/usr/bin/env bash
# One-command installer for mmseg_hclip.
#
#   bash tools/install.sh
#
# Creates (or reuses) a virtual environment, installs torch + torchvision,
# builds mmcv 2.1.0 with its compiled ops, installs mmengine, mmsegmentation,
# mmpretrain, open_clip_torch and this package (editable), and links it as
# ./.venv.  Idempotent: a second run only checks and finishes in seconds.
#
# Environment variables:
#   HCLIP_VENV    where the environment lives (default: a folder under
#                 ~/.cache/mmseg_hclip/venvs named by a hash of the Python
#                 version, the torch spec and the mmcv version, so fresh clones
#                 share one environment; requirements.txt is applied in place).
#   PYTHON        the interpreter to build the environment from (python3.11).
#   TORCH_SPEC    pip spec(s) for torch (default "torch==2.14.1 torchvision==0.29.1").
#                 Set TORCH_SPEC=skip to keep a torch you installed yourself.
#   MMCV_REBUILD  1 = rebuild mmcv even if it imports.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
MMCV_VERSION="2.1.0"
NSTEPS=7
STEP_NAME="setup"
T0=$(date +%s)

step() {  # step N "name"
  STEP_NAME="$2"
  printf '\n[%s/%s] %s  (+%ss)\n' "$1" "$NSTEPS" "$2" "$(( $(date +%s) - T0 ))"
}
on_error() {
  printf '\nINSTALL FAILED at step "%s" (line %s). Fix the error above and re-run '\
'`bash tools/install.sh`; finished steps are skipped.\n' "$STEP_NAME" "$1" >&2
}
trap 'on_error $LINENO' ERR

# ---------------------------------------------------------------------------
step 1 "virtual environment"
if [[ -z "${HCLIP_VENV:-}" ]]; then
  # Keyed by what is expensive to change (Python, torch, mmcv); the cheaper
  # requirements are reconciled in place by step 3.
  key=$( { echo "$TORCH_SPEC mmcv==$MMCV_VERSION"; "$PYTHON" -V 2>&1; } \
         | sha256sum | cut -c1-12)
  HCLIP_VENV="$HOME/.cache/mmseg_hclip/venvs/$key"
fi
if [[ ! -x "$HCLIP_VENV/bin/python" ]]; then
  echo "creating $HCLIP_VENV from $PYTHON"
  mkdir -p "$(dirname "$HCLIP_VENV")"
  "$PYTHON" -m venv "$HCLIP_VENV"
else
  echo "reusing $HCLIP_VENV"
fi
if [[ "$(readlink -f .venv 2>/dev/null)" != "$(readlink -f "$HCLIP_VENV")" ]]; then
  if [[ -e .venv && ! -L .venv ]]; then
    echo "./.venv exists and is not a link; set HCLIP_VENV=$ROOT/.venv to use it" >&2
    false
  fi
  ln -sfn "$HCLIP_VENV" .venv
fi
PY="$HCLIP_VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
pip_install() {  # pip install, without the noise of missing local index folders
  local rc=0
  "${PIP[@]}" install "$@" 2>&1 \
    | { grep -v 'is ignored: it is neither a file nor a directory' || true; } || rc=$?
  return "$rc"
}
# mmcv's setup.py imports pkg_resources (removed in setuptools 81).
if ! "$PY" -c 'import setuptools, sys; v=tuple(map(int, setuptools.__version__.split(".")[:2])); sys.exit(v >= (81,0))' 2>/dev/null \
   || ! "$PY" -c 'import wheel' 2>/dev/null; then
  pip_install -q "setuptools<81" wheel
fi

# ---------------------------------------------------------------------------
step 2 "torch + torchvision ($TORCH_SPEC)"
if [[ "$TORCH_SPEC" == skip ]]; then
  "$PY" -c 'import torch, torchvision' || { echo "TORCH_SPEC=skip but torch does not import" >&2; false; }
elif "$PY" - "$TORCH_SPEC" <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
for spec in sys.argv[1].split():
    name, _, want = spec.partition('==')
    try:
        have = version(name)
    except PackageNotFoundError:
        sys.exit(1)
    if want and have.split('+')[0] != want:
        sys.exit(1)
EOF
then
  echo "already installed"
else
  # torch asks for setuptools>=77; keep it below 81 for mmcv's setup.py.
  # shellcheck disable=SC2086
  pip_install $TORCH_SPEC "setuptools<81"
fi
"$PY" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'

# ---------------------------------------------------------------------------
step 3 "python requirements (requirements.txt)"
if "$PY" - <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
from packaging.requirements import Requirement
ok = True
for line in open('requirements.txt'):
    line = line.split('#')[0].strip()
    if not line:
        continue
    req = Requirement(line)
    try:
        have = version(req.name)
    except PackageNotFoundError:
        ok = False
        break
    if req.specifier and not req.specifier.contains(have, prereleases=True):
        ok = False
        break
sys.exit(0 if ok else 1)
EOF
then
  echo "already satisfied"
else
  # mmcv is excluded here: mmsegmentation/mmpretrain do not pin it as a
  # dependency, and step 4 builds it with the right flags.
  pip_install -r requirements.txt
fi

# ---------------------------------------------------------------------------
step 4 "mmcv $MMCV_VERSION with compiled ops"
mmcv_ok() {
  "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION', mmcv.__version__; from mmcv.ops import nms; print('mmcv', mmcv.__version__, 'ops ok')" 2>/dev/null
}
if [[ "${MMCV_REBUILD:-0}" != 1 ]] && mmcv_ok; then
  echo "already importable, skipping build"
else
  pip_install -q "setuptools<81" wheel   # mmcv's setup.py imports pkg_resources
  CXX_STD=$("$PY" tools/install/cxx_std.py)
  echo "C++ standard for this torch: $CXX_STD"
  build_env=(MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}")
  if [[ "$CXX_STD" != c++17 ]]; then
    # mmcv's setup.py passes -std=c++17; wrap the compilers to swap the flag.
    wrap="$HCLIP_VENV/share/hclip-cxx"
    mkdir -p "$wrap"
    for tool in gcc g++ cc c++ nvcc; do
      real=$(command -v "$tool" 2>/dev/null || true)
      [[ "$tool" == nvcc && -n "${CUDA_HOME:-}" ]] && real="$CUDA_HOME/bin/nvcc"
      [[ -z "$real" || "$real" == "$wrap/$tool" ]] && continue
      cat > "$wrap/$tool" <<EOF
#!/usr/bin/env bash
args=()
for a in "\$@"; do
  case "\$a" in -std=c++17|-std=c++14) args+=("-std=$CXX_STD") ;; *) args+=("\$a") ;; esac
done
exec "$real" "\${args[@]}"
EOF
      chmod +x "$wrap/$tool"
    done
    build_env+=(PATH="$wrap:$PATH" CC="$wrap/gcc" CXX="$wrap/g++")
    [[ -x "$wrap/nvcc" ]] && build_env+=(PYTORCH_NVCC="$wrap/nvcc")
  fi
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 \
     && command -v nvcc >/dev/null 2>&1 \
     && "$PY" -c 'import torch, sys; sys.exit(torch.version.cuda is None)'; then
    echo "GPU and nvcc found: building CUDA ops too"
    build_env+=(FORCE_CUDA=1)
  else
    echo "no usable GPU/nvcc: building CPU ops (about 10 minutes on 2 cores, cached afterwards)"
    build_env+=(FORCE_CUDA=0)
  fi
  # From the index sdist (not a local folder) so pip caches the built wheel.
  ( export "${build_env[@]}"; pip_install --no-build-isolation "mmcv==$MMCV_VERSION" )
  if ! mmcv_ok; then
    echo "cached mmcv wheel does not import its ops with this torch; rebuilding without the cache"
    ( export "${build_env[@]}"
      pip_install --no-build-isolation --no-cache-dir --force-reinstall --no-deps "mmcv==$MMCV_VERSION" )
  fi
  mmcv_ok
fi

# ---------------------------------------------------------------------------
step 5 "mmseg_hclip (editable)"
# Checked from / so that the current folder on sys.path cannot fake an install.
if (cd / && "$PY" -c 'import mmseg_hclip, sys, os; sys.exit(os.path.dirname(os.path.dirname(mmseg_hclip.__file__)) != sys.argv[1])' "$ROOT" 2>/dev/null); then
  echo "already installed from $ROOT"
else
  pip_install --no-build-isolation --no-deps -e .
fi

# ---------------------------------------------------------------------------
step 6 "import check"
(cd / && "$PY" - <<'EOF'
import mmcv, mmengine, mmseg, mmpretrain, open_clip, torch
import mmseg_hclip
print('torch', torch.__version__, '| mmcv', mmcv.__version__, '| mmengine', mmengine.__version__,
      '| mmseg', mmseg.__version__, '| mmpretrain', mmpretrain.__version__,
      '| open_clip', open_clip.__version__)
EOF
)

# ---------------------------------------------------------------------------
step 7 "done"
echo "environment: $HCLIP_VENV (linked as $ROOT/.venv)"
echo "activate with: source .venv/bin/activate"
echo "total time: $(( $(date +%s) - T0 ))s"
