# shellcheck shell=bash
# Podman set-up shared by the project's container scripts (source it).
# The facts behind it are checked on a Debian 12 host with podman 4.3 and
# no reachable container registry (every image is built locally):
#   - crun fails there ("cgroups in hybrid mode not supported") and the
#     default rlimits cannot be set, so /etc/containers/containers.conf
#     selects runc and sets the ulimits for every podman command;
#   - base images come from mmdebstrap and `podman import`, which keeps no
#     environment, hence the ENV PATH change.
#
#   ess_container_setup               # packages + containers.conf (idempotent)
#   ess_container_base 12|13          # makes debian:12-slim / debian:13-slim
#                                     # if podman does not have it yet

ess__sudo() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ess_container_setup() {
    local missing=() p
    for p in podman runc mmdebstrap uidmap; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "container: installing ${missing[*]}"
        ess__sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive ess__sudo apt-get install -y -qq \
            --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if [ ! -e /etc/containers/containers.conf ]; then
        echo "container: writing /etc/containers/containers.conf (runc, ulimits)"
        ess__sudo mkdir -p /etc/containers
        ess__sudo tee /etc/containers/containers.conf >/dev/null <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=1000:1000"]
[engine]
runtime = "runc"
CONF
    fi
}

ess_container_base() {
    local v=$1 suite tag tmp
    case "$v" in
    12) suite=bookworm ;;
    13) suite=trixie ;;
    *) echo "container: unknown Debian version $v" >&2; return 2 ;;
    esac
    tag="debian:$v-slim"
    if podman image exists "$tag"; then return 0; fi
    echo "container: building $tag with mmdebstrap ($suite)"
    tmp=$(mktemp -d)
    # A lock so that two scripts building the same base do not race.
    (
        flock 9
        if ! podman image exists "$tag"; then
            mmdebstrap --quiet --variant=minbase --include=ca-certificates \
                "$suite" "$tmp/base.tar" &&
                podman import --quiet --change \
                    'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
                    "$tmp/base.tar" "$tag" >/dev/null
        fi
    ) 9>"/tmp/ess-container-base-$v.lock"
    local rc=$?
    rm -rf "$tmp"
    return $rc
}
