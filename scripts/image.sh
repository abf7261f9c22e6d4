#!/usr/bin/env bash
# The CPU image of ptforget, built and checked (`make image`, `make image-check`; CI runs both).
#   scripts/image.sh build   # docker/Dockerfile as $IMAGE: with docker when a Docker engine answers, else with
#                            # buildah (chroot isolation: no daemon, no OCI runtime needed)
#   scripts/image.sh check   # `ptforget-check claims=[P1]` inside the image and on the host: the verdicts must agree
# Settings (environment):
#   IMAGE             the tag (default ptforget:cpu)
#   IMAGE_BASE        the base image; default debian:bookworm-slim with docker, and with buildah a local Debian
#                     bookworm base made by debootstrap (localhost/ptforget-base:bookworm; no registry needed)
#   IMAGE_TORCH_SPEC  torch's pip requirement and options (default torch==2.13.0, the host's CPU pin; elsewhere use
#                     "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu")
#   IMAGE_CHECK_DIR   where the check writes (default .cache/image-check)
# With buildah, the host's pip settings (find-links, index URLs, CA bundle, constraints) are passed to the build
# as build arguments and their local folders mounted read-only, so pip inside the build reaches the same packages
# as on the host. The CUDA image (the Dockerfile's default base) is built the same way where a GPU is: see
# docs/cluster.md.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-ptforget:cpu}"
TORCH="${IMAGE_TORCH_SPEC:-torch==2.13.0}"
LOCAL_BASE=localhost/ptforget-base:bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PY="${PYTHON:-.venv/bin/python}"
CHECK_DIR="${IMAGE_CHECK_DIR:-$PWD/.cache/image-check}"

die() { echo "image.sh: $*" >&2; exit 1; }

engine() {
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then echo docker
    elif command -v buildah >/dev/null 2>&1; then echo buildah
    else die "neither a running Docker engine nor buildah (apt-get install buildah) is available"
    fi
}

# the effective value of a pip option on the host (environment first, then the config files)
pip_opt() {
    local list
    list="$("$PY" -m pip config list 2>/dev/null || true)"
    { grep -E "^:env:\.$1=" <<<"$list" || grep -E "^(global|install)\.$1=" <<<"$list" || true; } \
        | head -n 1 | sed -E "s/^[^=]*='?//; s/'$//"
}

local_base() {
    if buildah inspect --type image "$LOCAL_BASE" >/dev/null 2>&1; then return 0; fi
    command -v debootstrap >/dev/null 2>&1 || die "no $LOCAL_BASE and no debootstrap (apt-get install debootstrap)"
    local root ctr mnt
    root="$(mktemp -d /var/tmp/ptforget-base.XXXXXX)"
    echo "image.sh: making $LOCAL_BASE with debootstrap --variant=minbase bookworm (about 30 s)"
    debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$root.log" 2>&1 || die "debootstrap failed: $root.log"
    ctr="$(buildah from scratch)"
    mnt="$(buildah mount "$ctr")"
    cp -a "$root/." "$mnt/"
    buildah umount "$ctr" >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
    buildah commit --rm -q "$ctr" "$LOCAL_BASE" >/dev/null
    rm -rf "$root" "$root.log"
}

build() {
    local eng t0 args=() mounts=()
    eng="$(engine)"
    t0=$SECONDS
    if [[ "$eng" == docker ]]; then
        docker build -f docker/Dockerfile -t "$IMAGE" --build-arg "BASE_IMAGE=${IMAGE_BASE:-debian:bookworm-slim}" \
            --build-arg "TORCH_SPEC=$TORCH" .
    else
        local base="${IMAGE_BASE:-$LOCAL_BASE}"
        [[ "$base" == "$LOCAL_BASE" ]] && local_base
        local key val path
        for key in index-url extra-index-url find-links constraint; do
            val="$(pip_opt "$key")"
            [[ -n "$val" ]] || continue
            args+=(--build-arg "PIP_$(tr 'a-z-' 'A-Z_' <<<"$key")=$val")
            for path in $val; do        # local folders and files the option names are mounted at the same path
                path="${path#file://}"
                # a local index's pages link to files beside them (<root>/simple -> <root>/files): mount the root
                [[ "$key" == *index-url ]] && path="$(dirname "$path")"
                if [[ "$path" == /* && -e "$path" ]]; then mounts+=(-v "$path:$path:ro"); fi
            done
        done
        val="$(pip_opt cert)"
        if [[ -n "$val" && -f "$val" ]]; then   # the host's CA bundle, beside the image's own (not over it)
            mounts+=(-v "$val:/opt/pip-host-ca.crt:ro")
            args+=(--build-arg PIP_CERT=/opt/pip-host-ca.crt)
        fi
        buildah bud --isolation=chroot --layers --format docker -f docker/Dockerfile -t "$IMAGE" --build-arg "BASE_IMAGE=$base" \
            --build-arg "TORCH_SPEC=$TORCH" "${args[@]}" "${mounts[@]}" .
    fi
    echo "image.sh: built $IMAGE with $eng in $((SECONDS - t0)) s; size: $(size)"
}

size() {
    if [[ "$(engine)" == docker ]]; then docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'
    else buildah images --format '{{.Size}}' "$IMAGE" | head -n 1
    fi
}

# run a command in the image with $CHECK_DIR/image as /work/outputs
in_image() {
    local out="$CHECK_DIR/image"
    if [[ "$(engine)" == docker ]]; then
        docker run --rm --user "$(id -u):$(id -g)" -v "$out:/work/outputs" "$IMAGE" "$@"
    else
        local ctr rc=0
        ctr="$(buildah from -q "$IMAGE")"
        buildah run --isolation=chroot --user "$(id -u):$(id -g)" -v "$out:/work/outputs" "$ctr" -- \
            /usr/local/bin/ptforget-entrypoint "$@" || rc=$?
        buildah rm "$ctr" >/dev/null
        return "$rc"
    fi
}

check() {
    local t0 claims="claims=[P1]"
    [[ -x "$PY" ]] || die "no host environment at $PY: run make install first"
    rm -rf "$CHECK_DIR"
    mkdir -p "$CHECK_DIR/image" "$CHECK_DIR/host"
    t0=$SECONDS
    in_image "$claims" quiet=true hydra.run.dir=/work/outputs/check
    local t_image=$((SECONDS - t0))
    t0=$SECONDS
    PTFORGET_OUTPUT_DIR="$CHECK_DIR/host" PTFORGET_CACHE_DIR="$CHECK_DIR/host/.cache/ptforget" WANDB_MODE=disabled \
        "$(dirname "$PY")/ptforget-check" "$claims" quiet=true hydra.run.dir="$CHECK_DIR/host/check"
    local t_host=$((SECONDS - t0))
    echo "image.sh: the check took $t_image s in the image, $t_host s on the host; image size $(size)"
    "$PY" scripts/compare_verdicts.py "$CHECK_DIR/host/check/verdicts.json" "$CHECK_DIR/image/check/verdicts.json"
}

case "${1:-}" in
    build) build ;;
    check) check ;;
    *) echo "usage: $0 build|check" >&2; exit 2 ;;
esac
