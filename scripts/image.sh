#!/usr/bin/env bash
# `make image`: builds the container image without a Docker engine (none runs on these
# machines; `make docker-image` is the Dockerfile's build for machines that have one).
#
# Usage: scripts/image.sh
#
# The image is one layer, assembled here from Debian's own packages and the release binary:
#   /ssm-resync                                the binary (cargo build --locked --release)
#   /lib64/ld-linux-x86-64.so.2, /lib/x86_64-linux-gnu/{ld-linux-x86-64.so.2,libc.so.6,
#   libm.so.6,libgcc_s.so.1}                   exactly what `ldd` says the binary loads, taken
#                                              from the .debs of the versions installed here
#                                              (libc6, libgcc-s1), the ones it was linked with
#   /etc/ssl/certs/ca-certificates.crt         Debian's ca-certificates bundle, made by that
#                                              package's own update-ca-certificates --default
#                                              (rustls-native-certs finds it there: the SNS
#                                              signing certificate is fetched over HTTPS)
#   /etc/passwd, /etc/group                    root, nonroot (65532), nobody
#   /etc/nsswitch.conf                         hosts: files dns
#   /home/nonroot (65532, 0700), /tmp (1777)
#   /usr/share/doc/<package>/copyright         the licences of the Debian files above
# No shell, no package manager, nothing else. The config matches the Dockerfile's (a test,
# tests/stack/image.rs, keeps them in step): USER 65532:65532, ENTRYPOINT ["/ssm-resync"],
# CMD ["serve"], EXPOSE 8080 9090, the same labels.
#
# Tools, from Debian: umoci (the OCI layout and image config; tests/stack/image.rs unpacks the image
# into a runtime bundle with it), skopeo (the archives), runc (tests/stack/image.rs runs the image
# under it; Debian's crun 1.8 refuses these machines' hybrid cgroup v1 + v2 hierarchy: "cgroups
# in hybrid mode not supported, drop all controllers from cgroupv2"), openssl (for
# update-ca-certificates), ca-certificates (its installed version is the one taken); installed
# when missing.
#
# Output, in target/image/ (IMAGE_OUT):
#   oci/                   an OCI image layout, tagged ssm-resync:dev (what k8s/overlays/local
#                          and docs/deploy.md's `make image` name) and ghcr.io/example/ssm-resync:
#                          <Cargo version> (what k8s/overlays/eks and the chart name)
#   ssm-resync-oci.tar     the same as an OCI archive (podman load, skopeo, ctr import, crane)
#   ssm-resync-docker.tar  the same as a docker-archive (docker load, kind load image-archive)
#   digest                 the manifest digest
# Reproducible: every timestamp (file mtimes, config and history `created`) is
# SOURCE_DATE_EPOCH, by default the last commit's time, so the same commit, binary and
# Debian package versions give the same digest.
set -euo pipefail

SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(dirname "$SCRIPTS")
OUT=${IMAGE_OUT:-$REPO/target/image}
WORK=$OUT/work
LAYOUT=$OUT/oci
NAME=ssm-resync
TAG=dev
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/Cargo.toml" | head -n 1)
RELEASE_REF=ghcr.io/example/ssm-resync:$VERSION
USER_ID=65532
APT_PACKAGES=(umoci skopeo runc openssl ca-certificates)

log() { printf 'image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $# -eq 0 ]] || { sed -n '/^# Usage:/p' "${BASH_SOURCE[0]}" | sed 's/^# //' >&2; exit 2; }
[[ -n $VERSION ]] || die "no version in Cargo.toml"
[[ $(id -u) -eq 0 ]] || die "run as root (apt-get, and file owners in the layer)"

export DEBIAN_FRONTEND=noninteractive LC_ALL=C
"$SCRIPTS/apt-ensure.sh" "${APT_PACKAGES[@]}"

cd "$REPO"
log "cargo build --locked --release --bin ssm-resync"
cargo build --locked --release --bin ssm-resync
BIN=$REPO/target/release/ssm-resync

SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 0)}
CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
REVISION=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)

rm -rf "$WORK" "$LAYOUT"
mkdir -p "$WORK/debs" "$WORK/x"
ROOT=$WORK/rootfs
mkdir -p "$ROOT"

