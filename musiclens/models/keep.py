"""Generate with some codebooks copied from given codes instead of sampled.

MusicGen samples all K codebooks of a frame, one per step under the delay
pattern. Copying some of them from a real clip and sampling the rest, given
those, answers questions sampling alone cannot: which codebook carries a
clip's beat (keep it, and the beat survives if the LM fills in the rest), or
what of a clip survives under another caption when its coarse codebook is
kept (bench/keep_revoice.py). `MusicModel.generate(keep_codes=, keep_codebooks=)` uses this; it is
the codebook-wise counterpart of an audio prompt, which keeps every codebook
of the first frames.

It is a `transformers` logits processor, so the rest of HF's sampling loop
(classifier-free guidance, top-k, temperature, the delay-pattern mask) runs
unchanged. HF applies it *before* guidance, on both halves of the CFG batch:
every token but the kept one gets the dtype's lowest finite score in both
halves, so guidance (u + g·(c − u)) leaves it lowest rather than making NaN
from −inf − (−inf), and the kept token is the only one any sampler can pick.
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import LogitsProcessor

from ..errors import MusiclensError


def parse_codebooks(spec: str | Sequence[int], n_codebooks: int) -> list[int]:
    """Codebooks from "0,2" (or a sequence of ints), sorted, each checked against the model's K.

    One place for what --keep-codebooks, the benches' --keep and `KeepCodebooks` accept, so a
    bad list fails before any audio is read or generated.
    """
    try:
        books = sorted({int(k) for k in (spec.split(",") if isinstance(spec, str) else spec)})
    except ValueError:
        raise MusiclensError(f"codebooks are numbers separated by commas, e.g. 0 or 0,1 (got {spec!r})") from None
    if not books:
        raise MusiclensError("name at least one codebook to keep")
    bad = [k for k in books if not 0 <= k < n_codebooks]
    if bad:
        raise MusiclensError(f"codebook {bad[0]} does not exist: the model has codebooks 0-{n_codebooks - 1}")
    return books


class KeepCodebooks(LogitsProcessor):
    """Force the tokens of `codebooks` to the delay-pattern ids `ids` wherever those are real codes.

    ids [B*K, F'+K] as `MusicModel.decoder_input_ids` lays them out; column t
    is the token generated at step t (column 0 is BOS). Past column F'+K-1,
    and wherever ids hold the pad (the pattern's corners), nothing is forced.
    """

    def __init__(self, ids: torch.Tensor, codebooks: Sequence[int], n_codebooks: int, pad_token_id: int):
        codebooks = parse_codebooks(codebooks, n_codebooks)
        self.ids = ids
        self.pad = int(pad_token_id)
        rows = torch.zeros(n_codebooks, dtype=torch.bool)
        rows[codebooks] = True
        self.rows = rows.repeat(ids.shape[0] // n_codebooks).to(ids.device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        t = input_ids.shape[-1]
        if t >= self.ids.shape[1]:
            return scores
        tok = self.ids[:, t].to(scores.device)
        force = self.rows.to(scores.device) & (tok != self.pad)
        if not force.any():
            return scores
        halves = scores.shape[0] // tok.shape[0]  # 2 while classifier-free guidance doubles the batch
        force, tok = force.repeat(halves), tok.repeat(halves)
        forced = torch.full_like(scores, torch.finfo(scores.dtype).min)
        forced.scatter_(1, tok.clamp(max=scores.shape[1] - 1)[:, None], 0.0)
        return torch.where(force[:, None], forced, scores)
