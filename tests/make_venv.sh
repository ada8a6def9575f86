#!/usr/bin/env bash
# The test references' virtualenv: .venv at the repository root, over Debian's python3
# and its python3-torch (--system-site-packages), with tests/requirements.txt pinned.
# Run by the README's test command and .ci/run; quick when it is up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
if ! cmp -s tests/requirements.txt .venv/requirements.txt; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
  cp tests/requirements.txt .venv/requirements.txt
fi
if ! cmp -s tests/requirements-nodeps.txt .venv/requirements-nodeps.txt; then
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps -r tests/requirements-nodeps.txt
  cp tests/requirements-nodeps.txt .venv/requirements-nodeps.txt
fi
