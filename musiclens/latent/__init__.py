"""Audio latent spaces: SAEs, probes, control vectors and generation trajectories.

After arXiv 2510.23802 ("Learning Interpretable Features in Audio Latent
Spaces via Sparse Autoencoders"): the latents of an audio autoencoder (EnCodec,
DAC, Stable Audio's Oobleck VAE, the organism's codec) are dense and opaque, so

1. `autoencoders`  encodes audio to latent frames (and decodes them back),
2. `extract`       writes those frames to an activation store with frame labels,
3. `labels`        measures pitch (CREPE), loudness (RMS) and timbre (centroid)
                   per latent frame and bins them into classes,
4. `grid`          trains RMSNorm-L1 SAEs over a width x lambda grid,
5. `probes`        fits linear probes from SAE features to each attribute,
6. `control`       adds a probe class's weight vector to the SAE features and
                   decodes the edited latents to audio,
7. `flow` / `trajectory`  follow the probes' attribute distributions through
                   the sampling steps of a rectified-flow / diffusion generator.
"""
