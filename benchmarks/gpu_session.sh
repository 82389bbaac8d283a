#!/usr/bin/env bash
# The GPU runs that are prepared but not yet made (see benchmarks/NOTES.md and docs/sim.md), in the
# order that answers the most per device minute. On the device machine, from the repository root:
#
#   bash benchmarks/gpu_session.sh STEP      (STEP: tests | w1 | stride | sweep | fidelity | capacity-w2 | capacity-w3-narrow)
#
# Each step writes under $OUT (default /tmp/out) and stays under the device tool's 10-minute limit.
set -euo pipefail
OUT=${OUT:-/tmp/out}
export PYTHONPATH=${PYTHONPATH:-src}
mkdir -p "$OUT"
case "${1:?which step}" in
  tests)     # the GPU suite, with the async-scheduling test (~1 min)
    python -m pytest -q tests/runtime -m gpu 2>&1 | tail -5 | tee "$OUT/gpu_tests.log" ;;
  w1)        # W1 with serial and overlapped steps in one process, both shapes (~3 min)
    python benchmarks/throughput.py --async-scheduling both --out "$OUT/throughput_w1_async.json" ;;
  stride)    # decode attention over 1-layer vs all-layer token rows (~20 s)
    python benchmarks/kv_stride_attention.py --out "$OUT/kv_stride.json" ;;
  sweep)     # served-step sweeps, then calibrated profiles (~4 min)
    for m in llama3-8b qwen3-0.6b; do
      python -m cadence.cli profile --served-sweep --model "$m" --max-seconds 100 \
        --from-profile "benchmarks/profiles/${m}_tp1_h100.csv" --out "$OUT/${m}_tp1_h100_served.csv"
    done ;;
  fidelity)  # the three fidelity points with the engine in its own process (~4 min)
    python benchmarks/sim_fidelity.py measure --requests 150 --out "$OUT/fid" \
      --point llama3-8b:sarathi:4:2048 --point llama3-8b:vllm:4:4096 --point qwen3-0.6b:sarathi:12:2048
    tar czf "$OUT/fid.tgz" -C "$OUT" fid && rm -rf "$OUT/fid" ;;
  capacity-w2)  # W2 capacities, one policy a call (~6 min each): POLICY=sarathi-512|vllm|sarathi-2048|orca
    python benchmarks/capacity_study.py --out "$OUT/cap" --policies "${POLICY:-sarathi-512}" --workloads W2 \
      --requests-w2 60 --min-arrival-s 30 --start-rate 4 --budget-s ${BUDGET_S:-420} --max-points 6 --precision 0.25 \
      --name "capacity_w2_${POLICY:-sarathi-512}"
    tar czf "$OUT/cap_w2_${POLICY:-sarathi-512}.tgz" -C "$OUT" cap && rm -rf "$OUT/cap" ;;
  capacity-w3-narrow)  # one more W3 point for vllm to narrow its strict bracket [0.5, 0.75) (~1.5 min)
    python benchmarks/capacity_study.py --out "$OUT/capn" --policies vllm --workloads W3 --requests-w3 30 \
      --rates 0.625 --name capacity_w3_narrow
    tar czf "$OUT/cap_w3_narrow.tgz" -C "$OUT" capn && rm -rf "$OUT/capn" ;;
  *) echo "unknown step $1" >&2; exit 2 ;;
esac
