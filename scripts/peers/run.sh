#!/usr/bin/env bash
# Runs scripts/peers/peers.py (the Frigate-style and OpenCV MOG2 peers) with a
# Python that has OpenCV and NumPy, installing Debian's python3-opencv and
# python3-numpy first if `import cv2` fails. Only apt is used: PyPI is not
# needed. Arguments go to peers.py unchanged, e.g.
#
#   scripts/peers/run.sh --peer mog2 --json ../shared/motion-data
#   scripts/peers/run.sh --bench-mog2 ../shared/motion-data/opencv_vtest
#
# The interpreter is $PEERS_PYTHON if set, else Debian's /usr/bin/python3 (the
# one apt's python3-* packages are for; a pyenv or venv python3 earlier in PATH
# does not see them), else python3 from PATH.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

py=${PEERS_PYTHON:-}
if [ -z "$py" ]; then
	if [ -x /usr/bin/python3 ]; then py=/usr/bin/python3; else py=$(command -v python3 || true); fi
fi
if [ -z "$py" ]; then
	echo "peers: no python3 found (set PEERS_PYTHON)" >&2
	exit 1
fi

if ! "$py" -c 'import cv2, numpy' 2>/dev/null; then
	echo "peers: $py cannot import cv2/numpy: installing python3-opencv and python3-numpy with apt" >&2
	sudo=""
	if [ "$(id -u)" != 0 ]; then
		if command -v sudo >/dev/null; then sudo=sudo; else
			echo "peers: not root and no sudo: install python3-opencv python3-numpy yourself" >&2
			exit 1
		fi
	fi
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -qq >&2
	$sudo apt-get install -y -qq --no-install-recommends python3-opencv python3-numpy >&2
	if ! "$py" -c 'import cv2, numpy' 2>/dev/null; then
		echo "peers: $py still cannot import cv2 after the install (python3-opencv is for Debian's /usr/bin/python3: set PEERS_PYTHON)" >&2
		exit 1
	fi
fi
exec "$py" "$here/peers.py" "$@"
