"""One wrapper over the audio autoencoders whose latent spaces we interpret.

The paper's method only needs three things from an autoencoder: audio ->
latent frames, latent frames -> audio, and the frame rate that ties a latent
frame to a stretch of audio (for the frame labels). `LatentAutoencoder` gives
exactly that for three model families:

* ``encodec``  HF `EncodecModel` (MusicGen's codec, the organism's codec). The
  continuous encoder output *before* quantisation is site ``latent.encoder``;
  the quantised embedding of each codebook k is site ``latent.q<k>`` (the
  residual VQ sums them). Decoding re-quantises by default, as the real codec
  would: an edit only matters if it survives the codebooks.
* ``dac``      HF `DacModel` (Descript Audio Codec): same two kinds of sites.
* ``oobleck``  diffusers `AutoencoderOobleck` (Stable Audio / DiffRhythm VAE):
  continuous only; the latent is the posterior mean.

Latents are always returned frames-first, `[B, F, D]`, because the store,
the SAEs and the probes all treat one frame as one row. Audio is mono
`[B, T]` at `sample_rate`; clips are trimmed to whole frames (`T = F * hop`)
so that frame i covers samples `[i*hop, (i+1)*hop)` exactly.

Names: ``organism`` (the shipped codec), ``tiny-encodec`` / ``tiny-dac`` /
``tiny-oobleck`` (deterministic random weights, codebooks filled), a local
folder (HF `config.json` with model_type encodec/dac, a diffusers
`AutoencoderOobleck` folder, or a Stable Audio pipeline folder with `vae/`),
or a hub id (needs network).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import MusiclensError
from ..io import state_dict_hash

TINY_NAMES = ("tiny-encodec", "tiny-dac", "tiny-oobleck")
ENCODER_SITE = "latent.encoder"


class LatentAutoencoder:
    """Audio <-> latent frames for an EnCodec, DAC or Oobleck model (see module doc)."""

    def __init__(self, model: torch.nn.Module, kind: str, name: str, device: str = "cpu"):
        if kind not in ("encodec", "dac", "oobleck"):
            raise MusiclensError(f"unsupported autoencoder kind {kind!r}")
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.kind, self.name, self.device = kind, name, device
        cfg = model.config
        self.sample_rate = int(cfg.sampling_rate)
        if kind == "encodec":
            ratios = list(cfg.upsampling_ratios)
            self.dim = int(cfg.hidden_size)
            self.bandwidth = float(cfg.target_bandwidths[-1])
            self.n_codebooks = int(model.quantizer.get_num_quantizers_for_bandwidth(self.bandwidth))
            self.audio_channels = int(cfg.audio_channels)
        elif kind == "dac":
            ratios = list(cfg.downsampling_ratios)
            self.dim = int(cfg.hidden_size)
            self.n_codebooks = int(cfg.n_codebooks)
            self.audio_channels = 1
        else:
            ratios = list(cfg.downsampling_ratios)
            self.dim = int(cfg.decoder_input_channels)
            self.n_codebooks = 0
            self.audio_channels = int(cfg.audio_channels)
        self.hop = int(torch.tensor(ratios).prod().item())
        self.frame_rate = self.sample_rate / self.hop
        self._hash: str | None = None

    # ------------------------------------------------------------------ info
    @property
    def sites(self) -> list[str]:
        """Store site names this autoencoder offers: the continuous latent, then one per codebook."""
        return [ENCODER_SITE] + [f"latent.q{k}" for k in range(self.n_codebooks)]

    @property
    def weights_hash(self) -> str:
        """sha256 (first 16 hex) over the state dict, so a store records which weights made it."""
        if self._hash is None:
            self._hash = state_dict_hash(self.model.state_dict())
        return self._hash

    def n_frames(self, n_samples: int) -> int:
        return n_samples // self.hop

    # ---------------------------------------------------------------- encode
    def _prep(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() == 1:
            wav = wav[None]
        if wav.dim() != 2:
            raise MusiclensError(f"audio must be [batch, samples], got shape {tuple(wav.shape)}")
        frames = wav.shape[-1] // self.hop
        if frames < 1:
            raise MusiclensError(f"audio shorter than one latent frame ({self.hop} samples at {self.sample_rate} Hz)")
        wav = wav[:, : frames * self.hop].to(self.device, torch.float32)
        x = wav[:, None, :]
        if self.audio_channels > 1:
            x = x.expand(-1, self.audio_channels, -1).contiguous()
        return x

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, sites: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Audio `[B, T]` -> {site: latents `[B, F, D]`} for the requested sites (default all)."""
        sites = sites or self.sites
        bad = [s for s in sites if s not in self.sites]
        if bad:
            raise MusiclensError(f"{self.name} has no site(s) {bad}; available: {', '.join(self.sites)}")
        x = self._prep(wav)
        frames = x.shape[-1] // self.hop
        out: dict[str, torch.Tensor] = {}
        if self.kind == "oobleck":
            z = self.model.encode(x).latent_dist.mean
        else:
            z = self.model.encoder(x)
        z = z[..., :frames]
        out[ENCODER_SITE] = z.transpose(1, 2).contiguous()
        qsites = [s for s in sites if s != ENCODER_SITE]
        if qsites:
            per_book = self.codebook_embeddings(z)
            for s in qsites:
                out[s] = per_book[int(s[len("latent.q"):])].transpose(1, 2).contiguous()
        return {s: out[s] for s in sites}

    @torch.no_grad()
    def latents(self, wav: torch.Tensor) -> torch.Tensor:
        """Continuous latents `[B, F, D]` (site latent.encoder)."""
        return self.encode(wav, [ENCODER_SITE])[ENCODER_SITE]

    @torch.no_grad()
    def codebook_embeddings(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Per-codebook quantised embeddings `[B, D, F]` of a continuous latent `z [B, D, F]`."""
        if self.kind == "encodec":
            codes = self.model.quantizer.encode(z, self.bandwidth)  # [K, B, F]
            return [self.model.quantizer.layers[k].decode(codes[k]) for k in range(codes.shape[0])]
        if self.kind == "dac":
            embs, residual = [], z
            for q in self.model.quantizer.quantizers:
                zq = q(residual)[0]
                embs.append(zq)
                residual = residual - zq
            return embs
        raise MusiclensError(f"{self.kind} is a continuous autoencoder: it has no codebooks")

    # ---------------------------------------------------------------- decode
    @torch.no_grad()
    def quantize(self, latents: torch.Tensor) -> torch.Tensor:
        """Continuous latents `[B, F, D]` -> the codec's quantised latents `[B, F, D]` (identity for VAEs)."""
        z = latents.to(self.device, torch.float32).transpose(1, 2)
        if self.kind == "encodec":
            codes = self.model.quantizer.encode(z, self.bandwidth)
            z = self.model.quantizer.decode(codes)
        elif self.kind == "dac":
            z = self.model.quantizer(z)[0]
        return z.transpose(1, 2)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, requantize: bool = True) -> torch.Tensor:
        """Latents `[B, F, D]` -> mono audio `[B, F*hop]`.

        `requantize` (codecs only) passes the latents through the residual VQ
        first, as the real codec's decoder only ever sees quantised latents.
        """
        if latents.dim() != 3 or latents.shape[-1] != self.dim:
            raise MusiclensError(f"latents must be [batch, frames, {self.dim}], got {tuple(latents.shape)}")
        z = self.quantize(latents) if (requantize and self.kind != "oobleck") else latents.to(self.device, torch.float32)
        z = z.transpose(1, 2)
        if self.kind == "oobleck":
            y = self.model.decode(z).sample
        else:
            y = self.model.decoder(z)
        y = y.mean(dim=1)
        n = latents.shape[1] * self.hop
        if y.shape[-1] < n:
            y = torch.nn.functional.pad(y, (0, n - y.shape[-1]))
        return y[:, :n]


