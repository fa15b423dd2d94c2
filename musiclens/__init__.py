"""musiclens: find what music generation models have learned, and steer them.

Pipeline stages, one package each, data flowing one way:

    models -> hooks -> extract -> store -> sae -> features -> steer -> measure -> report

`load_model(name)` is the entry point: "organism" (the shipped, trained
model), "tiny-random" (deterministic random weights of the real HF classes),
a local Hugging Face folder, or a hub id.
"""

__version__ = "0.1.0"


def load_model(name: str = "organism", **kwargs):
    """Load a MusicGen-family model wrapped as `musiclens.models.MusicModel`."""
    from .models import load_model as _load

    return _load(name, **kwargs)


__all__ = ["load_model", "__version__"]
