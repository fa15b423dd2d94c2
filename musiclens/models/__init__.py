"""Loading MusicGen-family models behind one small wrapper, `MusicModel`.

Everything downstream (extraction, SAEs, steering) needs the same handful of
facts and operations regardless of which checkpoint is loaded: how many
layers, how wide, which codec rate, how to turn audio into the exact decoder
input ids that generation would see, how to run a teacher-forced pass, how to
generate while hooks know which half of the CFG batch is which. `MusicModel`
provides exactly those and exposes the untouched HF model as `.hf`.

Names accepted by `load_model`:
  "organism"            the shipped model trained on the musiclens corpus (offline default)
  "tiny-random"         cross-attention MusicGen, random weights (tests)
  "tiny-random-melody"  MusicGen-Melody, random weights (tests)
  a local folder        any HF MusicGen / MusicGen-Melody checkpoint folder
  a hub id              e.g. facebook/musicgen-small (needs the hub or a local cache)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ..errors import MusiclensError
from .tiny import TINY_NAMES

__all__ = ["MusicModel", "GenerationResult", "load_model", "DEPTH_NAMES"]

DEPTH_NAMES = ("early", "25%", "50%", "75%", "late")


@dataclass
class GenerationResult:
    """Audio and the codes it was decoded from (codes are what the LM produced)."""

    audio: torch.Tensor  # [B, T] float32 at sample_rate
    codes: torch.Tensor  # [B, K, F] int64
    sample_rate: int
    prompts: list[str] = field(default_factory=list)


@dataclass
class HookState:
    """What hooks need to know about the forward pass in flight.

    `cfg_batch` is B while `generate` runs with classifier-free guidance (the
    batch is then [conditional B ; unconditional B]) and None otherwise.
    `step` counts decoder forward calls during generation (0 = the first one,
    which sees BOS, plus the conditioning prefix for MusicGen-Melody).
    `prefix_len` is the number of prepended conditioning positions in the
    decoder sequence (MusicGen-Melody only; 0 otherwise).
    `local_pass` is True during context contrast's extra forward over a
    window (`models.contrast`): it is not a step, and captures skip it.
    """

    generating: bool = False
    cfg_batch: int | None = None
    step: int = 0
    prefix_len: int = 0
    local_pass: bool = False


class _StopForward(Exception):
    """Raised by a hook to end a capture-only forward pass early."""


def check_sampling(seconds: float, temperature: float, top_k: int, guidance_scale: float | None = None) -> None:
    """One-line errors for generation settings that transformers would reject with a traceback
    (temperature <= 0) or silently turn into something else (seconds <= 0 -> one frame), for
    library callers; commands reject the same values earlier, through their options' bounds."""
    if not (math.isfinite(seconds) and seconds > 0):
        raise MusiclensError(f"--seconds must be a positive number, got {seconds:g}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise MusiclensError(f"--temperature must be a positive number, got {temperature:g}")
    if int(top_k) != top_k or top_k < 0:
        raise MusiclensError(f"--top-k must be a whole number >= 0 (0 keeps every token), got {top_k}")
    if guidance_scale is not None and not math.isfinite(guidance_scale):  # NaN would silently turn CFG off
        raise MusiclensError(f"--guidance-scale must be a finite number (1 or less: no guidance), got {guidance_scale}")


class MusicModel:
    """A MusicGen or MusicGen-Melody model plus the facts and operations musiclens needs."""

    def __init__(self, hf, tokenizer, name: str, weights_hash: str | None = None):
        from transformers import MusicgenMelodyForConditionalGeneration

        self.hf = hf
        self.tokenizer = tokenizer
        self.name = name
        self.kind = "melody" if isinstance(hf, MusicgenMelodyForConditionalGeneration) else "musicgen"
        dec = hf.config.decoder
        self.n_layers: int = dec.num_hidden_layers
        self.d_model: int = dec.hidden_size
        self.n_codebooks: int = dec.num_codebooks
        self.codebook_size: int = dec.vocab_size
        self.pad_token_id: int = dec.pad_token_id
        codec_cfg = hf.config.audio_encoder
        self.sample_rate: int = int(codec_cfg.sampling_rate)
        self.frame_rate: float = float(getattr(hf.audio_encoder.config, "frame_rate", 50))
        self.weights_hash = weights_hash or _state_hash(hf)
        self.state = HookState()

    # ------------------------------------------------------------------ facts
    @property
    def layers(self) -> list[torch.nn.Module]:
        """The decoder layers (sites `layer.<i>` are their outputs)."""
        return list(self.hf.decoder.model.decoder.layers)

    @property
    def device(self) -> torch.device:
        return next(self.hf.decoder.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.decoder.parameters()).dtype

    def info(self) -> dict:
        return {"name": self.name, "kind": self.kind, "n_layers": self.n_layers, "d_model": self.d_model,
                "n_codebooks": self.n_codebooks, "codebook_size": self.codebook_size,
                "sample_rate": self.sample_rate, "frame_rate": self.frame_rate,
                "weights_hash": self.weights_hash,
                "parameters": sum(p.numel() for p in self.hf.parameters())}

    def parse_layers(self, spec: str | Sequence[int | str]) -> list[int]:
        """Parse "2,6" or depth names "early,25%,50%,75%,late" into sorted unique layer indices.

        early = 2, p% = round(p/100 * n_layers), late = n_layers - 2 (second-to-last),
        as in the MusicGen SAE paper; "all" = every layer. Clamped into range for tiny models.
        """
        items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s) for s in spec]
        n = self.n_layers
        out: list[int] = []
        for it in items:
            if it == "":
                continue
            if it == "all":
                out.extend(range(n))
            elif it == "early":
                out.append(min(2, n - 1))
            elif it == "late":
                out.append(max(n - 2, 0))
            elif it.endswith("%"):
                try:
                    p = float(it[:-1])
                except ValueError:
                    raise MusiclensError(f"bad layer spec {it!r}: expected an integer, a percentage or one of {DEPTH_NAMES}")
                if not 0 <= p <= 100:
                    raise MusiclensError(f"layer percentage out of range: {it}")
                out.append(min(int(p / 100 * n + 0.5), n - 1))
            else:
                try:
                    i = int(it)
                except ValueError:
                    raise MusiclensError(f"bad layer spec {it!r}: expected an integer, a percentage or one of {DEPTH_NAMES}")
                if not 0 <= i < n:
                    raise MusiclensError(f"layer {i} out of range: {self.name} has layers 0..{n - 1}")
                out.append(i)
        if not out:
            raise MusiclensError("no layers given")
        return sorted(set(out))

    # ------------------------------------------------------------------ codec
    @torch.no_grad()
    def encode_audio(self, wav: torch.Tensor) -> torch.Tensor:
        """Audio [B, T] (mono, at `sample_rate`) -> codes [B, K, F]."""
        if wav.dim() == 1:
            wav = wav[None]
        codec = self.hf.audio_encoder
        x = wav.to(self.device, dtype=next(codec.parameters()).dtype)[:, None, :]
        bw = codec.config.target_bandwidths[-1]
        out = codec.encode(x, bandwidth=bw)
        codes = out.audio_codes  # [chunks=1, B, K, F]
        return codes[0, :, : self.n_codebooks].long()

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, F] -> audio [B, T] float32."""
        codec = self.hf.audio_encoder
        audio = codec.decode(codes[None].to(self.device), [None] * codes.shape[0]).audio_values
        return audio[:, 0].float()

    # ------------------------------------------------------------------ ids
    def decoder_input_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, F] -> decoder input ids [B*K, F+K] exactly as `generate` builds them.

        Position 0 is BOS for every codebook; codebook k is delayed by k steps
        and padded with the pad id (= BOS id) at both ends (HF's
        `build_delay_pattern_mask`). The hidden state at position t predicts
        position t+1, so frame f's first codebook token enters the model at
        position f+1: see `frame_positions`.
        """
        B, K, F = codes.shape
        if K != self.n_codebooks:
            raise MusiclensError(f"codes have {K} codebooks, model expects {self.n_codebooks}")
        bos = torch.full((B, K, 1), self.pad_token_id, dtype=torch.long, device=codes.device)
        ids = torch.cat([bos, codes.long()], dim=-1).reshape(B * K, F + 1)
        _, pattern = self.hf.decoder.build_delay_pattern_mask(ids, pad_token_id=self.pad_token_id, max_length=F + K)
        return pattern

    @staticmethod
    def frame_positions(n_frames: int) -> torch.Tensor:
        """Sequence positions used as the activation of each audio frame (f -> f+1)."""
        return torch.arange(n_frames) + 1

    def codes_from_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Inverse of `decoder_input_ids`: [B*K, F+K] -> codes [B, K, F]."""
        K = self.n_codebooks
        BK, L = ids.shape
        F = L - K
        ids = ids.reshape(BK // K, K, L)
        return torch.stack([ids[:, k, k + 1 : k + 1 + F] for k in range(K)], dim=1)

    # ------------------------------------------------------------------ text
    def text_inputs(self, captions: Sequence[str]) -> dict:
        """Tokenise captions for the text encoder (token_type_ids dropped: MusicGen rejects them)."""
        enc = self.tokenizer(list(captions), padding=True, return_tensors="pt")
        out = {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}
        return out

    @torch.no_grad()
    def _conditioning(self, captions: Sequence[str] | None, batch: int) -> dict:
        """Encoder outputs + mask for a teacher-forced pass.

        `None` or "" captions give the *null* condition used for the
        unconditional CFG branch by `generate`: zero text states, zero mask.
        """
        caps = [""] * batch if captions is None else [c or "" for c in captions]
        if len(caps) != batch:
            raise MusiclensError(f"{len(caps)} captions for a batch of {batch}")
        inputs = self.text_inputs(caps)
        states = self.hf.text_encoder(**inputs).last_hidden_state
        mask = inputs["attention_mask"].clone()
        null = torch.tensor([c == "" for c in caps], device=states.device)
        if null.any():
            states = states.masked_fill(null[:, None, None], 0.0)
            mask = mask.masked_fill(null[:, None], 0)
        if self.kind == "melody":
            # MusicGen-Melody's forward ignores `encoder_outputs`: it takes projected, masked states,
            # and prepends the (null) chroma itself, exactly as its generate() does.
            if self.hf.text_encoder.config.hidden_size != self.hf.decoder.config.hidden_size:
                states = self.hf.enc_to_dec_proj(states)
            states = states * mask[..., None].to(states.dtype)
            return {"encoder_hidden_states": torch.cat([self._null_chroma(batch, states), states], dim=1)}
        return {"encoder_outputs": (states,), "attention_mask": mask}

    def _null_chroma(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        """The 'no melody' chroma prefix generate() uses: one-hot on bin 0, projected, tiled."""
        cfg = self.hf.config
        chroma = torch.zeros(batch, 1, cfg.num_chroma, device=like.device, dtype=like.dtype)
        chroma[:, :, 0] = 1
        if cfg.num_chroma != self.hf.decoder.config.hidden_size:
            chroma = self.hf.audio_enc_to_dec_proj(chroma)
        return chroma.repeat(1, cfg.chroma_length, 1)

    def _prefix_len(self, cond: dict) -> int:
        if self.kind != "melody":
            return 0
        return cond["encoder_hidden_states"].shape[1]

    # ------------------------------------------------------------------ forward passes
    @torch.no_grad()
    def forward_codes(self, ids: torch.Tensor, captions: Sequence[str] | None = None) -> torch.Tensor:
        """Teacher-forced logits [B, K, T, V] for decoder ids [B*K, T] (prefix positions removed)."""
        K = self.n_codebooks
        B = ids.shape[0] // K
        cond = self._conditioning(captions, B)
        self.state.prefix_len = self._prefix_len(cond)
        try:
            out = self.hf(decoder_input_ids=ids.to(self.device), **cond, use_cache=False)
        finally:
            self.state.prefix_len = 0
        logits = out.logits  # [B*K, T(+prefix), V]
        T = ids.shape[-1]
        logits = logits[:, -T:]
        return logits.reshape(B, K, T, -1)

    @torch.no_grad()
    def residuals(self, ids: torch.Tensor, sites: Sequence[str], captions: Sequence[str] | None = None,
                  dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Capture-only teacher-forced pass: {site: [B, T, d]} for decoder ids [B*K, T].

        The forward stops right after the deepest requested layer (nothing
        after it, not even the LM heads, is computed). Prefix positions of
        MusicGen-Melody are removed, so position t is always the t-th decoder id.
        """
        from ..hooks import capture, site_layer

        K = self.n_codebooks
        B = ids.shape[0] // K
        T = ids.shape[-1]
        cond = self._conditioning(captions, B)
        self.state.prefix_len = self._prefix_len(cond)
        deepest = max(site_layer(s) for s in sites)
        try:
            with capture(self, sites, dtype=dtype) as cap, _stop_after(self.layers[deepest]):
                try:
                    self.hf(decoder_input_ids=ids.to(self.device), **cond, use_cache=False)
                except _StopForward:
                    pass
        finally:
            self.state.prefix_len = 0
        return {s: cap.records[s][0][:, -T:] for s in sites}

    # ------------------------------------------------------------------ generation
    def frames_for(self, seconds: float) -> int:
        return max(1, int(round(seconds * self.frame_rate)))

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seconds: float = 5.0, seed: int = 0, guidance_scale: float = 3.0,
                 temperature: float = 1.0, top_k: int = 250, do_sample: bool = True,
                 n_frames: int | None = None, audio_prompt=None, keep_codes: torch.Tensor | None = None,
                 keep_codebooks: Sequence[int] = (), contrast_weight: float = 0.0,
                 contrast_window: int = 8) -> GenerationResult:
        """Generate audio for `prompts` in one batch and keep the codes.

        Reproducible: same prompts, batch, seed and settings give the same
        audio (torch's global RNG is seeded). While this runs, hooks can see
        the CFG batch split and the step counter through `self.state`.

        `audio_prompt` (mono audio at `sample_rate`, [T] for every prompt or
        [B, T] one per prompt) is encoded by the codec and the model
        continues it, as MusicGen's continuation mode does: the returned clip
        (`seconds` long) starts with the prompt's codes, kept exactly.

        `keep_codes` [B, K, F'] with `keep_codebooks` (e.g. [0]): those
        codebooks are copied from `keep_codes` for its first F' frames instead
        of sampled, and the others are sampled given them (`models.keep`);
        the returned codes hold them exactly.

        `contrast_weight` > 0 samples with context contrast (`models.contrast`):
        each prediction plus that weight times its difference from the
        prediction given only BOS and the last `contrast_window` steps.
        """
        prompts = list(prompts)
        if not prompts:
            raise MusiclensError("no prompts given")
        check_sampling(seconds if n_frames is None else 1.0, temperature if do_sample else 1.0, top_k, guidance_scale)
        F = n_frames or self.frames_for(seconds)
        B = len(prompts)
        K = self.n_codebooks
        extra: dict = {}
        processors: list = []
        if audio_prompt is not None:
            wav = (audio_prompt.detach().float().cpu() if torch.is_tensor(audio_prompt)
                   else torch.as_tensor(np.asarray(audio_prompt, dtype=np.float32)))
            wav = wav[None].expand(B, -1) if wav.dim() == 1 else wav
            if wav.dim() != 2 or wav.shape[0] != B or wav.shape[1] == 0:
                raise MusiclensError(f"audio prompt: expected [T] or [{B}, T] mono samples, got {tuple(wav.shape)}")
            prompt_codes = self.encode_audio(wav)
            if prompt_codes.shape[-1] >= F:
                raise MusiclensError(f"the audio prompt ({prompt_codes.shape[-1] / self.frame_rate:.2f} s) must be "
                                     f"shorter than the clip ({F / self.frame_rate:.2f} s)")
            extra["decoder_input_ids"] = prompt_codes.reshape(B * K, -1)
            F -= prompt_codes.shape[-1]
        contrast = contextlib.nullcontext()
        if contrast_weight:
            from .contrast import ContextContrast

            contrast = ContextContrast(self.hf, contrast_window, contrast_weight, local_pass=self._local_pass)
            processors.append(contrast)  # before any kept token is forced, so nothing overrides the force
        if keep_codes is not None:
            from .keep import KeepCodebooks

            keep_codes = torch.as_tensor(keep_codes)
            if keep_codes.dim() != 3 or keep_codes.shape[0] != B:
                raise MusiclensError(f"keep_codes: expected [{B}, {K}, frames], got {tuple(keep_codes.shape)}")
            keep = KeepCodebooks(self.decoder_input_ids(keep_codes.to(self.device)), keep_codebooks, K,
                                 self.pad_token_id)
            processors.append(keep)
        elif keep_codebooks:
            raise MusiclensError("keep_codebooks needs keep_codes to copy them from")
        if processors:
            from transformers import LogitsProcessorList

            extra["logits_processor"] = LogitsProcessorList(processors)
        inputs = self.text_inputs([p or "" for p in prompts])
        cfg = guidance_scale is not None and guidance_scale > 1
        torch.manual_seed(seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed_all(seed)
        recorded: list[torch.Tensor] = []
        codec = self.hf.audio_encoder
        orig_decode = codec.decode

        def decode_and_keep(audio_codes, *args, **kwargs):
            recorded.append(audio_codes[0].detach().clone())
            return orig_decode(audio_codes, *args, **kwargs)

        step_hook = self.hf.decoder.register_forward_pre_hook(self._count_step, with_kwargs=True)
        self.state = HookState(generating=True, cfg_batch=B if cfg else None, step=-1, prefix_len=0)
        codec.decode = decode_and_keep
        prefill_patch = self._single_prefill()
        try:
            with contrast:
                audio = self.hf.generate(**inputs, **extra, max_new_tokens=F + K - 1,
                                         guidance_scale=guidance_scale if cfg else None, do_sample=do_sample,
                                         temperature=temperature, top_k=top_k)
        finally:
            prefill_patch()
            codec.decode = orig_decode
            step_hook.remove()
            self.state = HookState()
        return GenerationResult(audio=audio[:, 0].float().cpu(), codes=recorded[0].cpu(),
                                sample_rate=self.sample_rate, prompts=prompts)

    def _single_prefill(self):
        """Work around transformers 5.x MusicGen running the prefill forward twice.

        `Musicgen*.generate` computes `prefill_outputs` and hands them to
        `_sample`, which ignores them and prefills again: every hook would see
        step 0 twice and the first step costs double. We memoise `_prefill`
        for the duration of one `generate` call; outputs are unchanged
        (verified: greedy generation equals teacher forcing token for token).
        Returns a function that undoes the patch.
        """
        hf = self.hf
        if not hasattr(hf, "_prefill"):
            return lambda: None
        original = hf._prefill
        memo: dict = {}

        def prefill_once(input_ids, *args, **kwargs):
            key = (input_ids.data_ptr(), tuple(input_ids.shape))
            if memo.get("key") == key:
                return memo.pop("out")
            out = original(input_ids, *args, **kwargs)
            memo.update(key=key, out=out)
            return out

        hf._prefill = prefill_once

        def undo():
            if "_prefill" in hf.__dict__:
                del hf.__dict__["_prefill"]

        return undo

    @contextlib.contextmanager
    def _local_pass(self) -> Iterator[None]:
        """Mark context contrast's window forward, which is neither a step nor an activation to capture."""
        self.state.local_pass = True
        try:
            yield
        finally:
            self.state.local_pass = False

    def _count_step(self, module, args, kwargs):
        # forward pre-hook on the decoder: runs once per generated step, before the layers
        if self.state.local_pass:
            return
        self.state.step += 1
        ehs = kwargs.get("encoder_hidden_states") if self.kind == "melody" else None
        self.state.prefix_len = 0 if ehs is None else ehs.shape[1]

    def __repr__(self) -> str:
        return (f"MusicModel({self.name!r}, kind={self.kind}, layers={self.n_layers}, d_model={self.d_model}, "
                f"sr={self.sample_rate}, frame_rate={self.frame_rate})")


@contextlib.contextmanager
def _stop_after(layer: torch.nn.Module) -> Iterator[None]:
    def hook(module, args, output):
        raise _StopForward()

    h = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        h.remove()


def _state_hash(hf) -> str:
    """Short sha256 over parameter and buffer bytes (identifies weights for stores/SAEs)."""
    h = hashlib.sha256()
    for name, t in sorted(hf.state_dict().items()):
        h.update(name.encode())
        t = t.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            t = t.float()
        h.update(t.numpy().tobytes()[: 1 << 16])
        h.update(str(tuple(t.shape)).encode())
    return h.hexdigest()[:16]


def _folder_hash(path: Path) -> str:
    """Cheap, stable hash of a checkpoint folder: config + size and head/tail bytes of each weight file."""
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.suffix in (".json",) and f.name.startswith("config"):
            h.update(f.read_bytes())
        elif f.suffix in (".safetensors", ".bin"):
            size = f.stat().st_size
            h.update(f.name.encode() + str(size).encode())
            with open(f, "rb") as fh:
                h.update(fh.read(1 << 22))
                fh.seek(max(0, size - (1 << 22)))
                h.update(fh.read(1 << 22))
    return h.hexdigest()[:16]


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


_CACHE: dict = {}


def load_model(name: str = "organism", device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None,
               cache: bool = True) -> MusicModel:
    """Load a model by name (see module docstring) as a `MusicModel` in eval mode."""
    _quiet_transformers()
    if isinstance(dtype, str):
        dtype = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                 "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}.get(dtype)
        if dtype is None:
            raise MusiclensError("dtype must be float32, bfloat16 or float16")
    if dtype == torch.float32:
        dtype = None  # the default: one cache entry for "float32" and None
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        key = (name, str(torch.device(device)), str(dtype))
    except RuntimeError as e:
        raise MusiclensError(f"unknown device {device!r}: {str(e).splitlines()[0]}")
    if cache and key in _CACHE:
        return _CACHE[key]
    if name in TINY_NAMES:
        from .tiny import build_tiny

        hf, tok = build_tiny(name)
        whash = None
    elif name == "organism":
        from .organism import load_organism_hf, organism_path

        hf, tok = load_organism_hf(device="cpu")
        whash = _folder_hash(organism_path())
    else:
        hf, tok, whash = _load_pretrained(name)
    _set_attention(hf)
    hf.eval()
    # hashed as loaded (float32, on the CPU): the same weights give the same hash on every device and dtype
    whash = whash or _state_hash(hf)
    if device is not None:
        try:
            hf.to(device)
        except (RuntimeError, AssertionError) as e:
            raise MusiclensError(f"cannot use device {device}: {e}")
    if dtype is not None and dtype != torch.float32:
        # the codec stays in float32: its LSTM and convolutions gain little and lose accuracy in half precision
        for part in ("decoder", "text_encoder", "enc_to_dec_proj", "audio_enc_to_dec_proj"):
            if hasattr(hf, part):
                getattr(hf, part).to(dtype)
    model = MusicModel(hf, tok, name=name, weights_hash=whash)
    if cache:
        _CACHE[key] = model
    return model


def _set_attention(hf) -> None:
    try:
        hf.set_attn_implementation({"text_encoder": "sdpa", "decoder": "sdpa"})
    except Exception:
        pass


def _load_pretrained(name: str):
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration

    path = Path(name).expanduser()
    local = path.is_dir()
    if not local and (os.sep in name and not looks_like_hub_id(name)):
        raise MusiclensError(f"model folder not found: {name}")
    if local and not (path / "config.json").exists():
        raise MusiclensError(f"{name} is not a Hugging Face model folder (no config.json)")
    model_type = None
    if local:
        try:
            model_type = json.loads((path / "config.json").read_text()).get("model_type")
        except json.JSONDecodeError as e:
            raise MusiclensError(f"{name}/config.json is not valid JSON: {e}")
        if model_type not in ("musicgen", "musicgen_melody"):
            what = f"a {model_type!r} model" if model_type else "not a model folder (its config.json has no model_type)"
            raise MusiclensError(f"{name} is {what}, not a MusicGen checkpoint")
    cls = MusicgenMelodyForConditionalGeneration if model_type == "musicgen_melody" or "melody" in name.lower() \
        else MusicgenForConditionalGeneration
    if not local:
        if not looks_like_hub_id(name):
            raise MusiclensError(f"unknown model {name!r}: expected organism, tiny-random, tiny-random-melody, "
                                 f"a local folder, or a hub id like facebook/musicgen-small")
    try:
        from .organism import quiet_loading

        if local:
            with quiet_loading():
                hf = cls.from_pretrained(str(path), dtype=torch.float32)  # (not "auto": a half-precision
            # checkpoint would otherwise bring its codec in half precision too; --dtype casts afterwards)
        else:
            try:  # the local HF cache first: no network round trips
                with quiet_loading():
                    hf = cls.from_pretrained(name, local_files_only=True, dtype=torch.float32)
            except OSError:
                if not _hub_reachable():
                    raise MusiclensError(f"model {name!r} is not in the local Hugging Face cache and the hub is "
                                         f"unreachable; download it elsewhere and pass its folder")
                hf = cls.from_pretrained(name, dtype=torch.float32)
    except OSError as e:
        if local:
            raise MusiclensError(f"cannot load {name}: {str(e).splitlines()[0]}")
        raise MusiclensError(f"unknown model {name!r}: not 'organism', 'tiny-random', a local folder, or a "
                             f"reachable hub id ({str(e).splitlines()[0]})")
    try:
        tok = AutoTokenizer.from_pretrained(str(path) if local else name)
    except Exception:
        if hf.config.text_encoder.model_type == "bert":
            from .tiny import load_minilm_tokenizer

            tok = load_minilm_tokenizer()
        else:
            raise MusiclensError(f"no tokenizer found for {name}")
    whash = _folder_hash(path) if local else None
    return hf, tok, whash


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Fast check (one TCP connect) before transformers' slow retry loop."""
    import socket

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = constants.ENDPOINT.split("://", 1)[-1].split("/", 1)[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def looks_like_hub_id(name: str) -> bool:
    """'org/name' and not a path: the only names worth asking the hub for (else fail fast, offline)."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def save_model(model: MusicModel, out: str | Path, overwrite: bool = False) -> Path:
    """Write `model` as one self-contained HF folder (weights, configs, tokenizer), atomically."""
    from ..io import atomic_dir

    out = Path(out)
    if out.exists() and not overwrite:
        raise MusiclensError(f"output exists: {out} (use --overwrite)")
    from .organism import quiet_loading

    with atomic_dir(out, overwrite=overwrite) as tmp, quiet_loading():
        model.hf.save_pretrained(tmp)
        model.tokenizer.save_pretrained(tmp)
    return out
