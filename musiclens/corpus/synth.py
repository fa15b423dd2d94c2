"""Render one clip plan to audio: notes -> FluidSynth (GM soundfont) -> tone filter -> fixed gain.

* One FluidSynth instance per worker process, soundfont loaded once (loading
  FluidR3_GM takes longer than rendering a clip). Reverb and chorus are off:
  they smear onsets and pitch, which the estimators must measure.
* Tempo: a quarter note lasts 60/bpm s, so the note rate scales with tempo.
  Notes are shortened slightly (articulation) so repeated pitches re-attack.
* Drums: GM kit on channel 10, hits on the score's quarter-note grid (locked
  to the melody), velocity scaled with the clip's dynamics.
* Brightness: a filter after synthesis (dark = low-pass, bright = high
  shelf), loudness-preserving (RMS matched to the unfiltered clip), so it
  moves the spectral centroid and not the loudness.
* Level: one fixed global gain for every clip (no per-clip normalisation,
  which would erase dynamics); a soft limiter above -1 dBFS is a safety net
  that loud clips rarely touch (the bench reports how often).
"""

from __future__ import annotations

import numpy as np
from scipy import signal

DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
GLOBAL_GAIN = 2.5          # applied to FluidSynth's float output (synth.gain 0.2)
LIMIT = 0.89               # soft-limit threshold (-1 dBFS)
ARTICULATION = 0.9         # sounding fraction of a note's written duration
DRUM_CHANNEL = 9

# Drum patterns on an 8th-note grid of a 4-beat bar: {step: [(gm_note, relative velocity)]}
KICK, SNARE, SIDESTICK, HAT, RIDE = 36, 38, 37, 42, 51
DRUM_PATTERNS = {
    "rock": {0: [(KICK, 1.0), (HAT, 0.7)], 1: [(HAT, 0.5)], 2: [(SNARE, 0.95), (HAT, 0.7)], 3: [(HAT, 0.5)],
             4: [(KICK, 1.0), (HAT, 0.7)], 5: [(KICK, 0.8), (HAT, 0.5)], 6: [(SNARE, 0.95), (HAT, 0.7)],
             7: [(HAT, 0.5)]},
    "light": {0: [(KICK, 0.6), (RIDE, 0.6)], 2: [(SIDESTICK, 0.6), (RIDE, 0.5)], 4: [(RIDE, 0.6)],
              6: [(SIDESTICK, 0.6), (RIDE, 0.5)]},
}


def clip_notes(plan: dict, piece) -> list[tuple[float, float, int]]:
    """(onset s, duration s, midi) of the melody in the clip, looping the tune as needed."""
    spq = 60.0 / plan["bpm"]
    seconds = plan["seconds"]
    notes = piece.notes
    shift = 12 * plan["octave_shift"]
    start_ql = notes[plan["start_note"]][0]
    out = []
    loop = 0
    while True:
        base = loop * piece.length_ql - start_ql
        for on, dur, midi in notes[plan["start_note"] if loop == 0 else 0:]:
            t = (base + on) * spq
            if t >= seconds:
                return out
            out.append((t, dur * spq, int(np.clip(midi + shift, 21, 108))))
        loop += 1


def drum_hits(plan: dict, piece) -> list[tuple[float, int, float]]:
    """(time s, gm note, relative velocity) on the score's beat grid."""
    if plan["drums"] == "none":
        return []
    pattern = DRUM_PATTERNS[plan["drums"]]
    spq = 60.0 / plan["bpm"]
    start_ql = piece.notes[plan["start_note"]][0]
    first_step = int(np.ceil(start_ql * 2 - 1e-6))  # 8th-note steps in score time
    hits = []
    step = first_step
    while True:
        t = (step / 2.0 - start_ql) * spq
        if t >= plan["seconds"]:
            return hits
        for note, rel in pattern.get(step % 8, []):
            hits.append((t, note, rel))
        step += 1


