"""The step loop: schedule, run, update. Everything else hangs off these three verbs."""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import torch

from cadence.core.kv.kv_cache_manager import KVCacheManager
from cadence.core.request import Request, RequestStatus
from cadence.core.sampling_params import SamplingParams
from cadence.core.scheduler import make_scheduler
from cadence.core.scheduler.output import SchedulerOutput
from cadence.distributed.shard import TPShard
from cadence.engine.config import EngineConfig
from cadence.engine.outputs import RequestOutput, TokenLogprob
from cadence.engine.tokenizer import IncrementalDetokenizer, Tokenizer
from cadence.models.config import NAMED_SHAPES, ModelConfig
from cadence.models.loader import load_model, resolve_dtype
from cadence.runtime.attention.base import AttentionBackend
from cadence.runtime.model_runner import LaunchedStep, ModelRunner
from cadence.runtime.sampler import Sampler

logger = logging.getLogger("cadence.engine")
GiB = 1 << 30
STEP_TRACE_ENV = "CADENCE_STEP_TRACE"  # a CSV path: the engine writes its step trace there at shutdown
# overlapped = 1: async scheduling, where execute_s is the launch only and update_s holds the wait for
# the previous step's tokens; padded_tokens: the tokens the forward ran (a graphed step's bucket)
STEP_TRACE_FIELDS = ("start", "schedule_s", "prepare_s", "execute_s", "update_s", "num_seqs", "num_decodes",
                     "num_prefill_tokens", "num_context_tokens", "graphed", "overlapped", "max_context_tokens",
                     "padded_tokens")


def resolve_model(model: str | None, load_format: str) -> tuple[ModelConfig, Path | None]:
    """A model argument -> (its config, its folder or None for a named dummy shape)."""
    if model is None:
        from cadence.models.default_model import default_model_path

        path = default_model_path(log=logger.info)
        return ModelConfig.from_path(path), path
    if model in NAMED_SHAPES and not Path(model).exists():
        if load_format != "dummy":
            raise ValueError(f"{model!r} is a named shape without weights; add --load-format dummy")
        return ModelConfig.from_dict(NAMED_SHAPES[model]), None
    path = Path(model).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"model {model!r} is neither a local folder nor a named shape ({', '.join(NAMED_SHAPES)})"
        )
    return ModelConfig.from_path(path), path


