"""AsyncEngine on a tiny random Llama (with the built-in model's tokenizer): fan-out, errors,
back-pressure, abort on early exit, an idle loop that sleeps, and shutdown."""

from __future__ import annotations

import asyncio
import time

import pytest

from cadence.core.sampling_params import SamplingParams
from cadence.engine.async_engine import AsyncEngine, EngineDeadError, QueueFullError
from cadence.engine.llm import engine_config_from_kwargs
from cadence.engine.llm_engine import LLMEngine
from cadence.models.default_model import default_model_path
from tiny_models import make_checkpoint

PROMPT = [5, 17, 42, 99, 3]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    make_checkpoint("llama", folder)
    config = engine_config_from_kwargs(str(folder), tokenizer=str(default_model_path()), device="cpu",
                                       num_blocks=64, max_model_len=128)
    eng = AsyncEngine(LLMEngine(config), max_queue=8)
    eng.start()
    yield eng
    eng.stop()


async def _collect(eng: AsyncEngine, rid: str, params: SamplingParams) -> dict[int, list[int]]:
    tokens: dict[int, list[int]] = {}
    async for index, out in eng.generate(rid, PROMPT, params):
        tokens.setdefault(index, []).extend(out.new_token_ids)
    return tokens


def _wait_free(eng: AsyncEngine, timeout: float = 5.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = eng.stats()
        if s["kv_free_blocks"] == s["kv_total_blocks"] and s["num_running"] == 0 and s["num_waiting"] == 0:
            return s
        time.sleep(0.01)
    return eng.stats()


def test_generate_and_fan_out_with_distinct_seeds(engine) -> None:
    async def main() -> tuple:
        one = _collect(engine, "a", SamplingParams(max_tokens=6, temperature=0))
        many = _collect(engine, "b", SamplingParams(max_tokens=6, temperature=1.0, seed=3, n=3))
        again = _collect(engine, "c", SamplingParams(max_tokens=6, temperature=1.0, seed=3, n=3))
        return await asyncio.gather(one, many, again)

    one, many, again = asyncio.run(main())
    assert list(one) == [0] and len(one[0]) == 6
    assert sorted(many) == [0, 1, 2] and all(len(t) == 6 for t in many.values())
    assert many == again  # seeded: reproducible
    assert len({tuple(t) for t in many.values()}) > 1  # seed + j per sequence: they differ
    assert _wait_free(engine)["kv_free_blocks"] == 64


def test_bad_input_raises_and_leaves_nothing_behind(engine) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="context"):
            await engine.add("long", list(range(200)), SamplingParams(max_tokens=4))
        with pytest.raises(ValueError, match="token ids"):
            await engine.add("neg", [1, -2], SamplingParams(max_tokens=4, n=2))
        with pytest.raises(QueueFullError):
            await engine.add("wide", PROMPT, SamplingParams(max_tokens=4, n=9))  # 9 > max_queue 8

    asyncio.run(main())
    s = _wait_free(engine)
    assert s["num_waiting"] == 0 and s["kv_free_blocks"] == 64


def test_leaving_early_aborts_and_the_idle_loop_sleeps(engine) -> None:
    async def main() -> int:
        got = 0
        gen = engine.generate("early", PROMPT, SamplingParams(max_tokens=100, ignore_eos=True))
        async for _ in gen:
            got += 1
            if got == 3:
                break
        await gen.aclose()
        return got

    before = engine.stats()["generation_tokens_total"]
    assert asyncio.run(main()) == 3
    s = _wait_free(engine)
    assert s["kv_free_blocks"] == 64
    assert s["generation_tokens_total"] - before < 10  # aborted, not run to 100
    steps = engine.stats()["num_steps"]
    time.sleep(0.3)
    assert engine.stats()["num_steps"] == steps  # no steps while idle


def test_stop_ends_streams_in_flight(tmp_path) -> None:
    folder = tmp_path / "tiny"
    make_checkpoint("llama", folder)
    eng = AsyncEngine(LLMEngine(engine_config_from_kwargs(str(folder), tokenizer=str(default_model_path()),
                                                          device="cpu", num_blocks=64, max_model_len=128)))
    eng.start()

    async def main() -> None:
        stream = await eng.add("x", PROMPT, SamplingParams(max_tokens=120, ignore_eos=True))
        await stream.__anext__()
        await asyncio.to_thread(eng.stop)
        with pytest.raises(EngineDeadError):
            async for _ in stream:
                pass
        with pytest.raises(EngineDeadError):
            await eng.add("y", PROMPT, SamplingParams(max_tokens=2))

    asyncio.run(main())
