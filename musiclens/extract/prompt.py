"""Prompt-side capture: one residual vector per prompt and layer, for DiffMean.

DiffMean (arXiv 2504.04479) needs, for each text prompt, a single vector per
layer that says how the prompt moved the residual stream. Where that vector
is read from depends on how the model sees text:

* **MusicGen-Melody** (`kind == "melody"`) prepends its conditioning to the
  decoder sequence as `[chroma frames ; text tokens ; audio frames]`, so the
  text really is in the residual stream. We take the output of layer `l` at
  the **last non-pad text token** (T5's `</s>`, MiniLM's `[SEP]`): with causal
  attention it is the one prefix position that has read the whole prompt, and
  it does not depend on any audio token. One teacher-forced forward over the
  prefix plus the BOS frame suffices (the BOS frame is there only because the
  HF decoder needs at least one audio position); padding is on the right, so
  a padded batch gives bit-identical vectors to one-by-one capture.

* **Cross-attention MusicGen** (`kind == "musicgen"`, incl. the organism)
  never writes the text into the residual stream; it only reads it through
  cross-attention at every audio position. The prompt's footprint is
  therefore the **mean over the conditional CFG branch's audio positions**:
  - `rule="generate"` (default): generate `seconds` of audio for the prompt
    with classifier-free guidance (fixed `seed`, so both prompt sets share
    the same sampling noise), record `layer.<l>` on the conditional half of
    the batch at every decoder call of the generation (one new position per
    call, from the BOS position on, delay-pattern steps included: about
    F + K positions for F frames and K codebooks) and average. These are
    the very states that steering later adds to, reached through the model's
    own (prompt-dependent) audio, so Δ includes what the prompt does to the
    music, not only its direct cross-attention term.
  - `rule="teacher"`: teacher-force one shared audio context (the model's own
    unconditional generation of `seconds`, same `seed`) under every prompt
    and average the layer output over all its decoder positions (BOS + delay
    pattern, as generation sees them). The context is identical for both
    sets, so Δ isolates the direct text effect; one forward pass per batch.
    The unconditional branch is never used: it sees no text.

Both are batched (`batch_size` prompts per pass) and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm

from ..errors import MusiclensError

RULES = ("auto", "eos", "generate", "teacher")


@dataclass
class PromptCapture:
    """Per-layer prompt vectors: `acts[l]` is a float32 tensor [n_prompts, d_model]."""

    acts: dict[int, torch.Tensor]
    rule: str
    detail: dict

    def describe(self) -> dict:
        return {"rule": self.rule, **self.detail}


def resolve_rule(model, rule: str) -> str:
    """`auto` -> `eos` for MusicGen-Melody, `generate` for cross-attention MusicGen."""
    if rule not in RULES:
        raise MusiclensError(f"unknown capture rule {rule!r} (choose {', '.join(RULES)})")
    if rule == "auto":
        return "eos" if model.kind == "melody" else "generate"
    if rule == "eos" and model.kind != "melody":
        raise MusiclensError("capture rule 'eos' needs MusicGen-Melody (text prepended to the decoder); "
                             "cross-attention MusicGen never puts the text in its residual stream: use generate or teacher")
    # generate/teacher on a melody model are allowed: its audio positions also carry the prompt's influence
    return rule


def _check_layers(model, layers: Sequence[int] | None) -> list[int]:
    if layers is None:
        return list(range(model.n_layers))
    layers = sorted(set(int(l) for l in layers))
    bad = [l for l in layers if l < 0 or l >= model.n_layers]
    if bad:
        raise MusiclensError(f"layer(s) {bad} out of range: the model has layers 0..{model.n_layers - 1}")
    return layers


def _batches(items: Sequence[str], size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _start_ids(model, batch: int, frames: int = 1) -> torch.Tensor:
    start = model.hf.generation_config.decoder_start_token_id
    if start is None:
        start = model.pad_token_id
    return torch.full((batch * model.n_codebooks, frames), int(start), dtype=torch.long, device=model.device)


def _eos_batch(model, prompts: list[str], layers: list[int]) -> dict[int, torch.Tensor]:
    from .. import hooks

    text = model.text_inputs(prompts)
    mask = text["attention_mask"]
    sites = [f"layer.{l}" for l in layers]
    with hooks.capture(model, sites, branch="both") as cap:
        model.hf(input_ids=text["input_ids"], attention_mask=mask,
                 decoder_input_ids=_start_ids(model, len(prompts)), use_cache=False)
    n_text = mask.shape[1]
    # last position holding a real token (right padding; robust to left padding too)
    idx = torch.arange(n_text, device=mask.device)
    last = (mask.to(torch.long) * (idx + 1)).argmax(dim=1)
    out = {}
    for l, site in zip(layers, sites):
        h = cap.records[site][0]                      # [B, prefix + 1, d]
        prefix = h.shape[1] - 1                       # chroma + text positions
        text_start = prefix - n_text
        if text_start < 0:
            raise MusiclensError("unexpected decoder sequence layout for MusicGen-Melody prompt capture")
        rows = h[torch.arange(len(prompts), device=h.device), text_start + last]
        out[l] = rows.float().cpu()
    return out


def _generate_batch(model, prompts: list[str], layers: list[int], seconds: float, seed: int,
                    guidance_scale: float) -> dict[int, torch.Tensor]:
    from .. import hooks

    sites = [f"layer.{l}" for l in layers]
    with hooks.capture(model, sites, branch="cond") as cap:
        model.generate(prompts, seconds=seconds, seed=seed, guidance_scale=guidance_scale)
    out = {}
    for l, site in zip(layers, sites):
        recs = cap.records[site]
        if not recs:
            raise MusiclensError("prompt capture recorded nothing during generation")
        h = torch.cat([r[:, -1:] for r in recs], dim=1)   # one new audio position per step
        out[l] = h.float().mean(dim=1).cpu()
    return out


def _teacher_context(model, seconds: float, seed: int) -> torch.Tensor:
    res = model.generate([""], seconds=seconds, seed=seed, guidance_scale=1.0)
    return model.decoder_input_ids(res.codes[:1])     # [K, F + K]


def _teacher_batch(model, prompts: list[str], layers: list[int], ctx_ids: torch.Tensor) -> dict[int, torch.Tensor]:
    ids = ctx_ids.repeat(len(prompts), 1)              # [B*K, T]
    res = model.residuals(ids, [f"layer.{l}" for l in layers], captions=prompts)
    out = {}
    for l in layers:
        h = res[f"layer.{l}"]                          # [B, T(+prefix), d]
        t = ctx_ids.shape[1]
        out[l] = h[:, -t:].float().mean(dim=1).cpu()
    return out


def capture_prompts(model, prompts: Sequence[str], layers: Sequence[int] | None = None, rule: str = "auto",
                    batch_size: int = 8, seconds: float = 1.0, seed: int = 0, guidance_scale: float = 3.0,
                    progress: bool = True) -> PromptCapture:
    """One vector per prompt and layer (see the module docstring for the rule used)."""
    prompts = list(prompts)
    if not prompts:
        raise MusiclensError("no prompts to capture")
    if batch_size < 1:
        raise MusiclensError("batch size must be >= 1")
    layers = _check_layers(model, layers)
    rule = resolve_rule(model, rule)
    if rule in ("generate", "teacher") and not seconds > 0:
        raise MusiclensError(f"capture seconds must be > 0, got {seconds}")
    detail: dict = {"layers": layers}
    ctx = None
    if rule == "teacher":
        ctx = _teacher_context(model, seconds, seed)
        detail.update(seconds=seconds, seed=seed, positions=int(ctx.shape[1]))
    elif rule == "generate":
        detail.update(seconds=seconds, seed=seed, guidance_scale=guidance_scale, branch="cond")
    else:
        detail.update(position="last non-pad text token")
    chunks: dict[int, list[torch.Tensor]] = {l: [] for l in layers}
    bar = tqdm(total=len(prompts), desc=f"capture ({rule})", unit="prompt", disable=None if progress else True)
    with torch.no_grad():
        for batch in _batches(prompts, batch_size):
            if rule == "eos":
                got = _eos_batch(model, batch, layers)
            elif rule == "generate":
                got = _generate_batch(model, batch, layers, seconds, seed, guidance_scale)
            else:
                got = _teacher_batch(model, batch, layers, ctx)
            for l in layers:
                chunks[l].append(got[l])
            bar.update(len(batch))
    bar.close()
    acts = {l: torch.cat(chunks[l], dim=0) for l in layers}
    for l, a in acts.items():
        if not torch.isfinite(a).all():
            raise MusiclensError(f"non-finite activations captured at layer {l}")
    return PromptCapture(acts=acts, rule=rule, detail=detail)