# --- the files the binary loads, and the Debian packages they come from ---------------
# ldd lines: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and the interpreter
# "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no file.
mapfile -t LIBS < <(ldd "$BIN" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
((${#LIBS[@]})) || die "ldd found no libraries in $BIN (a static binary needs no base: adapt this script)"
# dpkg knows each file by the path its package ships (/lib/...); on a merged-/usr system
# ldd may print /usr/lib/..., so the other spelling is tried too.
declare -A PKG_OF=()
paths=()
for lib in "${LIBS[@]}"; do
  pkg=""
  for path in "$lib" "${lib#/usr}" "/usr$lib"; do
    pkg=$(dpkg -S "$path" 2>/dev/null | head -n 1 | cut -d: -f1) || pkg=""
    [[ -n $pkg ]] && break
  done
  [[ -n $pkg ]] || die "no Debian package owns $lib"
  PKG_OF[$path]=$pkg
  paths+=("$path")
done
LIBS=("${paths[@]}")
mapfile -t PKGS < <(printf '%s\n' "${PKG_OF[@]}" ca-certificates | sort -u)
PKG_LABEL=""
for pkg in "${PKGS[@]}"; do
  v=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null) || die "$pkg is not installed"
  PKG_LABEL+="${PKG_LABEL:+ }$pkg=$v"
done
log "base from Debian: $PKG_LABEL"
# The very versions installed here (the binary was linked against them).
fetch_pkg() {
  local pkg=$1 v
  [[ -d $WORK/x/$pkg ]] && return 0
  v=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null) || die "$pkg is not installed"
  if ! (cd "$WORK/debs" && apt-get download -qq "$pkg=$v") 2>>"$WORK/apt-download.log"; then
    apt-get update -qq || true
    (cd "$WORK/debs" && apt-get download -qq "$pkg=$v") || die "apt-get download $pkg=$v failed"
  fi
  mkdir -p "$WORK/x/$pkg"
  dpkg-deb -x "$WORK/debs/${pkg}_"*.deb "$WORK/x/$pkg"
}
for pkg in "${PKGS[@]}"; do
  fetch_pkg "$pkg"
done

# Copies one path of a package's tree into the rootfs, following symlinks within the tree.
copy_from_pkg() {
  local pkg=$1 path=$2 src target
  src=$WORK/x/$pkg$path
  [[ -e $src || -L $src ]] || die "$path is not in the $pkg package (ldd found it on this machine)"
  mkdir -p "$ROOT$(dirname "$path")"
  cp -a "$src" "$ROOT$path"
  if [[ -L $src ]]; then
    target=$(readlink "$src")
    [[ $target == /* ]] || target=$(dirname "$path")/$target
    copy_from_pkg "$pkg" "$(realpath -m -s "$target")"
  fi
}
for lib in "${LIBS[@]}"; do
  copy_from_pkg "${PKG_OF[$lib]}" "$lib"
done
# Each package's licence; a doc folder that is a symlink (libgcc-s1 -> gcc-12-base) names the
# package that ships it.
for pkg in "${PKGS[@]}"; do
  doc=$pkg
  if [[ -L $WORK/x/$pkg/usr/share/doc/$pkg ]]; then
    doc=$(basename "$(readlink "$WORK/x/$pkg/usr/share/doc/$pkg")")
    fetch_pkg "$doc"
  fi
  mkdir -p "$ROOT/usr/share/doc/$pkg"
  install -m 0644 "$WORK/x/$doc/usr/share/doc/$doc/copyright" "$ROOT/usr/share/doc/$pkg/copyright" \
    || die "no copyright file for $pkg (looked in $doc)"
done

# --- CA certificates: the package's own tool, as its postinst runs it (every CA on) ----------
CA=$WORK/x/ca-certificates
mkdir -p "$WORK/etc-ssl-certs"
"$CA/usr/sbin/update-ca-certificates" --default \
  --certsdir "$CA/usr/share/ca-certificates" \
  --certsconf /dev/null \
  --localcertsdir "$WORK/no-local-certs" \
  --etccertsdir "$WORK/etc-ssl-certs" \
  --hooksdir "$WORK/no-hooks" >"$WORK/update-ca-certificates.log" \
  || die "update-ca-certificates failed (log: $WORK/update-ca-certificates.log)"
mkdir -p "$ROOT/etc/ssl/certs"
install -m 0644 "$WORK/etc-ssl-certs/ca-certificates.crt" "$ROOT/etc/ssl/certs/ca-certificates.crt"
ncerts=$(grep -c 'BEGIN CERTIFICATE' "$ROOT/etc/ssl/certs/ca-certificates.crt")
((ncerts > 50)) || die "the CA bundle holds only $ncerts certificates"

# --- users, name service, the binary ------------------------------------------------------
cat >"$ROOT/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:$USER_ID:$USER_ID:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$ROOT/etc/group" <<EOF
root:x:0:
nogroup:x:65534:
nonroot:x:$USER_ID:
EOF
printf 'hosts: files dns\n' >"$ROOT/etc/nsswitch.conf"
install -d -m 0700 -o "$USER_ID" -g "$USER_ID" "$ROOT/home/nonroot"
install -d -m 1777 "$ROOT/tmp"
install -m 0755 "$BIN" "$ROOT/ssm-resync"
chmod 0644 "$ROOT/etc/passwd" "$ROOT/etc/group" "$ROOT/etc/nsswitch.conf"
find "$ROOT" -type d ! -path "$ROOT/home/nonroot" ! -path "$ROOT/tmp" -exec chmod 0755 {} +

# --- the layer and the image -----------------------------------------------------------------
# GNU tar, reproducibly: sorted names, one mtime, numeric owners, no atime/ctime.
(cd "$ROOT" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | sort) >"$WORK/top"
tar -C "$ROOT" --sort=name --mtime="@$SOURCE_DATE_EPOCH" --numeric-owner \
  --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -cf "$WORK/layer.tar" -T "$WORK/top"

umoci init --layout "$LAYOUT"
umoci new --image "$LAYOUT:$NAME:$TAG"
umoci raw add-layer --image "$LAYOUT:$NAME:$TAG" \
  --history.created "$CREATED" --history.created_by "scripts/image.sh (rootfs: $PKG_LABEL, ssm-resync $VERSION)" \
  "$WORK/layer.tar"
umoci config --image "$LAYOUT:$NAME:$TAG" \
  --created "$CREATED" --history.created "$CREATED" --history.created_by "scripts/image.sh (config)" \
  --os linux --architecture amd64 \
  --config.user "$USER_ID:$USER_ID" \
  --config.workingdir / --config.entrypoint /ssm-resync --config.cmd serve \
  --config.exposedports 8080/tcp --config.exposedports 9090/tcp \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --config.label org.opencontainers.image.title=ssm-resync \
  --config.label "org.opencontainers.image.description=Force-syncs ExternalSecrets the moment an AWS SSM parameter changes (SNS -> Kubernetes)" \
  --config.label org.opencontainers.image.licenses=Apache-2.0 \
  --config.label "org.opencontainers.image.version=$VERSION" \
  --config.label "org.opencontainers.image.revision=$REVISION" \
  --config.label "org.opencontainers.image.created=$CREATED" \
  --config.label "io.ssm-resync.debian-packages=$PKG_LABEL"
umoci tag --image "$LAYOUT:$NAME:$TAG" "$RELEASE_REF"
umoci gc --layout "$LAYOUT"
# umoci writes 0600 files; the layout is for any local user to read.
chmod -R a+rX "$LAYOUT"

rm -f "$OUT/ssm-resync-oci.tar" "$OUT/ssm-resync-docker.tar"
skopeo copy --quiet "oci:$LAYOUT:$NAME:$TAG" "oci-archive:$OUT/ssm-resync-oci.tar:$NAME:$TAG"
skopeo copy --quiet --additional-tag "$RELEASE_REF" \
  "oci:$LAYOUT:$NAME:$TAG" "docker-archive:$OUT/ssm-resync-docker.tar:$NAME:$TAG"

digest=$(skopeo inspect --raw "oci:$LAYOUT:$NAME:$TAG" | sha256sum | cut -d' ' -f1)
printf 'sha256:%s\n' "$digest" >"$OUT/digest"
compressed=$(skopeo inspect --raw "oci:$LAYOUT:$NAME:$TAG" \
  | python3 -c 'import json,sys; print(sum(l["size"] for l in json.load(sys.stdin)["layers"]))')
uncompressed=$(stat -c %s "$WORK/layer.tar")
rm -rf "$WORK"
log "built $NAME:$TAG and $RELEASE_REF, sha256:$digest"
log "  layout $LAYOUT, archives $OUT/ssm-resync-oci.tar, $OUT/ssm-resync-docker.tar"
log "  size: $((compressed / 1024)) KiB compressed (what a registry stores and a node pulls), $((uncompressed / 1024)) KiB unpacked"
log "  user $USER_ID:$USER_ID, entrypoint [/ssm-resync], cmd [serve], ports 8080/tcp 9090/tcp"