class Renderer:
    """Renders clips with FluidSynth; a fresh synthesizer per clip.

    A synthesizer reused across clips is not bit-exact (voice and block state
    carry over), so each clip gets its own. With `dynamic-sample-loading` a new
    synth loads only the samples it plays: ~40 ms instead of ~0.5 s.
    """

    def __init__(self, sample_rate: int = 16000, soundfont: str = DEFAULT_SOUNDFONT):
        import ctypes

        import fluidsynth

        self.sr = int(sample_rate)
        self.soundfont = str(soundfont)
        self._fs = fluidsynth
        self._write = fluidsynth._fl.fluid_synth_write_float
        self._write.restype = ctypes.c_int
        self._write.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                ctypes.c_void_p, ctypes.c_int, ctypes.c_int]

    def _new_synth(self):
        # effects must be off at creation time (settings changed later are ignored);
        # reverb and chorus smear the onsets and pitch the estimators measure
        syn = self._fs.Synth(gain=0.2, samplerate=float(self.sr),
                             **{"synth.reverb.active": 0, "synth.chorus.active": 0,
                                "synth.dynamic-sample-loading": 1})
        sfid = syn.sfload(self.soundfont)
        if sfid < 0:
            syn.delete()
            raise RuntimeError(f"cannot load soundfont {self.soundfont}")
        return syn, sfid

    def _samples(self, syn, n: int) -> np.ndarray:
        """n mono float samples. `fluid_synth_write_float` directly: pyfluidsynth's
        `get_samples` writes int16 with dither and clips at full scale."""
        if n <= 0:
            return np.zeros(0, dtype=np.float32)
        import ctypes

        buf = np.zeros(2 * n, dtype=np.float32)
        ptr = buf.ctypes.data_as(ctypes.c_void_p)
        self._write(syn.synth, n, ptr, 0, 2, ptr, 1, 2)
        return buf.reshape(-1, 2).mean(axis=1)

    def synthesize(self, plan: dict, piece) -> np.ndarray:
        """Dry synthesis (before filter and gain), float32 mono, exactly `seconds` long."""
        syn, sfid = self._new_synth()
        try:
            syn.program_select(0, sfid, 0, plan["program"])
            syn.program_select(DRUM_CHANNEL, sfid, 128, 0)
            vel = plan["velocity"]
            events = []  # (time, order, kind, channel, key, velocity); note-offs first at equal times
            for t, dur, midi in clip_notes(plan, piece):
                off = t + max(min(dur * ARTICULATION, dur - 0.03), 0.05)
                events.append((t, 1, "on", 0, midi, vel))
                events.append((off, 0, "off", 0, midi, 0))
            for t, note, rel in drum_hits(plan, piece):
                events.append((t, 1, "on", DRUM_CHANNEL, note, int(np.clip(round(vel * rel), 1, 127))))
            events.sort(key=lambda e: (e[0], e[1]))
            total = int(round(plan["seconds"] * self.sr))
            chunks, pos = [], 0
            for t, _, kind, ch, key, v in events:
                at = min(int(round(t * self.sr)), total)
                chunks.append(self._samples(syn, at - pos))
                pos = at
                if kind == "on":
                    syn.noteon(ch, key, v)
                else:
                    syn.noteoff(ch, key)
            chunks.append(self._samples(syn, total - pos))
        finally:
            syn.delete()
        return np.concatenate(chunks)[:total]

    def render(self, plan: dict, piece) -> np.ndarray:
        """Final clip: synthesis, brightness filter, global gain, limiter, fades."""
        y = self.synthesize(plan, piece)
        y = brightness_filter(y, self.sr, plan["brightness"])
        y = soft_limit(y * GLOBAL_GAIN)
        fade = int(0.02 * self.sr)
        y[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        y[:32] *= np.linspace(0.0, 1.0, 32, dtype=np.float32)
        return y.astype(np.float32)


def brightness_filter(y: np.ndarray, sr: int, brightness: str) -> np.ndarray:
    """dark: 4th-order low-pass at 700 Hz; bright: +14 dB high shelf from ~2 kHz; RMS kept."""
    if brightness == "neutral":
        return y
    if brightness == "dark":
        sos = signal.butter(4, 700, btype="lowpass", fs=sr, output="sos")
        out = signal.sosfilt(sos, y)
    elif brightness == "bright":
        sos = signal.butter(2, 2000, btype="highpass", fs=sr, output="sos")
        out = y + 4.0 * signal.sosfilt(sos, y)
    else:
        raise ValueError(f"unknown brightness {brightness!r}")
    rms_in = float(np.sqrt(np.mean(y ** 2)))
    rms_out = float(np.sqrt(np.mean(out ** 2)))
    if rms_out > 1e-9:
        out = out * (rms_in / rms_out)
    return out.astype(np.float32)


def soft_limit(y: np.ndarray, limit: float = LIMIT) -> np.ndarray:
    """Identity below `limit`; above it a tanh knee that never exceeds 1.0."""
    a = np.abs(y)
    over = a > limit
    if not over.any():
        return y
    out = y.copy()
    head = 1.0 - limit
    out[over] = np.sign(y[over]) * (limit + head * np.tanh((a[over] - limit) / head))
    return out
