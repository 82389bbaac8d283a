"""Turn the last-position logits of each request into its next token, on the model's device."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cadence.core.request import Request

NEG_INF = float("-inf")


@dataclass
class SampleResult:
    token_ids: list[int]
    # per request: None, or (logprob of the chosen token, [(token id, logprob), ...] top-n)
    logprobs: list[tuple[float, list[tuple[int, float]]] | None]


class Sampler:
    """Penalties, min_tokens, temperature, top-k, top-p and min-p, then one random draw per row
    (the exponential race: argmax(p / E) with E ~ Exp(1) picks token i with probability p_i).
    A request with a seed draws from its own generator, so its text does not depend on what it
    was batched with."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._generators: dict[str, torch.Generator] = {}

    def forget(self, request_id: str) -> None:
        self._generators.pop(request_id, None)

    def _generator(self, req: Request) -> torch.Generator:
        gen = self._generators.get(req.request_id)
        if gen is None:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(int(req.sampling_params.seed) & 0xFFFF_FFFF_FFFF_FFFF)
            self._generators[req.request_id] = gen
        return gen

    @torch.no_grad()
    def __call__(self, logits: torch.Tensor, reqs: list[Request]) -> SampleResult:
        params = [r.sampling_params for r in reqs]
        raw = logits
        if any(p.needs_penalties for p in params):
            logits = logits.float().clone()
            self._apply_penalties(logits, reqs)
        chosen = self.sample_tensor(logits, reqs)  # plain greedy: one argmax, one copy to the host
        token_ids = chosen.tolist()
        logprobs: list = [None] * len(reqs)
        wanted = [i for i, p in enumerate(params) if p.logprobs is not None]
        if wanted:
            lp = torch.log_softmax(raw[wanted].float(), dim=-1)
            k = max(params[i].logprobs or 0 for i in wanted)
            top_v, top_i = lp.topk(k, dim=-1) if k > 0 else (lp[:, :0], lp[:, :0].long())
            chosen_lp = lp.gather(1, chosen[wanted].unsqueeze(1)).squeeze(1).tolist()
            top_v, top_i = top_v.tolist(), top_i.tolist()
            for row, i in enumerate(wanted):
                n = params[i].logprobs or 0
                logprobs[i] = (chosen_lp[row], list(zip(top_i[row][:n], top_v[row][:n], strict=True)))
        return SampleResult(token_ids, logprobs)

    @staticmethod
    def can_defer(req: Request) -> bool:
        """Whether this request's token can be sampled without the host knowing its earlier tokens
        and without reading anything back but the token (async scheduling)."""
        p = req.sampling_params
        return p.logprobs is None and not p.needs_penalties

    @torch.no_grad()
    def sample_tensor(self, logits: torch.Tensor, reqs: list[Request]) -> torch.Tensor:
        """The chosen token of each row as a device tensor, nothing copied back: min_tokens,
        temperature, top-k/p, min-p and the draw (penalties are applied before, by __call__)."""
        params = [r.sampling_params for r in reqs]
        blocked = [(i, self._blocked_ids(r)) for i, r in enumerate(reqs)]
        blocked = [(i, ids) for i, ids in blocked if ids]
        if all(p.greedy for p in params) and not blocked:
            return logits.argmax(dim=-1)
        logits = logits.float()
        if blocked:
            logits = logits.clone()
            for i, ids in blocked:
                logits[i, ids] = NEG_INF
        if all(p.greedy for p in params):
            return logits.argmax(dim=-1)
        greedy = torch.tensor([p.greedy for p in params], device=self.device)
        return self._sample(logits, reqs, greedy)

    @staticmethod
    def _blocked_ids(req: Request) -> list[int]:
        """EOS and stop tokens may not end a request before min_tokens."""
        p = req.sampling_params
        if req.num_output_tokens >= p.min_tokens:
            return []
        ids = list(p.stop_token_ids)
        if not p.ignore_eos:
            ids.extend(req.eos_token_ids)
        return ids

    def _apply_penalties(self, logits: torch.Tensor, reqs: list[Request]) -> None:
        vocab = logits.shape[-1]
        for i, req in enumerate(reqs):
            p = req.sampling_params
            if not p.needs_penalties:
                continue
            out = torch.tensor(req.output_token_ids, dtype=torch.long, device=self.device)
            counts = torch.bincount(out, minlength=vocab)[:vocab].float()
            if p.repetition_penalty != 1.0:  # HF semantics, over prompt and output
                seen = torch.zeros(vocab, dtype=torch.bool, device=self.device)
                seen[torch.tensor(req.prompt_token_ids, dtype=torch.long, device=self.device)] = True
                seen |= counts > 0
                row = logits[i]
                logits[i] = torch.where(seen, torch.where(row > 0, row / p.repetition_penalty,
                                                          row * p.repetition_penalty), row)
            # OpenAI semantics, over generated tokens
            logits[i] -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).float()

    def _sample(self, logits: torch.Tensor, reqs: list[Request], greedy: torch.Tensor) -> torch.Tensor:
        params = [r.sampling_params for r in reqs]
        temps = torch.tensor([p.temperature if p.temperature > 0 else 1.0 for p in params], device=self.device)
        scaled = logits / temps.unsqueeze(1)
        top_k = [p.top_k if p.top_k > 0 else 0 for p in params]
        top_p = [p.top_p for p in params]
        if any(top_k) or any(x < 1.0 for x in top_p):
            scaled = _top_k_top_p(scaled, top_k, top_p)
        probs = scaled.softmax(dim=-1)
        min_p = torch.tensor([p.min_p for p in params], device=self.device)
        if bool((min_p > 0).any()):
            probs = probs.masked_fill(probs < min_p.unsqueeze(1) * probs.amax(dim=-1, keepdim=True), 0.0)
        noise = torch.empty_like(probs)
        unseeded = [i for i, p in enumerate(params) if p.seed is None]
        if len(unseeded) == len(params):
            noise.exponential_()
        else:
            for i, req in enumerate(reqs):
                gen = None if params[i].seed is None else self._generator(req)
                noise[i].exponential_(generator=gen)
        sampled = (probs / noise.clamp_min_(1e-20)).argmax(dim=-1)
        return torch.where(greedy, logits.argmax(dim=-1), sampled)


def _top_k_top_p(logits: torch.Tensor, top_k: list[int], top_p: list[float]) -> torch.Tensor:
    sorted_logits, sorted_idx = logits.sort(dim=-1, descending=True)
    vocab = logits.shape[-1]
    mask = torch.zeros_like(sorted_logits, dtype=torch.bool)
    k = torch.tensor([x if x > 0 else vocab for x in top_k], device=logits.device)
    ranks = torch.arange(vocab, device=logits.device)
    mask |= ranks.unsqueeze(0) >= k.unsqueeze(1)
    p = torch.tensor(top_p, device=logits.device)
    probs = sorted_logits.masked_fill(mask, NEG_INF).softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass strictly above each token
    mask |= before > p.unsqueeze(1)
    sorted_logits = sorted_logits.masked_fill(mask, NEG_INF)
    return torch.empty_like(logits).scatter_(1, sorted_idx, sorted_logits)