class LLMEngine:
    def __init__(self, config: EngineConfig | None = None, clock: Callable[[], float] = time.monotonic, *,
                 tp_rank: int = 0) -> None:
        """`tp_rank` > 0 only in a tensor-parallel worker process (cadence.distributed.worker): it
        builds that rank's shard and never schedules."""
        self.config = config = config or EngineConfig()
        self.clock = clock
        load = config.load
        self.model_config, self.model_path = resolve_model(load.model, load.load_format)
        mc = self.model_config
        self.device = _resolve_device(load.device)
        tp_size = config.parallel.tensor_parallel_size
        if config.scheduler.async_scheduling and tp_size > 1:
            raise ValueError("async scheduling does not run with tensor parallelism yet; drop one of the two")
        shard, self.tp = None, None
        if tp_size > 1:
            from cadence.distributed.group import TensorParallelGroup
            from cadence.distributed.shard import make_shard

            shard = make_shard(mc, tp_size, tp_rank)  # refuses a size the model cannot split, before any spawn
            if mc.num_kv_heads >= tp_size and mc.num_kv_heads % tp_size:
                logger.warning("%d KV heads over %d ranks: rank %d holds %d of them (uneven load)",
                               mc.num_kv_heads, tp_size, tp_rank, shard.kv_heads[1])
            if self.device.type == "cuda":
                self.device = torch.device("cuda", tp_rank)
            if tp_rank == 0:
                self.tp = TensorParallelGroup.launch(config, self.device)
        # what this rank holds: its heads size its KV cache
        self.local_model_config = shard.local_config(mc) if shard is not None else mc
        dtype_name = load.dtype
        if dtype_name == "auto":
            dtype_name = "bfloat16" if self.device.type == "cuda" else "float32"
        self.dtype = resolve_dtype(dtype_name, mc)
        # A folder without tokenizer files (dummy-weight benchmarks) serves token-id prompts only.
        tok_path = load.tokenizer or (self.model_path if _has_tokenizer(self.model_path) else None)
        self.tokenizer = Tokenizer(tok_path) if tok_path is not None and tp_rank == 0 else None
        self.eos_token_ids = frozenset(mc.eos_token_ids) | (self.tokenizer.eos_token_ids if self.tokenizer else frozenset())
        self.model_name = load.served_model_name or (load.model or "SmolLM2-135M-Instruct")

        torch.manual_seed(load.seed)
        try:
            self.runner = self._build_runner(shard, tp_rank)
        except BaseException as exc:
            if self.tp is None:
                raise
            # a collective that failed (RuntimeError) most likely means a worker did: report its error
            failure = self.tp.failure(exc) if isinstance(exc, RuntimeError) else None
            self.tp.shutdown()
            if failure is None:
                raise
            raise failure from exc
        att = self.runner.attention
        self.kv = KVCacheManager(att.num_blocks, att.block_size, config.cache.enable_prefix_caching,
                                 hit_multiple=att.prefix_hit_multiple)
        self.scheduler = make_scheduler(config.scheduler, self.kv, self.max_model_len)
        self._detok: dict[str, IncrementalDetokenizer] = {}
        self.num_prompt_tokens_total = 0
        self.num_generation_tokens_total = 0
        # one row per step (STEP_TRACE_FIELDS), the last 200k: where a served step's time goes
        self.step_trace: deque[tuple] = deque(maxlen=200_000)
        # async scheduling: the launched step whose tokens are not back yet, and the requests it samples
        self._in_flight: LaunchedStep | None = None
        self._in_flight_sampling: list[Request] = []
        self._serial_ids: set[str] = set()  # live requests whose sampling needs serial steps
        logger.info("engine ready: %s on %s (%s), %d KV blocks x %d tokens, policy %s, backend %s%s",
                    self.model_name, self.device, self.dtype, self.kv.num_blocks, self.kv.block_size,
                    config.scheduler.policy, self.runner.attention.name,
                    f", tensor parallel {tp_size}" if tp_size > 1 else "")

    def _build_runner(self, shard: TPShard | None, tp_rank: int) -> ModelRunner:
        """The model (this rank's shard of it) and its runner, with the KV cache sized on every
        rank alike: with tensor parallelism the ranks agree on the smallest block count."""
        config, load, mc = self.config, self.config.load, self.model_config
        model = load_model(mc, self.model_path, dtype=self.dtype, device=self.device,
                           load_format=load.load_format, seed=load.seed, shard=shard)
        backend = _resolve_backend(load.attention_backend, self.device)
        block_size = config.cache.block_size
        num_blocks = config.cache.num_blocks or self._size_kv_cache(block_size, model)
        if shard is not None:
            from cadence.distributed.group import agree_min

            num_blocks = agree_min(num_blocks, self.device)
        self.max_model_len = min(config.scheduler.max_model_len or mc.max_model_len, mc.max_model_len)
        if num_blocks * block_size < self.max_model_len:
            self.max_model_len = num_blocks * block_size
            logger.warning("KV cache holds %d tokens: max_model_len lowered to that", self.max_model_len)
        runner_cls: type[ModelRunner] = ModelRunner
        if shard is not None:
            from cadence.distributed.runner import DriverModelRunner, WorkerModelRunner

            runner_cls = DriverModelRunner if tp_rank == 0 else WorkerModelRunner
        runner = runner_cls(model, self.local_model_config, backend=backend, num_blocks=num_blocks,
                            block_size=block_size, dtype=self.dtype, device=self.device,
                            max_num_seqs=config.scheduler.max_num_seqs, max_model_len=self.max_model_len,
                            async_steps=config.scheduler.async_scheduling, decode_kernel=load.decode_kernel,
                            piecewise_max_tokens=config.scheduler.max_num_batched_tokens if self._piecewise() else 0)
        if self.tp is not None:
            runner.group = self.tp  # type: ignore[attr-defined]
        return runner

    def _piecewise(self) -> bool:
        """Piecewise graphs are for one GPU (no collectives inside a piece)."""
        return self.config.load.piecewise_graphs and self.config.parallel.tensor_parallel_size == 1

    def _size_kv_cache(self, block_size: int, model: torch.nn.Module | None = None) -> int:
        """Blocks that fit: on the GPU, gpu_memory_utilization of the card minus what is in use
        after the weights, minus the peak of a profiling pass over the largest step, minus the
        CUDA-graph outputs and the backend's fixed pages. Recorded in self.kv_sizing."""
        from cadence.runtime.attention import backend_class
        from cadence.runtime.profiling import graph_reserve_bytes, peak_step_bytes

        mc, cache = self.local_model_config, self.config.cache
        name = _resolve_backend(self.config.load.attention_backend, self.device)
        cls = backend_class(name)
        per_block = cls.bytes_per_block(mc, block_size, self.dtype)
        natural = AttentionBackend.bytes_per_block(mc, block_size, self.dtype)
        if self.device.type != "cuda":
            num_blocks = max(1, int(cache.cpu_kv_cache_gib * GiB // per_block))
            self.kv_sizing = {"backend": name, "num_blocks": num_blocks, "bytes_per_block": per_block}
            return num_blocks
        sched = self.config.scheduler
        peak = 0
        if model is not None:
            peak = peak_step_bytes(model, sched.max_num_batched_tokens, sched.max_num_seqs, self.device)
        reserve = cls.fixed_overhead_bytes(mc, block_size, self.dtype, self.config.scheduler.max_num_seqs)
        if cls.supports_cuda_graphs:
            reserve += graph_reserve_bytes(mc.vocab_size, mc.hidden_size, sched.max_num_seqs)
            if self._piecewise():  # their private pool holds one forward's activations
                reserve += peak
        free, total = torch.cuda.mem_get_info(self.device)
        budget = cache.gpu_memory_utilization * total - (total - free) - peak - reserve
        num_blocks = max(1, int(budget // per_block))
        self.kv_sizing = {
            "backend": name, "total_bytes": total, "free_after_weights_bytes": free, "profile_peak_bytes": peak,
            "reserve_bytes": reserve, "kv_budget_bytes": int(budget), "bytes_per_block": per_block,
            "natural_bytes_per_block": natural, "num_blocks": num_blocks,
            "cacheable_tokens": num_blocks * block_size,
            # cacheable tokens over what the budget would hold at the model's own bytes per token
            "tokens_vs_budget": num_blocks * natural / max(budget, 1),
            "tokens_vs_free": num_blocks * natural / free,
        }
        logger.info("KV sizing: %s", self.kv_sizing)
        return num_blocks

    # -- requests ---------------------------------------------------------------------------
    def encode_prompt(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("this model has no tokenizer: pass prompt token ids")
            return self.tokenizer.encode(prompt)
        ids = list(prompt)
        vocab = self.model_config.vocab_size
        if any((not isinstance(t, int)) or t < 0 or t >= vocab for t in ids):
            raise ValueError(f"prompt token ids must be integers in [0, {vocab})")
        return ids

    def add_request(self, request_id: str, prompt: str | list[int], params: SamplingParams | None = None,
                    arrival_time: float | None = None) -> Request:
        params = params or SamplingParams()
        if params.n != 1:
            raise ValueError("the engine runs one sequence per request; fan out n > 1 above it")
        ids = self.encode_prompt(prompt)
        req = Request(request_id, ids, params, arrival_time=self.clock() if arrival_time is None else arrival_time,
                      eos_token_ids=self.eos_token_ids)
        self.scheduler.add_request(req)  # validates lengths against the context
        if self.tokenizer is not None:
            self._detok[request_id] = IncrementalDetokenizer(
                self.tokenizer, ids[-6:], params.stop, params.include_stop_str_in_output, params.skip_special_tokens
            )
        self.num_prompt_tokens_total += len(ids)
        if not Sampler.can_defer(req):
            self._serial_ids.add(request_id)
        return req

    def abort(self, request_ids: str | list[str]) -> None:
        ids = [request_ids] if isinstance(request_ids, str) else list(request_ids)
        for req in self.scheduler.abort(ids):
            req.finished_time = self.clock()
            self._detok.pop(req.request_id, None)
            self._serial_ids.discard(req.request_id)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished() or self._in_flight is not None

    # -- the loop ---------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """One step: outputs of the tokens it (or, with async scheduling, the step before) sampled."""
        if self.config.scheduler.async_scheduling:
            if not self._serial_ids:
                return self._step_overlapped()
            if self._in_flight is not None:  # a request needs serial steps: land the step in flight first
                return self._land_in_flight()
        t0 = time.perf_counter()
        out = self.scheduler.schedule(self.clock())
        t1 = time.perf_counter()
        prep0, replays0 = self.runner.prepare_seconds, self._replays()
        tokens, logprobs = self.runner.execute(out, self.kv)
        t2 = time.perf_counter()
        now = self.clock()
        self.scheduler.update_from_output(out, tokens, now)
        accepted = [(s.request, tokens[s.request.request_id]) for s in out.scheduled
                    if s.request.request_id in tokens and s.request.status is not RequestStatus.FINISHED_ABORTED]
        outputs = self._outputs(accepted, logprobs, now)
        self.last_step = out
        self._trace(t0, t1, t2, prep0, replays0, out)
        return outputs

    def _step_overlapped(self) -> list[RequestOutput]:
        """Schedule and launch step n while step n-1 still runs, then take n-1's tokens: the host's
        scheduling, input building and output work overlap the device's step instead of following it."""
        t0 = time.perf_counter()
        out = self.scheduler.schedule(self.clock())
        t1 = time.perf_counter()
        prep0, replays0 = self.runner.prepare_seconds, self._replays()
        launched = self.runner.launch(out, self.kv, self._in_flight)
        sampling = self.scheduler.advance(out, self.clock())
        t2 = time.perf_counter()
        outputs = self._land_in_flight()
        self._in_flight, self._in_flight_sampling = launched, sampling
        self.last_step = out
        if not out.is_empty():
            self._trace(t0, t1, t2, prep0, replays0, out, overlapped=True)
        return outputs

    def _land_in_flight(self) -> list[RequestOutput]:
        """Wait for the step in flight's tokens and turn them into outputs."""
        launched, sampling = self._in_flight, self._in_flight_sampling
        self._in_flight, self._in_flight_sampling = None, []
        if launched is None:
            return []
        tokens = self.runner.collect(launched)
        now = self.clock()
        return self._outputs(self.scheduler.resolve(sampling, tokens, now), {}, now)

    def _outputs(self, accepted: list[tuple[Request, int]], logprobs: dict[str, object],
                 now: float) -> list[RequestOutput]:
        outputs = []
        for req, token in accepted:
            rid = req.request_id
            self.num_generation_tokens_total += 1
            text = ""
            det = self._detok.get(rid)
            last = req.is_finished
            if det is not None:
                text, hit = det.add([token])
                if hit is not None and not last:
                    self.scheduler.finish_requests([rid], RequestStatus.FINISHED_STOPPED)
                    req.stop_reason, req.finished_time, last = hit, now, True
                elif last:
                    text += det.flush()
            lps = []
            if rid in logprobs:
                chosen, top = logprobs[rid]  # type: ignore[misc]
                lps.append(TokenLogprob(token, chosen, top))
            if last:
                self._detok.pop(rid, None)
                self._serial_ids.discard(rid)
            outputs.append(RequestOutput(
                request_id=rid, new_token_ids=[token], new_text=text, finished=last,
                finish_reason=req.status.value if last else None, stop_reason=req.stop_reason,
                new_logprobs=lps, num_prompt_tokens=req.num_prompt_tokens,
                num_output_tokens=req.num_known_output_tokens, num_cached_tokens=req.num_cached_prompt_tokens,
                arrival_time=req.arrival_time, first_scheduled_time=req.first_scheduled_time,
                first_token_time=req.first_token_time, finished_time=req.finished_time,
            ))
        return outputs

    def _trace(self, t0: float, t1: float, t2: float, prep0: float, replays0: int, out: SchedulerOutput,
               overlapped: bool = False) -> None:
        decodes = prefill = context = longest = 0
        for s in out.scheduled:
            ctx = s.num_computed_tokens + s.num_new_tokens
            context += ctx
            longest = max(longest, ctx)
            if s.num_new_tokens == 1 and s.num_computed_tokens >= s.request.num_prompt_tokens:
                decodes += 1
            else:
                prefill += s.num_new_tokens
        prep = self.runner.prepare_seconds - prep0
        graphed = self._replays() > replays0
        self.step_trace.append((t0, t1 - t0, prep, t2 - t1 - prep, time.perf_counter() - t2, len(out.scheduled),
                                decodes, prefill, context, int(graphed), int(overlapped), longest,
                                self._padded(decodes + prefill, prefill > 0) if graphed else decodes + prefill))

    def _padded(self, n: int, prefill: bool) -> int:
        """The bucket a graphed step of n tokens ran at."""
        graphs = self.runner.piecewise if prefill else self.runner.graphs
        bucket = graphs.bucket(n) if graphs is not None else None
        if bucket is None:
            return n
        return bucket if isinstance(bucket, int) else bucket.tokens

    def _replays(self) -> int:
        graphs = getattr(self.runner, "graphs", None)
        pieces = getattr(self.runner, "piecewise", None)
        return (graphs.num_replays if graphs is not None else 0) + (pieces.num_replays if pieces is not None else 0)

    def write_step_trace(self, path: str | Path) -> None:
        """The step trace as CSV: `start` is perf_counter seconds, so gaps between rows are the time
        spent outside `step()` (the serving loop's own work)."""
        import csv

        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(STEP_TRACE_FIELDS)
            w.writerows(self.step_trace)

    def stats(self) -> dict[str, float]:
        kv = self.kv
        return {
            "num_waiting": self.scheduler.num_waiting,
            "num_running": self.scheduler.num_running,
            "kv_usage": kv.usage,
            "kv_free_blocks": kv.num_free_blocks,
            "kv_total_blocks": kv.num_blocks,
            "num_preemptions": self.scheduler.num_preemptions,
            "prefix_hit_rate": kv.prefix_hits / kv.prefix_queries if kv.prefix_queries else 0.0,
            "prompt_tokens_total": self.num_prompt_tokens_total,
            "generation_tokens_total": self.num_generation_tokens_total,
        }

    def shutdown(self) -> None:
        path = os.environ.get(STEP_TRACE_ENV)
        if path:
            try:
                self.write_step_trace(path)
            except OSError as exc:
                logger.warning("could not write the step trace to %s: %s", path, exc)
        self.runner.shutdown()


def _has_tokenizer(path: Path | None) -> bool:
    return path is not None and any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA GPU is visible")
    return dev


def _resolve_backend(name: str, device: torch.device) -> str:
    from cadence.runtime.attention import BACKENDS

    if name == "auto":
        name = "vattention" if device.type == "cuda" and "vattention" in BACKENDS else "torch"
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; available here: {', '.join(BACKENDS)}")
    return name
