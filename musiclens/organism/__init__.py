"""Training, measuring and shipping the organism (musiclens's own small MusicGen).

Stages (each resumable, driven by `musiclens organism train`):
  codec.py      HF EncodecModel with EMA residual VQ written into HF's codebook buffers
  codes.py      the corpus encoded once + frozen MiniLM caption states
  lm.py         MusicGen decoder on delay-pattern codes, caption dropout for CFG
  evaluate.py   codec fidelity and prompt adherence (issue 3's "Prove it")
  pipeline.py   the train / eval / export jobs; card.py writes the model card from measured files
Configs and loading of the shipped folder live in `musiclens.models.organism`.
"""
