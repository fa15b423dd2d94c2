"""Features computed on the fly from audio equal features computed from a store extracted from the same audio."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from musiclens.features.audio_source import AudioActivations
from musiclens.features.scan import load_saes, scan_store
from musiclens.features.stats import FiringRule

sys.path.insert(0, str(Path(__file__).parent))


def test_on_the_fly_equals_store(tmp_path, tiny_model):
    from musiclens.extract import ExtractConfig, run_extract
    from musiclens.sae.io import write_sae_files
    from musiclens.sae.model import SAE, SAEConfig
    from musiclens.store import ActivationStore

    rng = np.random.default_rng(0)
    audio = tmp_path / "audio"
    audio.mkdir()
    for i, sec in enumerate([1.3, 1.0, 1.1]):
        sf.write(audio / f"a{i}.wav", (0.2 * rng.standard_normal(int(16000 * sec))).astype(np.float32), 16000)
    sae = SAE(SAEConfig(d_in=tiny_model.d_model, d_sae=64, architecture="topk", k=5, hook_name="layer.2",
                        model_name="tiny-random"))
    sae.init_weights(generator=torch.Generator().manual_seed(0))
    write_sae_files(sae, tmp_path / "sae")
    saes = load_saes([tmp_path / "sae"])
    run_extract(ExtractConfig(out=str(tmp_path / "store"), model="tiny-random", audio=str(audio), layers="2",
                              seconds=1.2, store_dtype="float32", batch_size=3))
    store = ActivationStore(tmp_path / "store")
    src = AudioActivations(audio, tiny_model, [2], seconds=1.2, batch_size=3)
    assert [c["rows"] for c in src.clips] == [c["rows"] for c in store.clips]
    rule = FiringRule()
    a = scan_store(store, saes, rule, top_n=3)[saes[0].name]
    b = scan_store(src, saes, rule, top_n=3, rows_per_chunk=1000)[saes[0].name]
    np.testing.assert_array_equal(a.track_count, b.track_count)
    np.testing.assert_array_equal(a.frame_count, b.frame_count)
    np.testing.assert_allclose(a.max_act, b.max_act, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(a.top_clip[:, 0], b.top_clip[:, 0])
    np.testing.assert_array_equal(a.top_peak[:, 0], b.top_peak[:, 0])


def test_features_command_from_audio(tmp_path, tiny_model):
    import json

    from musiclens.cli import main
    from musiclens.sae.io import write_sae_files
    from musiclens.sae.model import SAE, SAEConfig

    rng = np.random.default_rng(1)
    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(3):
        sf.write(audio / f"b{i}.wav", (0.2 * rng.standard_normal(16000)).astype(np.float32), 16000)
    sae = SAE(SAEConfig(d_in=tiny_model.d_model, d_sae=32, architecture="topk", k=2, hook_name="layer.1",
                        model_name="tiny-random"))
    sae.init_weights(generator=torch.Generator().manual_seed(1))
    write_sae_files(sae, tmp_path / "sae")
    out = tmp_path / "feat"
    assert main(["features", "--audio", str(audio), "--sae", str(tmp_path / "sae"), "--out", str(out),
                 "--seconds", "1.0", "--max-rate", "1.0", "--min-rate", "0.0", "--max-clip-features", "2"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["tracks"] == 3 and s["frames"] == 150 and s["model"] == "tiny-random"
    assert s["features_without_audio"] == 0 and len(list((out / "clips").rglob("concat.wav"))) == 2
    assert main(["features", "--audio", str(audio), "--store", str(audio), "--sae", str(tmp_path / "sae"),
                 "--out", str(tmp_path / "x")]) == 2
