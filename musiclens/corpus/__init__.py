"""A rendered music corpus whose concepts are known: music21 melodies -> MIDI -> FluidSynth.

Each clip is built from independently sampled factors (instrument, tempo,
register, dynamics, drums, mode, brightness), so every concept the toolkit
looks for in a model has ground truth. Format: see docs/architecture.md
("Corpus format") and docs/corpus.md.

    render_corpus(CorpusConfig(out="data/corpus", clips=4000, seed=0))
    load_metadata("data/corpus") -> list[dict]
"""

from .factors import HEADS, INSTRUMENTS
from .render import CorpusConfig, load_metadata, plan_corpus, render_corpus

__all__ = ["CorpusConfig", "HEADS", "INSTRUMENTS", "load_metadata", "plan_corpus", "render_corpus"]
