"""The features pass on the organism itself (skipped where its weights are not installed), and on tiny-random."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch


@pytest.mark.parametrize("name", ["organism", "tiny-random"])
def test_on_the_fly_matches_direct_capture(tmp_path, name):
    from musiclens.models.organism import organism_path

    if name == "organism" and not (organism_path() / "config.json").exists():
        pytest.skip("organism weights not installed")
    from musiclens import load_model
    from musiclens.features.audio_source import AudioActivations
    from musiclens.features.scan import SAEInfo, scan_store
    from musiclens.features.stats import FiringRule
    from musiclens.sae.model import SAE, SAEConfig

    m = load_model(name)
    layer = m.parse_layers("50%")[0]
    rng = np.random.default_rng(0)
    t = np.arange(m.sample_rate) / m.sample_rate
    for i, f in enumerate((220.0, 880.0)):
        y = 0.3 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(len(t))
        sf.write(tmp_path / f"t{i}.wav", y.astype(np.float32), m.sample_rate)
    sae = SAE(SAEConfig(d_in=m.d_model, d_sae=4 * m.d_model, architecture="topk", k=8, hook_name=f"layer.{layer}"))
    sae.init_weights(generator=torch.Generator().manual_seed(0))
    info = SAEInfo("s", tmp_path, sae, layer, m.d_model, sae.d_sae, 8, "topk")
    src = AudioActivations(tmp_path, m, [layer], seconds=1.0)
    st = scan_store(src, [info], FiringRule(), top_n=2)["s"]
    with torch.no_grad():           # direct: the same capture, clip by clip
        z = []
        for c in src.clips:
            wav = torch.from_numpy(sf.read(c["meta"]["source"], dtype="float32")[0][None])
            codes = m.encode_audio(wav)
            h = m.residuals(m.decoder_input_ids(codes), [f"layer.{layer}"])[f"layer.{layer}"][0]
            z.append(sae.encode(h[m.frame_positions(codes.shape[-1])][: c["rows"]].float()))
    allz = torch.cat(z).numpy()
    np.testing.assert_array_equal(st.frame_count, (allz > 0).sum(0))
    np.testing.assert_allclose(st.max_act, allz.max(0), rtol=1e-4, atol=1e-5)
