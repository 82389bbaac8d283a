"""Property tests of the scheduler and KV accounting, driven without a model: every step's token
budget holds, no running decode is skipped under sarathi, every admitted request finishes, no
block leaks, and a request never computes past the tokens it knows."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from cadence.core.config import SchedulerConfig
from cadence.core.kv.kv_cache_manager import KVCacheManager
from cadence.core.request import Request, RequestStatus
from cadence.core.sampling_params import SamplingParams
from cadence.core.scheduler import SCHEDULERS, make_scheduler

BLOCK = 4
MAX_LEN = 96

workloads = st.lists(
    st.tuples(
        st.integers(1, 60),  # prompt length
        st.integers(1, 20),  # max tokens
        st.integers(0, 3),  # arrival step
        st.integers(0, 2),  # shared-prefix group (prefix-cache hits)
    ),
    min_size=1,
    max_size=14,
)


def drive(policy, workload, budget, max_seqs, num_blocks, eos_rate, seed, caching=True, abort_rate=0.0):
    rng = random.Random(seed)
    kv = KVCacheManager(num_blocks, BLOCK, enable_prefix_caching=caching)
    sched = make_scheduler(SchedulerConfig(policy=policy, max_num_batched_tokens=budget, max_num_seqs=max_seqs),
                           kv, MAX_LEN)
    prefixes = {g: [rng.randrange(50) for _ in range(12)] for g in range(3)}
    reqs = []
    for i, (plen, max_tokens, arrive, group) in enumerate(workload):
        prompt = (prefixes[group] + [rng.randrange(50) for _ in range(plen)])[: max(plen, 1)]
        max_tokens = min(max_tokens, MAX_LEN - len(prompt))
        reqs.append((arrive, Request(f"r{i}", prompt, SamplingParams(max_tokens=max_tokens, temperature=0),
                                     eos_token_ids=frozenset({0}))))
    finished, aborted = set(), set()
    step = 0
    while step < 5000:
        for arrive, req in reqs:
            if arrive == step:
                sched.add_request(req)
        if step > 3 and not sched.has_unfinished():
            break
        running_decodes = [r for r in sched.running if not r.is_prefill]
        out = sched.schedule(float(step))
        ids = [s.request.request_id for s in out.scheduled]
        assert len(ids) == len(set(ids)), "a request scheduled twice in one step"
        if policy == "sarathi":
            assert out.num_batched_tokens <= budget
        else:  # whole prefills: only a lone prompt longer than the budget may exceed it
            prefills = [s for s in out.scheduled if s.num_new_tokens > 1]
            if len(prefills) > 1:
                assert sum(s.num_new_tokens for s in prefills) <= budget
        preempted = {r.request_id for r in out.preempted}
        if policy == "sarathi":
            scheduled = set(ids)
            for r in running_decodes:
                assert r.request_id in scheduled or r.request_id in preempted, f"decode {r.request_id} skipped"
        sampled = {}
        for s in out.scheduled:
            req = s.request
            assert s.num_computed_tokens + s.num_new_tokens <= req.num_tokens
            assert len(kv.block_ids(req.request_id)) * BLOCK >= s.num_computed_tokens + s.num_new_tokens
            if s.samples:
                sampled[req.request_id] = 0 if rng.random() < eos_rate else rng.randrange(1, 50)
        done = sched.update_from_output(out, sampled, float(step))
        finished.update(r.request_id for r in done)
        if abort_rate and sched.running and rng.random() < abort_rate:
            victim = rng.choice(sched.running)
            sched.abort([victim.request_id])
            aborted.add(victim.request_id)
        step += 1
    assert not sched.has_unfinished(), "requests left unfinished"
    assert finished | aborted == {r.request_id for _, r in reqs}
    for _, r in reqs:
        if r.request_id in finished:
            assert r.status in (RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH)
            assert 1 <= r.num_output_tokens <= r.sampling_params.max_tokens
    kv.check_all_free()
    assert all(b.ref_cnt == 0 for b in kv.pool.blocks)
    return reqs


@settings(max_examples=60, deadline=None)
@given(
    policy=st.sampled_from(sorted(SCHEDULERS)),
    workload=workloads,
    budget=st.integers(1, 80),
    max_seqs=st.integers(1, 8),
    spare_blocks=st.integers(0, 30),
    eos_rate=st.sampled_from([0.0, 0.1]),
    seed=st.integers(0, 1000),
    caching=st.booleans(),
    abort_rate=st.sampled_from([0.0, 0.05]),
)
def test_scheduler_invariants(policy, workload, budget, max_seqs, spare_blocks, eos_rate, seed, caching, abort_rate):
    # The pool always holds one longest request, so every request can finish; often far fewer
    # blocks than the offered load needs, so preemption is exercised.
    num_blocks = -(-MAX_LEN // BLOCK) + spare_blocks
    drive(policy, workload, budget, max_seqs, num_blocks, eos_rate, seed, caching, abort_rate)


@settings(max_examples=25, deadline=None)
@given(workload=workloads, seed=st.integers(0, 1000), budget=st.integers(1, 64))
def test_outputs_independent_of_prefix_caching_and_memory(workload, seed, budget):
    """With a deterministic 'model' (the next token is a function of the sequence so far), what each
    request generates cannot depend on caching, preemption or the batch it ran in."""

    def run(caching, num_blocks):
        reqs = drive_deterministic(workload, seed, budget, caching, num_blocks)
        return {r.request_id: r.output_token_ids for r in reqs}

    big = run(False, 1000)
    assert run(True, 1000) == big
    assert run(True, -(-MAX_LEN // BLOCK)) == big


def drive_deterministic(workload, seed, budget, caching, num_blocks, policy="sarathi", overlapped=False, eos=False):
    """`overlapped`: drive the scheduler as the engine's async scheduling does: advance() right after
    each step is 'launched', resolve() one step later, with the 'model' reading only known tokens."""
    rng = random.Random(seed)
    kv = KVCacheManager(num_blocks, BLOCK, enable_prefix_caching=caching)
    sched = make_scheduler(SchedulerConfig(policy=policy, max_num_batched_tokens=budget), kv, MAX_LEN)
    prefixes = {g: [rng.randrange(50) for _ in range(12)] for g in range(3)}
    reqs = []
    for i, (plen, max_tokens, _, group) in enumerate(workload):
        prompt = (prefixes[group] + [rng.randrange(50) for _ in range(plen)])[: max(plen, 1)]
        req = Request(f"r{i}", prompt, SamplingParams(max_tokens=min(max_tokens, MAX_LEN - len(prompt)), temperature=0),
                      eos_token_ids=frozenset({0}) if eos else frozenset())
        sched.add_request(req)
        reqs.append(req)
    in_flight: list[Request] = []
    while sched.has_unfinished() or in_flight:
        out = sched.schedule()
        if not overlapped:
            sampled = {s.request.request_id: hash(tuple(s.request.all_token_ids())) % 50
                       for s in out.scheduled if s.samples}
            sched.update_from_output(out, sampled, 0.0)
            continue
        sampling = sched.advance(out, 0.0)
        tokens = {r.request_id: hash(tuple(r.known_token_ids())) % 50 for r in in_flight}
        sched.resolve(in_flight, tokens, 0.0)
        in_flight = sampling
    kv.check_all_free()
    assert all(r.num_placeholders == 0 for r in reqs)
    return reqs


@settings(max_examples=40, deadline=None)
@given(workload=workloads, seed=st.integers(0, 1000), budget=st.integers(1, 64),
       policy=st.sampled_from(sorted(SCHEDULERS)), caching=st.booleans(), eos=st.booleans(),
       spare_blocks=st.sampled_from([0, 4, 1000]))
def test_overlapped_steps_give_the_outputs_of_serial_steps(workload, seed, budget, policy, caching, eos, spare_blocks):
    """advance()/resolve() one step apart (async scheduling) against update_from_output(): the same
    tokens and finish reasons for every request, whatever the policy, caching, preemption or stops."""
    num_blocks = -(-MAX_LEN // BLOCK) + spare_blocks

    def run(overlapped):
        reqs = drive_deterministic(workload, seed, budget, caching, num_blocks, policy, overlapped, eos)
        return {r.request_id: (r.output_token_ids, r.status) for r in reqs}

    assert run(True) == run(False)
