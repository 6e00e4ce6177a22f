#!/bin/sh
# Installs mod_rtc_core into an installed FreeSWITCH: the module into its modules dir and the configuration
# into its autoload_configs dir (an existing rtc_core.conf.xml is kept; the new one is written beside it as
# rtc_core.conf.xml.new). It does not build FreeSWITCH, and builds nothing unless the module is missing.
#
#   scripts/install.sh            # uses `pkg-config freeswitch` (set PKG_CONFIG_PATH for a non-default prefix)
#   DESTDIR=/tmp/stage scripts/install.sh
set -eu
cd "$(dirname "$0")/.."

if ! pkg-config --exists freeswitch; then
    echo "install.sh: pkg-config cannot find freeswitch; set PKG_CONFIG_PATH to <prefix>/lib/pkgconfig" >&2
    exit 1
fi
modulesdir=$(pkg-config --variable=modulesdir freeswitch)
confdir=$(pkg-config --variable=confdir freeswitch)
target=${CARGO_TARGET_DIR:-target}
so="$target/release/libmod_rtc_core.so"
if [ ! -f "$so" ]; then
    cargo build --release -p mod_rtc_core
fi
dest=${DESTDIR:-}
install -d "$dest$modulesdir" "$dest$confdir/autoload_configs"
install -m 0755 "$so" "$dest$modulesdir/mod_rtc_core.so"
conf="$dest$confdir/autoload_configs/rtc_core.conf.xml"
if [ -e "$conf" ]; then
    install -m 0644 conf/autoload_configs/rtc_core.conf.xml "$conf.new"
    echo "kept $conf; the shipped one is at $conf.new"
else
    install -m 0644 conf/autoload_configs/rtc_core.conf.xml "$conf"
fi
install -d "$dest$confdir/rtc_core"
for table in conf/rtc_core/*.csv; do
    target="$dest$confdir/rtc_core/$(basename "$table")"
    [ -e "$target" ] || install -m 0644 "$table" "$target"
done
echo "installed $dest$modulesdir/mod_rtc_core.so; in fs_cli: load mod_rtc_core"