# ---------------------------------------------------------------------- loading
def _fill_codebooks(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Random HF EnCodec has all-zero codebooks (DESIGN.md): fill them so codes matter."""
    for layer in model.quantizer.layers:
        cb = layer.codebook
        cb.embed.copy_(torch.randn(cb.embed.shape, generator=gen))
        if hasattr(cb, "embed_avg"):
            cb.embed_avg.copy_(cb.embed)
        if hasattr(cb, "cluster_size"):
            cb.cluster_size.fill_(1.0)
        if hasattr(cb, "inited"):
            cb.inited.fill_(True)


@torch.no_grad()
def build_tiny(name: str) -> torch.nn.Module:
    """Deterministic tiny random models of the real classes, 16 kHz, hop 320 (50 frames/s)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        if name == "tiny-encodec":
            from transformers import EncodecConfig, EncodecModel

            cfg = EncodecConfig(sampling_rate=16000, audio_channels=1, num_filters=4, hidden_size=16,
                                num_residual_layers=1, upsampling_ratios=[8, 5, 4, 2], codebook_size=64,
                                codebook_dim=16, target_bandwidths=[1.2], num_lstm_layers=1,
                                use_causal_conv=False, normalize=False, use_conv_shortcut=False)
            model = EncodecModel(cfg)
            _fill_codebooks(model, torch.Generator().manual_seed(1))
        elif name == "tiny-dac":
            from transformers import DacConfig, DacModel

            cfg = DacConfig(encoder_hidden_size=4, downsampling_ratios=[2, 4, 5, 8], decoder_hidden_size=16,
                            n_codebooks=3, codebook_size=64, codebook_dim=4, hidden_size=16, sampling_rate=16000)
            model = DacModel(cfg)
        elif name == "tiny-oobleck":
            import warnings

            from diffusers import AutoencoderOobleck

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # weight_norm deprecation inside diffusers
                model = AutoencoderOobleck(encoder_hidden_size=16, downsampling_ratios=[2, 4, 5, 8],
                                           channel_multiples=[1, 2, 2, 2], decoder_channels=16,
                                           decoder_input_channels=8, audio_channels=1, sampling_rate=16000)
        else:
            raise MusiclensError(f"unknown tiny autoencoder {name!r}; choose from {', '.join(TINY_NAMES)}")
    finally:
        torch.random.set_rng_state(state)
    return model.eval()


def load_folder(path: Path):
    """(model, kind) from an autoencoder folder: EnCodec, DAC, Oobleck, or a MusicGen folder's codec."""
    if (path / "vae" / "config.json").exists() and not (path / "config.json").exists():
        path = path / "vae"  # a Stable Audio pipeline folder
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise MusiclensError(f"{path} has no config.json: not an autoencoder folder")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise MusiclensError(f"{cfg_file} is not valid JSON: {e}")
    if cfg.get("_class_name") == "AutoencoderOobleck":
        from diffusers import AutoencoderOobleck

        return AutoencoderOobleck.from_pretrained(path), "oobleck"
    mtype = cfg.get("model_type")
    if mtype == "encodec":
        from transformers import EncodecModel

        return EncodecModel.from_pretrained(path), "encodec"
    if mtype == "dac":
        from transformers import DacModel

        return DacModel.from_pretrained(path), "dac"
    if mtype in ("musicgen", "musicgen_melody"):
        # MusicGen folder: its codec lives under the `audio_encoder.` prefix of the checkpoint
        from transformers import AutoConfig, EncodecModel

        from ..models.organism import hf_errors_only

        with hf_errors_only():  # its validation calls MusicGen's pad/BOS id = codebook size "unexpected"
            full = AutoConfig.from_pretrained(path)
        model = EncodecModel(full.audio_encoder)
        _load_prefixed(model, path, "audio_encoder.")
        return model, "encodec"
    raise MusiclensError(f"{path}: unsupported model type {mtype or cfg.get('_class_name')!r} "
                         "(expected encodec, dac, AutoencoderOobleck or a MusicGen folder)")


def _load_prefixed(model: torch.nn.Module, folder: Path, prefix: str) -> None:
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise MusiclensError(f"{folder}: no .safetensors weights")
    state = {}
    for f in files:
        with safe_open(str(f), "pt") as fh:
            for k in fh.keys():
                if k.startswith(prefix):
                    state[k[len(prefix):]] = fh.get_tensor(k)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise MusiclensError(f"{folder}: codec weights missing {len(missing)} tensors (e.g. {missing[0]})")


def organism_codec() -> torch.nn.Module:
    """The organism's trained EnCodec, read straight from the shipped MusicGen folder.

    Reading only the `audio_encoder.` tensors avoids loading MiniLM and the decoder.
    """
    from ..models.organism import organism_path

    path = organism_path()
    if not (path / "config.json").exists() or not any(path.glob("*.safetensors")):
        raise MusiclensError("the organism weights are not trained yet: run `musiclens organism train`")
    return load_folder(path)[0]


def load_autoencoder(name: str = "organism", device: str = "cpu") -> LatentAutoencoder:
    """Load an autoencoder by name (see module doc) as a `LatentAutoencoder`."""
    if name in TINY_NAMES:
        model = build_tiny(name)
        kind = {"tiny-encodec": "encodec", "tiny-dac": "dac", "tiny-oobleck": "oobleck"}[name]
        return LatentAutoencoder(model, kind, name, device)
    if name == "organism":
        return LatentAutoencoder(organism_codec(), "encodec", "organism", device)
    path = Path(name)
    if path.exists():
        if not path.is_dir():
            raise MusiclensError(f"{name} is a file; an autoencoder is a folder with config.json")
        model, kind = load_folder(path)
        return LatentAutoencoder(model, kind, str(path), device)
    if "/" in name:
        try:
            from huggingface_hub import snapshot_download

            local = Path(snapshot_download(name))
        except Exception as e:  # offline or unknown id
            raise MusiclensError(f"cannot fetch {name!r} from the hub ({type(e).__name__}); "
                                 "pass a local folder instead")
        model, kind = load_folder(local)
        return LatentAutoencoder(model, kind, name, device)
    raise MusiclensError(f"unknown autoencoder {name!r}: use organism, {', '.join(TINY_NAMES)}, a folder or a hub id")
