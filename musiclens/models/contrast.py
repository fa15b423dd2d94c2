"""Context contrast: sample with what the long context adds to each prediction amplified.

An autoregressive music model predicts each token from the whole past. Much
of that prediction already follows from the last few frames (the note that
is sounding goes on sounding); what only the longer past can tell is the
structure: where the beat falls, which bar repeats. Context-aware decoding
(Shi et al. 2023, "Trusting Your Evidence") contrasts the two: at every step

    score' = score + weight · (score − score_local)

where `score_local` is the same model's prediction from BOS plus only the
last `window` steps, each at its true position. With a window shorter than
a beat period, the difference is what the model knows from further back, so
a positive weight asks the sampler to lean on it.

Why musiclens has it: the organism's LM prefers an in-phase continuation of
a beat to an off-grid one only weakly (the splice test, docs/organism.md).
If that preference is real but too weak to survive sampling, amplifying the
long context should bring the beat out; if it does not, the LM must learn
more rhythm, which decoding cannot supply. It is a `transformers` logits
processor, applied before classifier-free guidance on both halves of the
CFG batch, so guidance then combines two contrasted predictions.

The local prediction costs one extra forward over window + 1 steps per
generated step, without a cache.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from transformers import LogitsProcessor

from ..errors import MusiclensError


@contextlib.contextmanager
def positions_at(decoder: torch.nn.Module, positions: torch.Tensor) -> Iterator[None]:
    """Make a MusicGen decoder (`*ForCausalLM`) embed its inputs at `positions` instead of 0, 1, 2, ...

    HF's MusicGen decoder numbers its inputs from the cache length; a window
    cut out of a longer sequence must keep the positions it had there.
    """
    emb = decoder.model.decoder.embed_positions
    original = emb.forward

    def at_positions(input_ids, cache_length=0):
        need = int(positions.max()) + 1
        if need > emb.weights.size(0):
            emb.make_weights(need, emb.embedding_dim)
        return emb.weights.index_select(0, positions.to(emb.weights.device)).detach()

    emb.forward = at_positions
    try:
        yield
    finally:
        emb.forward = original


def check_contrast(window: int, weight: float) -> None:
    """One-line errors for a bad window or weight, before any audio is generated."""
    if not window >= 1:
        raise MusiclensError(f"the context-contrast window must be at least 1 step (got {window})")
    if not weight >= 0:  # (NaN too)
        raise MusiclensError(f"the context-contrast weight must be a number >= 0 (got {weight:g})")


class ContextContrast(LogitsProcessor):
    """score + weight · (score − score from BOS + the last `window` steps); a context manager.

    Entering it mounts a forward pre-hook on `hf.decoder` that records the
    decoder's inputs (the delay-pattern ids of both CFG halves) and the text
    conditioning, so the processor can rebuild the window; leaving it always
    removes the hook. While the whole past still fits in the window, scores
    pass unchanged. `local_pass` (a context-manager factory) wraps the window
    forward: `MusicModel` passes one that tells its step counter and captures
    to skip it. Steering hooks act on it like on any forward, so a steered
    model is contrasted with its own steered local prediction.
    """

    def __init__(self, hf, window: int, weight: float, local_pass=None):
        check_contrast(window, weight)
        from transformers import MusicgenForCausalLM

        if not isinstance(hf.decoder, MusicgenForCausalLM):  # melody prepends its conditioning to the sequence
            raise MusiclensError("context contrast needs a MusicGen decoder with sinusoidal positions "
                                 "(MusicGen-melody is not supported)")
        self.decoder = hf.decoder
        self.window = int(window)
        self.weight = float(weight)
        self.history: torch.Tensor | None = None
        self.conditioning: dict = {}
        self._inside = False
        self._handle = None
        self._local_pass = local_pass or contextlib.nullcontext

    def __enter__(self) -> "ContextContrast":
        self.history = None
        self._handle = self.decoder.register_forward_pre_hook(self._record, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _record(self, module, args, kwargs) -> None:
        if self._inside:  # our own window forward
            return
        # the decoder sees only its new columns after the cache's: keep that many recorded, append the new
        # ones (a prefill, HF's repeated one included, starts from an empty cache and so starts over)
        cache = kwargs.get("cache")
        past = cache.get_seq_length() if cache is not None else 0
        if past == 0:
            self.conditioning = {k: kwargs.get(k) for k in ("encoder_hidden_states", "encoder_attention_mask")}
        ids = kwargs["input_ids"]
        self.history = ids if past == 0 else torch.cat([self.history[:, :past], ids], dim=1)

    @torch.no_grad()
    def local_scores(self) -> torch.Tensor:
        """The next-token logits from BOS + the last `window` recorded steps, [rows, vocab]."""
        t = self.history.shape[1]
        cols = torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(t - self.window, t)])
        self._inside = True
        try:
            with positions_at(self.decoder, cols), self._local_pass():
                out = self.decoder(input_ids=self.history[:, cols.to(self.history.device)], use_cache=False,
                                   **self.conditioning)
        finally:
            self._inside = False
        return out.logits[:, -1]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.history is None:
            raise MusiclensError("ContextContrast must be entered (with ...) before generation")
        if self.weight == 0 or self.history.shape[1] <= self.window + 1:
            return scores
        local = self.local_scores().reshape(scores.shape).to(scores.dtype)
        return scores + self.weight * (scores - local)
