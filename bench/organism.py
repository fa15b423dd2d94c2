"""Organism benchmark: codec fidelity and the prompt-adherence figures of issue 3.

    python bench/organism.py --corpus data/corpus [--model DIR] [--what codec|generation|all]
                             [--n-codec 40] [--n-prompts 64] [--n-uncond 16] [--seconds 6]

Writes bench/results/organism_codec.json (original vs encode-decode on test
clips: log-mel L1, SI-SDR, onset rate by tempo group, BPM, centroid, RMS,
CREPE pitch, tagger agreement) and bench/results/organism.json (generations
from test-split captions: instrument and drums by the tagger, tempo Spearman
and onset-rate order, register / brightness / dynamics order with one-sided
Mann-Whitney p-values, FAD of unconditional generations vs noise), and
refreshes the metrics section of the shipped model card. n is small on a
2-core CPU; every result records it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from musiclens.bench_utils import write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=str(ROOT / "data" / "corpus"))
    ap.add_argument("--model", default="", help="organism HF folder (default: the shipped one)")
    ap.add_argument("--run", default="", help="training run directory: adds the teacher-forced caption gap "
                                              "on its held-out codes")
    ap.add_argument("--what", default="all", choices=["codec", "generation", "all"])
    ap.add_argument("--n-codec", type=int, default=40)
    ap.add_argument("--n-prompts", type=int, default=64)
    ap.add_argument("--n-uncond", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--top-k", type=int, default=0, help="0 = the model's generation_config (250 shipped)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="test", choices=["test", "valid"],
                    help="captions' split: test for reported figures, valid for choosing a checkpoint or guidance")
    ap.add_argument("--no-card", action="store_true", help="do not rewrite the model card")
    ap.add_argument("--no-reference", action="store_true", help="skip the same figures on the captions' source clips "
                                                                 "(as rendered and through the codec)")
    ap.add_argument("--tagger", default="", help="tagger folder for instrument / drums (default: shipped); the "
                                                 "result then goes to bench/results/organism_<folder name>.json")
    ap.add_argument("--name", default="", help="results file name (default: organism for the shipped model's test-split "
                                               "run at default settings, organism_<tagger folder> with --tagger; other "
                                               "runs must name themselves); any other name leaves the model card alone")
    ap.add_argument("--codec-dir", default="", help="measure only this codec HF folder (e.g. RUN/codec/hf, "
                                                     "before the LM exists)")
    a = ap.parse_args()
    from musiclens.models.organism import organism_path

    # organism.json / organism_codec.json are the shipped model's figures (the model card reads them):
    # any other model, split, tagger or sampling setting must be given a name of its own. (--codec-dir
    # without --name still writes organism_codec.json: the shipped codec is measured from its run folder.)
    shipped = not a.model or Path(a.model).resolve() == organism_path().resolve()
    default = (shipped and not a.tagger and not a.codec_dir and a.split == "test" and a.guidance == 3.0
               and a.top_k == 0 and a.temperature == 1.0)
    name = a.name or ("organism" if default else f"organism_{Path(a.tagger).name}" if a.tagger else "")
    if not name and not (a.codec_dir and a.what != "generation"):
        sys.exit("error: this is not the shipped model's default test-split run: give it a --name, so that "
                 "bench/results/organism.json (which the model card reads) keeps the shipped figures")
    codec_name = "organism_codec" if name in ("", "organism") else f"{name}_codec"
    if a.codec_dir:
        from musiclens.models.organism import SAMPLE_RATE
        from musiclens.organism.codec import load_codec
        from musiclens.organism.data import load_clips
        from musiclens.organism.evaluate import codec_fidelity, load_tagger

        test = load_clips(a.corpus, ("test",), SAMPLE_RATE, limit=a.n_codec)
        res = codec_fidelity(load_codec(a.codec_dir), test, a.n_codec, load_tagger())
        write_result(codec_name, {"model": a.codec_dir, **res})
        return

    import tempfile

    from musiclens.organism.card import write_card
    from musiclens.organism.pipeline import OrganismEvalConfig, evaluate

    with tempfile.TemporaryDirectory() as tmp:
        cfg = OrganismEvalConfig(model=a.model or str(organism_path()), run=a.run, corpus=a.corpus, out=str(Path(tmp) / "eval.json"), what=a.what,
                                 n_codec=a.n_codec, n_prompts=a.n_prompts, n_uncond=a.n_uncond, seconds=a.seconds,
                                 guidance=a.guidance, top_k=a.top_k, temperature=a.temperature, seed=a.seed, tagger=a.tagger, split=a.split,
                                 reference=not a.no_reference)
        res = evaluate(cfg)
    if "codec" in res:
        write_result(codec_name, {"model": res["model"], **res["codec"]})
    if "generation" in res:
        write_result(name, {"model": res["model"], "tagger": res["tagger"], "eval_seconds": res["eval_seconds"],
                            "teacher_forced": res.get("teacher_forced"), **res["generation"]})
    if not a.no_card and default and name == "organism":
        write_card()


if __name__ == "__main__":
    main()
