#!/usr/bin/env bash
# The container images' build steps (deploy/container/Dockerfile runs them; tests/deploy runs them in a fresh
# virtual environment, which stands for the image's Python, since no container runtime is there).
#
#   build.sh wheel  SRC OUT              the project's wheel, and gunicorn.conf.py beside it, into OUT
#   build.sh models SRC FOLDER NAME...   `sr-models fetch NAME...` from the source tree into FOLDER (downloads)
#   build.sh install ROLE OUT PYTHON     the wheel from OUT with ROLE's extras into PYTHON's environment, then
#                                        checks that ROLE's programs import: web (the front end and the Ray
#                                        head, `.[ray]`) or worker (a GPU worker node, `.[worker,ray]`)
set -euo pipefail

usage() { sed -n '2,10p' "$0" >&2; exit 2; }

step=${1:-}
[ $# -ge 1 ] && shift
case "$step" in
  wheel)
    [ $# -eq 2 ] || usage
    src=$1 out=$2
    mkdir -p "$out"
    python3 -m pip wheel --no-deps --disable-pip-version-check -q -w "$out" "$src"
    cp "$src/deploy/gunicorn.conf.py" "$out/gunicorn.conf.py"
    ls "$out"/photo_upscaler-*.whl
    ;;
  models)
    [ $# -ge 3 ] || usage
    src=$1 folder=$2
    shift 2
    mkdir -p "$folder"
    # From the source tree: the wheel carries the code, not models/manifest.json.
    (cd "$src" && python3 -m infer.models --dir "$folder" fetch "$@")
    ;;
  install)
    [ $# -eq 3 ] || usage
    role=$1 out=$2 python=$3
    case "$role" in
      web) extras=ray
           check="import ray, ray.dashboard, aiohttp, gunicorn, web, web.backends.ray.driver; from web import create_app" ;;
      worker) extras=worker,ray
           check="import ray, ray.dashboard, aiohttp, cv2, torch, spandrel, infer.sr_infer, web.backends.ray.task" ;;
      *) usage ;;
    esac
    wheels=("$out"/photo_upscaler-*.whl)
    [ ${#wheels[@]} -eq 1 ] || { echo "expected one wheel in $out, found: ${wheels[*]}" >&2; exit 1; }
    "$python" -m pip install --disable-pip-version-check -q "${wheels[0]}[$extras]"
    "$python" -c "$check"
    bin=$(dirname "$python")
    "$bin/ray" --version
    "$bin/sr-models" --help > /dev/null
    echo "photo-upscaler $role: installed and imported"
    ;;
  *) usage ;;
esac
