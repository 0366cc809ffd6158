#!/usr/bin/env bash
# Regenerates the defaults block of docs/config.md from `keyframe config`
# (agent.TestConfigDocInSync fails until this is run after a config change),
# and the packages' /etc/keyframe/keyframe.conf, packaging/keyframe.conf, from
# `keyframe config -template` (agent.TestConffileInSync).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-bin/keyframe}
doc=docs/config.md
new=$("$bin" config)
awk -v new="$new" '
	/^```$/ && !done { if (!inblock) { print; print new; inblock=1; next } else { inblock=0; done=1 } }
	!inblock { print }
' "$doc" >"$doc.tmp"
mv "$doc.tmp" "$doc"
"$bin" config -template >packaging/keyframe.conf.tmp
mv packaging/keyframe.conf.tmp packaging/keyframe.conf
