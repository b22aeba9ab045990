#!/usr/bin/env bash
# The timing-dependent tests 20 times in a row while another 2-thread job loads the machine, then the
# whole suite once under the same load. Reproduce: bash docs/bench/spine/stress.sh > docs/bench/spine/stress.txt
set -u
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 CURATE_QUIET=1
# The load: a 2-thread BLAS job (float32 matmuls), the kind of neighbour that made tests flaky.
OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 .venv/bin/python -c "
import numpy as np
a = np.random.default_rng(0).random((1500, 1500), dtype=np.float32)
while True:
    a = (a @ a.T) / 1500.0
" &
LOAD=$!
trap 'kill $LOAD' EXIT
sleep 5
echo "load job pid $LOAD; loadavg $(cat /proc/loadavg)"
TIMING="tests/test_loop.py tests/test_journal_kill.py tests/test_backend_openai.py tests/test_backend_vllm.py tests/test_models.py"
pass=0
for i in $(seq 1 20); do
  start=$(date +%s)
  if .venv/bin/python -m pytest -q -p no:cacheprovider $TIMING > /tmp/stress-$i.log 2>&1; then pass=$((pass + 1)); r=pass; else r=FAIL; fi
  echo "run $i: $r in $(( $(date +%s) - start )) s; $(tail -1 /tmp/stress-$i.log); loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
done
echo "timing-dependent tests: $pass/20 runs passed under load"
start=$(date +%s)
.venv/bin/python -m pytest -q -p no:cacheprovider > /tmp/stress-suite.log 2>&1; rc=$?
echo "whole suite under load: exit $rc in $(( $(date +%s) - start )) s; $(tail -1 /tmp/stress-suite.log); loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
