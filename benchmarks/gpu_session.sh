#!/usr/bin/env bash
# The GPU runs behind benchmarks/NOTES.md and docs/sim.md, one device call each. Last run on 2026-11-25
# (latest session): check, calibrate and fidelity6 at 4d7a09e (plus benchmarks/mixed_step_host.py).
# Not re-run since the engine changes of that session: capacity-w3 per policy, profile (operator
# profiles), the HF comparison of the shared 64. On the device machine:
#
#   bash benchmarks/gpu_session.sh STEP
#   (STEP: tests | w1 | stride | sweep | fidelity | capacity-w2 | capacity-w3-narrow | piecewise |
#          piecewise-w3 | profile | capacity-w3 | check | calibrate | fidelity6)
#
# Each step writes under $OUT (default /tmp/out) and stays under the device tool's 10-minute limit.
set -euo pipefail
OUT=${OUT:-/tmp/out}
export PYTHONPATH=${PYTHONPATH:-src}
mkdir -p "$OUT"
case "${1:?which step}" in
  tests)     # the GPU suite (~40 s); not yet run at 33ef5af: decode-kernel and async tests
    python -m pytest -q tests/runtime -m gpu 2>&1 | tail -5 | tee "$OUT/gpu_tests.log" ;;
  w1)        # W1 with serial and overlapped steps in one process, both shapes (~3 min)
    python benchmarks/throughput.py --async-scheduling both --out "$OUT/throughput_w1_async.json" ;;
  stride)    # decode attention over 1-layer vs all-layer token rows (~20 s)
    python benchmarks/kv_stride_attention.py --out "$OUT/kv_stride.json" ;;
  sweep)     # served-step sweeps (equal and spread contexts), then calibrated profiles (~6 min)
    for m in llama3-8b qwen3-0.6b; do
      python -m cadence.cli profile --served-sweep --model "$m" --max-seconds 150 \
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
  piecewise)  # the new GPU tests, then W1 with --piecewise-graphs, serial and async, then the same without pieces (~7 min)
    python -m pytest -q tests/runtime/test_gpu_piecewise_graphs.py tests/runtime/test_gpu_decode_kernel.py \
      tests/runtime/test_gpu_async_scheduling.py > "$OUT/gpu_tests_piecewise.log" 2>&1 || true
    tail -30 "$OUT/gpu_tests_piecewise.log"
    python benchmarks/throughput.py --piecewise-graphs --async-scheduling both --out "$OUT/throughput_w1_piecewise.json"
    # the same host without pieces, for the comparison
    python benchmarks/throughput.py --async-scheduling both --out "$OUT/throughput_w1_plain.json" ;;
  piecewise-w3)  # W3 strict-edge points with piecewise graphs: sarathi-512 at 1.5 and 2 req/s, then 2 without pieces (~5 min)
    python benchmarks/capacity_study.py --out "$OUT/cappw" --policies sarathi-512 --workloads W3 --requests-w3 30 \
      --rates 1.5 2 --serve-arg=--piecewise-graphs --name capacity_w3_piecewise
    python benchmarks/capacity_study.py --out "$OUT/cappw/plain" --policies sarathi-512 --workloads W3 --requests-w3 30 \
      --rates 2 --name capacity_w3_plain  # the same host without pieces
    tar czf "$OUT/cap_w3_piecewise.tgz" -C "$OUT" cappw && rm -rf "$OUT/cappw" ;;
  profile)   # re-profile the operators after the decode-kernel change of 400c920 (~2.5 min)
    python -m cadence.cli profile --model llama3-8b --out "$OUT/llama3-8b_tp1_h100.csv" --errors --max-seconds 60
    python -m cadence.cli profile --model qwen3-0.6b --out "$OUT/qwen3-0.6b_tp1_h100.csv" --errors --max-seconds 45 ;;
  check)     # the GPU suite, then W1 serial and async (after the free-slot page premap and finer token buckets, ~5 min)
    python -m pytest -q tests/runtime -m gpu > "$OUT/gpu_tests.log" 2>&1 || true
    tail -5 "$OUT/gpu_tests.log"
    python benchmarks/throughput.py --async-scheduling both --out "$OUT/throughput_w1_async.json" ;;
  calibrate)  # served sweeps with the prefill phase, then the request-path probes, idle and loaded (~8 min)
    for m in llama3-8b qwen3-0.6b; do
      python -m cadence.cli profile --served-sweep --model "$m" --max-seconds 140 \
        --from-profile "benchmarks/profiles/${m}_tp1_h100.csv" --out "$OUT/${m}_tp1_h100_served.csv"
    done
    python benchmarks/sim_fidelity.py probe --model llama3-8b --model qwen3-0.6b --out "$OUT/probe"
    tar czf "$OUT/probe.tgz" -C "$OUT" probe && rm -rf "$OUT/probe" ;;
  fidelity6)  # the six fidelity points of docs/sim.md on the current engine (~8 min)
    python benchmarks/sim_fidelity.py measure --requests 150 --out "$OUT/fid" \
      --point llama3-8b:sarathi:4:2048 --point llama3-8b:vllm:4:4096 --point qwen3-0.6b:sarathi:12:2048 \
      --point llama3-8b:sarathi:2:2048 --point llama3-8b:vllm:2:4096 --point qwen3-0.6b:vllm:12:4096
    tar czf "$OUT/fid.tgz" -C "$OUT" fid && rm -rf "$OUT/fid" ;;
  capacity-w3)  # the W3 study on the current engine, one policy a call: POLICY=sarathi-512|vllm|...
    python benchmarks/capacity_study.py --out "$OUT/cap3" --policies "${POLICY:-sarathi-512}" --workloads W3 \
      --requests-w3 30 --budget-s "${BUDGET_S:-420}" --precision 0.25 --name "capacity_w3_${POLICY:-sarathi-512}"
    tar czf "$OUT/cap_w3_${POLICY:-sarathi-512}.tgz" -C "$OUT" cap3 && rm -rf "$OUT/cap3" ;;
  h200)      # first call on an H200: the GPU suite, W1 serial and async, a llama decode-step profile (~7 min)
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$OUT/gpu.txt" || true
    python -m pytest -q tests/runtime -m gpu > "$OUT/gpu_tests.log" 2>&1 || true
    tail -5 "$OUT/gpu_tests.log"
    python benchmarks/throughput.py --async-scheduling both --out "$OUT/throughput_w1_async.json"
    python benchmarks/profile_decode.py --model llama3-8b > "$OUT/profile_decode_llama.txt" 2>&1 || true
    tail -40 "$OUT/profile_decode_llama.txt" ;;
  triton)    # the Triton decode kernel: variants and configs against flash, the GPU suite, W1 serial and async (~8 min)
    python benchmarks/triton_decode.py --out "$OUT/triton_decode.json" 2>&1 | tee "$OUT/triton_decode.txt"
    python -m pytest -q tests/runtime -m gpu > "$OUT/gpu_tests.log" 2>&1 || true
    tail -5 "$OUT/gpu_tests.log"
    python benchmarks/throughput.py --async-scheduling both --out "$OUT/throughput_w1_async.json" | tail -6 ;;
  w1-peer)   # the GPU suite, then W1 serial, async and async with flash decode, same process (~5 min)
    python -m pytest -q tests/runtime -m gpu > "$OUT/gpu_tests.log" 2>&1 || true
    tail -5 "$OUT/gpu_tests.log"
    python benchmarks/throughput.py --async-scheduling both --peer-decode-kernel flash \
      --out "$OUT/throughput_w1.json" | tail -8 ;;
  hf64)      # the first 64 W1 requests: HF continuous batching and Cadence (serial and async), both shapes (~6 min)
    python benchmarks/throughput.py --skip-w1 --hf --async-scheduling both --out "$OUT/throughput_hf64.json" | tail -8 ;;
  pages)     # after the unpadded token rows: the GPU suite, then W1 serial and async (~5 min)
    python -m pytest -q tests/runtime -m gpu > "$OUT/gpu_tests.log" 2>&1 || true
    tail -5 "$OUT/gpu_tests.log"
    python benchmarks/throughput.py --async-scheduling both --out "$OUT/throughput_w1.json" | tail -6 ;;
  *) echo "unknown step $1" >&2; exit 2 ;;
esac
