#!/usr/bin/env bash
# Builds podlb's container image without a registry or a base image: FROM
# scratch plus the podlb binary and the shared libraries it links (as ldd
# names them: glibc, libgcc_s, the dynamic loader), with Debian's buildah.
# The result runs like deploy/Dockerfile's (same entrypoint, command, user,
# ports); deploy/Dockerfile stays the way to build for a registry.
#
# Usage: deploy/image/build.sh [--run]
#   PODLB_BIN    the binary (default: target/release/podlb, built if missing)
#   PODLB_IMAGE  the tag (default: localhost/podlb:dev)
#   PODLB_IMAGE_ROOT  container storage for buildah/podman (default: theirs,
#                /var/lib/containers/storage); the vfs driver, which needs
#                no kernel overlay support
# --run: also runs the image once with podman (`podlb --version`, and
# `podlb check` on the ConfigMap's podlb.toml from deploy/kubernetes mounted
# read-only at /etc/podlb/podlb.toml). On the CI machines podman's defaults
# fail: it raises the container's RLIMIT_NOFILE above the sandbox's hard
# limit, which is not permitted ("runc create failed: ... error setting
# rlimit type 7: operation not permitted"), hence the explicit --ulimit;
# crun also refused ("cgroups in hybrid mode not supported"), so runc and
# the cgroupfs manager are named when runc is installed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
run=0
[ "${1:-}" = "--run" ] && run=1
bin="${PODLB_BIN:-$root/target/release/podlb}"
tag="${PODLB_IMAGE:-localhost/podlb:dev}"
store=(--storage-driver vfs)
if [ -n "${PODLB_IMAGE_ROOT:-}" ]; then
    store+=(--root "$PODLB_IMAGE_ROOT/root" --runroot "$PODLB_IMAGE_ROOT/run")
fi

command -v buildah >/dev/null || { echo "build.sh: buildah missing (netns-tests/deps.sh installs it)" >&2; exit 1; }
if [ ! -x "$bin" ]; then
    (cd "$root" && cargo build --release --locked --bin podlb)
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/etc/podlb" "$ctx/rootfs/tmp"
# Without the debug info the release profile keeps (debug = 1); the
# symbols stay, so a panic's backtrace still names functions.
if command -v strip >/dev/null; then
    strip --strip-debug -o "$ctx/rootfs/usr/local/bin/podlb" "$bin"
    chmod 0755 "$ctx/rootfs/usr/local/bin/podlb"
else
    install -m 0755 "$bin" "$ctx/rootfs/usr/local/bin/podlb"
fi
# Every library ldd resolves, at the path the loader looks it up (symlinks
# followed: /lib64/ld-linux-x86-64.so.2 becomes a file).
libs=$(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
for lib in $libs; do
    cp --parents -L "$lib" "$ctx/rootfs/"
done
echo "build.sh: $(basename "$bin") with $(echo $libs | wc -w) libraries: $(echo $libs)"
chmod 1777 "$ctx/rootfs/tmp"

cat > "$ctx/Containerfile" <<'CF'
FROM scratch
COPY rootfs/ /
USER 0:0
# The admin endpoint (/metrics /status /flows /healthz) and connection sync.
EXPOSE 9100/tcp 8899/udp
ENTRYPOINT ["/usr/local/bin/podlb"]
CMD ["run", "--config", "/etc/podlb/podlb.toml"]
CF

buildah "${store[@]}" build --quiet --layers=false -f "$ctx/Containerfile" -t "$tag" "$ctx"
buildah "${store[@]}" images --format '{{.Name}}:{{.Tag}} {{.ID}} {{.Size}}' "$tag"

[ "$run" = 1 ] || exit 0
command -v podman >/dev/null || { echo "build.sh: podman missing (netns-tests/deps.sh installs it)" >&2; exit 1; }
runtime=()
if command -v runc >/dev/null; then runtime=(--runtime "$(command -v runc)"); fi
podman_run() {
    podman "${store[@]}" "${runtime[@]}" --cgroup-manager cgroupfs run --rm --network none \
        --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 "$@"
}
python3 - "$root/deploy/kubernetes/configmap.yaml" > "$ctx/podlb.toml" <<'PY'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc.get("kind") == "ConfigMap":
        sys.stdout.write(doc["data"]["podlb.toml"])
PY
echo "build.sh: run: podlb --version"
podman_run "$tag" --version
echo "build.sh: run: podlb check on deploy/kubernetes/configmap.yaml's podlb.toml"
podman_run -v "$ctx/podlb.toml:/etc/podlb/podlb.toml:ro" "$tag" check --config /etc/podlb/podlb.toml
echo "build.sh: OK"
