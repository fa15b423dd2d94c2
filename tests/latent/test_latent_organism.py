"""The organism codec: probes beat chance on held-out audio; a pitch control vector moves CREPE pitch.

Uses the SAE + probes shipped with the rectified-flow model
(musiclens/assets/organism/flow/cell, trained by `python bench/latent.py --ship`
on the organism codec's latents of the rendered corpus). The held-out audio is
rendered here with FluidSynth from notes chosen in the test, so the test needs
neither the corpus nor a network.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from musiclens.models.organism import organism_path

SF2 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
CELL = Path(__file__).resolve().parents[2] / "musiclens" / "assets" / "organism" / "flow" / "cell"

pytestmark = [
    pytest.mark.skipif(not (organism_path() / "model.safetensors").exists(),
                       reason="organism weights not trained yet (musiclens/assets/organism/musicgen)"),
    pytest.mark.skipif(not (CELL / "probes.json").exists(),
                       reason="latent SAE + probes not shipped yet (python bench/latent.py --ship)"),
    pytest.mark.skipif(not SF2.exists() or shutil.which("fluidsynth") is None,
                       reason="FluidSynth + FluidR3_GM soundfont not installed (make setup installs them)"),
]


def render(notes: list[int], program: int, seconds_per_note: float = 0.5, velocity: int = 90) -> np.ndarray:
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=program)
    for i, n in enumerate(notes):
        inst.notes.append(pretty_midi.Note(velocity=velocity, pitch=n, start=i * seconds_per_note,
                                           end=(i + 0.9) * seconds_per_note))
    pm.instruments.append(inst)
    y = pm.fluidsynth(fs=16000, sf2_path=str(SF2))[: int(len(notes) * seconds_per_note * 16000)]
    return (0.8 * y / max(1e-6, np.abs(y).max())).astype(np.float32)


@pytest.fixture(scope="module")
def cm():
    import json

    from musiclens.latent.control import load_control

    cm = load_control(CELL, "organism")
    trained_on = json.loads((CELL.parent / "config.json").read_text()).get("codec_weights_hash")
    if trained_on != cm.ae.weights_hash:
        pytest.skip(f"the shipped latent cell was trained on codec {trained_on}, the organism's codec is "
                    f"{cm.ae.weights_hash}: re-run `python bench/latent.py --ship`")
    return cm


def test_probes_beat_chance_on_held_out_audio(cm):
    from musiclens.latent.labels import frame_values

    # two melodies on instruments of the corpus (flute, piano), notes in the corpus's range
    clips = [render([67, 69, 71, 72, 74, 72, 71, 69], 73), render([55, 57, 59, 60, 62, 60, 59, 57], 0)]
    xs, ys = [], {"pitch": [], "loudness": [], "timbre": []}
    for y in clips:
        x = cm.ae.latents(__import__("torch").from_numpy(y)[None])[0]
        v = frame_values(y, cm.ae.sample_rate, cm.ae.hop, x.shape[0])
        c = cm.bins.classes(v)
        xs.append(x)
        for a in ys:
            ys[a].append(c[a])
    import torch

    x = torch.cat(xs)
    f = cm.sae.encode(x)
    for a in ("pitch",):
        y = np.concatenate(ys[a])
        pred = cm.probes.logits(f, a).argmax(-1).numpy()
        acc = float((pred == y).mean())
        chance = np.bincount(y).max() / len(y)
        assert acc > chance, f"{a}: accuracy {acc:.3f} <= chance {chance:.3f}"


def test_pitch_control_vector_moves_crepe_pitch(cm):
    from musiclens.latent.control import compare, edit_audio, measure, target_class

    y = render([60, 62, 64, 65, 67, 65, 64, 62], 0)  # piano around C4..G4
    base = measure(cm, edit_audio(cm, y, "pitch", 0, 0.0))
    up = target_class(cm.bins, "pitch", "C6")
    r = compare(cm, base, measure(cm, edit_audio(cm, y, "pitch", up, 30.0)), "pitch", up)
    assert r["baseline_median_midi"] is not None and r["edited_median_midi"] is not None
    assert r["edited_median_midi"] > r["baseline_median_midi"], r
