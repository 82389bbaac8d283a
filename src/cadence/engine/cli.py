"""`cadence generate`: generate offline and stream the text to the terminal."""

from __future__ import annotations

import argparse
import logging
import sys

from cadence.config_args import add_dataclass_args, dataclass_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cadence.core.config import CacheConfig, SchedulerConfig
    from cadence.engine.config import ModelLoadConfig, ParallelConfig

    parser.add_argument("--prompt", action="append", required=True,
                        help="a prompt (repeat the flag for several, run as one batch)")
    parser.add_argument("--chat", action=argparse.BooleanOptionalAction, default=True,
                        help="wrap each prompt as a user message in the model's chat template")
    g = parser.add_argument_group("sampling")
    g.add_argument("--max-tokens", type=int, default=128, help="tokens to generate at most (default: 128)")
    g.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default: 0)")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: 1)")
    g.add_argument("--top-k", type=int, default=0, help="keep the k likeliest tokens; 0 is off (default: 0)")
    g.add_argument("--min-p", type=float, default=0.0, help="drop tokens below min_p x the top probability")
    g.add_argument("--sampling-seed", type=int, default=None, help="per-request sampling seed")
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    g.add_argument("--ignore-eos", action="store_true", help="keep generating past end-of-sequence")
    add_dataclass_args(parser, ModelLoadConfig)
    add_dataclass_args(parser, SchedulerConfig)
    add_dataclass_args(parser, CacheConfig)
    add_dataclass_args(parser, ParallelConfig)


def run(args: argparse.Namespace) -> int:
    from cadence.core.config import CacheConfig, SchedulerConfig
    from cadence.core.sampling_params import SamplingParams
    from cadence.engine.config import EngineConfig, ModelLoadConfig, ParallelConfig
    from cadence.engine.llm_engine import LLMEngine

    # Progress to stderr (the first run converts the built-in model, ~20 s); the text goes to stdout.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    try:
        params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                                top_k=args.top_k, min_p=args.min_p, seed=args.sampling_seed,
                                stop=tuple(args.stop), ignore_eos=args.ignore_eos)
        config = EngineConfig(load=dataclass_from_args(ModelLoadConfig, args),
                              scheduler=dataclass_from_args(SchedulerConfig, args),
                              cache=dataclass_from_args(CacheConfig, args),
                              parallel=dataclass_from_args(ParallelConfig, args))
        engine = LLMEngine(config)
        prompts = []
        for text in args.prompt:
            if args.chat and engine.tokenizer is not None and engine.tokenizer.hf.chat_template:
                prompts.append(engine.tokenizer.apply_chat_template([{"role": "user", "content": text}]))
            else:
                prompts.append(text)
        for i, prompt in enumerate(prompts):
            engine.add_request(str(i), prompt, params)
    except (ValueError, FileNotFoundError) as exc:
        print(f"cadence generate: {exc}", file=sys.stderr)
        return 2
    stream = len(prompts) == 1
    texts = [""] * len(prompts)
    try:
        while engine.has_unfinished():
            for out in engine.step():
                i = int(out.request_id)
                texts[i] += out.new_text
                if stream:
                    sys.stdout.write(out.new_text)
                    sys.stdout.flush()
                elif out.finished:
                    print(f"--- [{i}] {args.prompt[i]!r}\n{texts[i]}")
    finally:
        engine.shutdown()  # tensor-parallel workers exit with it
    if stream:
        sys.stdout.write("\n")
    return 0
