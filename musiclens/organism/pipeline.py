"""The three organism jobs behind `musiclens organism train|eval|export`.

`train` runs the stages codec -> decoder -> codes -> lm -> tune into one run
directory (`decoder` fine-tunes the codec's decoder with a linear-frequency
STFT loss, codes frozen, see polish.py; `tune` fine-tunes the LM with the
caption-contrast loss, see lm.py); each
stage is resumable (`--resume`) and stops after `--minutes` so a 4-hour
CPU schedule can be split over sittings. `export` copies the run's current
LM folder (codec + decoder + projection, no MiniLM) into a shippable folder
with a model card. `eval` measures codec fidelity and prompt adherence.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from ..config import check_values, option, save_config
from ..errors import MusiclensError
from ..io import write_json
from ..models import organism as O


def pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MusiclensError("--device cuda asked for, but no CUDA GPU is available")
    if name.startswith("cuda"):  # TF32 matmuls and convs: several times faster, ample for training these models
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return name


@dataclasses.dataclass
class OrganismTrainConfig:
    """Options of `musiclens organism train` (saved as RUN/config.json)."""

    corpus: str = option("data/corpus", "rendered corpus directory (`musiclens corpus render`)")
    out: str = option("runs/organism", "run directory (checkpoints, codes, logs, HF exports)")
    stage: str = option("all", "which stage(s) to run (`text` alone re-encodes RUN/codes' captions; `all` "
                               "runs codec, decoder, codes, lm, tune)", choices=["codec", "decoder", "codes", "text", "lm", "tune", "all"])
    minutes: float | None = option(None, "stop each stage after this many minutes (resume later with --resume)", gt=0)
    resume: bool = option(False, "continue from the run directory's checkpoints")
    device: str = option("auto", "cpu, cuda, or auto (GPU when available)")
    schedule_minutes: float = option(0.0, "span the LR schedule of the stage(s) trained (codec, decoder, lm, tune) over this "
                                          "many minutes of training each, instead of their step counts, and stop "
                                          "when they are spent (0 = by steps): for a machine whose speed is not "
                                          "known in advance, such as one lent GPU call", ge=0)
    codec_steps: int = option(14000, "codec optimiser steps (shipped run: 14000, ~40 min on 2 CPU cores)", ge=1)
    codec_batch_size: int = option(8, "codec crops per step", ge=1)
    codec_crop_seconds: float = option(0.5, "length of each codec training crop (shipped: 0.5 s)", gt=0)
    codec_filters: int = option(16, "EnCodec num_filters of a new codec (its width; shipped: 16)", ge=1)
    codec_causal: bool = option(False, "train a new codec with causal convolutions, so the codes before a hit do "
                                       "not announce it (shipped: non-causal; docs/organism.md, \"Why the LM loses "
                                       "a beat it is given\")")
    codec_w_adv: float = option(0.0, "adversarial loss weight of codec training (0 = off, as shipped; e.g. 0.2 "
                                     "with --codec-w-feat 0.5 for a GPU run, see docs/organism.md)", ge=0)
    codec_w_feat: float = option(0.0, "feature-matching loss weight of codec training (0 = off)", ge=0)
    codec_w_stft: float = option(0.0, "linear-frequency log-STFT loss weight of codec training (0 = off, as "
                                      "shipped)", ge=0)
    decoder_steps: int = option(20000, "steps of the decoder stage: the codec's decoder fine-tuned on frozen codes "
                                       "(0 = skip; shipped: 20,000 steps with --decoder-w-stft 2, ~40 min on 2 CPU "
                                       "cores; see docs/organism.md)", ge=0)
    decoder_lr: float = option(3e-4, "peak learning rate of the decoder stage", gt=0)
    decoder_w_adv: float = option(0.0, "adversarial loss weight of the decoder stage (0 = off, as shipped; up to "
                                       "5,010 adversarial steps on CPU made every tagger head worse)", ge=0)
    decoder_w_feat: float = option(0.0, "feature-matching loss weight of the decoder stage (0 = off, as shipped)",
                                   ge=0)
    decoder_w_tagger: float = option(0.0, "tagger-feature (perceptual) loss weight of the decoder stage (0 = off; "
                                          "the shipped codec's last stage: 6; needs --decoder-tagger)", ge=0)
    decoder_tagger: str = option("", "tagger folder for the decoder stage's tagger-feature loss (one trained apart "
                                     "from the shipped tagger, which judges the figures)")
    decoder_w_stft: float = option(2.0, "linear-frequency log-STFT loss weight of the decoder stage (shipped: 2)", ge=0)
    decoder_w_onset: float = option(1.0, "onset-envelope loss weight of the decoder stage (shipped: 1)", ge=0)
    decoder_crop_seconds: float = option(0.5, "length of each decoder-stage training crop (shipped: 0.5 s; crops per "
                                              "step: --codec-batch-size)", gt=0)
    decoder_filters: int = option(0, "widen the codec to this many filters before the decoder stage, keeping its "
                                     "codes and its audio at step 0 (organism/widen.py; 0 = keep the width)", ge=0)
    lm_steps: int = option(9000, "language-model optimiser steps (shipped run: 8715 of 9000, ~66 min on 2 CPU "
                                 "cores)", ge=1)
    lm_batch_size: int = option(8, "language-model clips per step", ge=1)
    lm_layers: int = option(8, "decoder layers", ge=1)
    lm_d_model: int = option(128, "decoder width (heads = width / 32, ffn = 4 x width)", ge=32)
    lm_dropout: float = option(0.0, "decoder dropout (shipped 128-wide LM: 0; it saw each crop a few times)",
                               ge=0, lt=1)
    lm_eval_every: int = option(200, "steps between held-out evaluations of the lm and tune stages", ge=1)
    tune_steps: int = option(5500, "caption-contrast fine-tuning steps from the LM's weights (0 = skip the "
                                   "stage; shipped run: 3,500 steps, extended to 5,500 with --resume, ~78 min "
                                   "on 2 CPU cores)", ge=0)
    tune_lr: float = option(5e-4, "peak learning rate of the fine-tuning (0 keeps the weights)", ge=0)
    lm_lr: float = option(1.5e-3, "peak learning rate of the lm stage (linear warm-up, cosine decay to 10%)", ge=0)
    lm_init: str = option("", "LM checkpoint or organism HF folder the lm stage starts from, with a fresh "
                              "optimiser and schedule: train an LM longer where its checkpoint stayed behind "
                              "(tools/device_lm.sh with a pack-lm --init pack)")
    tune_init: str = option("", "LM checkpoint or organism HF folder the tune stage starts from (default: "
                                "RUN/lm/ckpt.pt); e.g. another run's tune/ckpt.pt, to continue fine-tuning on a "
                                "larger corpus, or a GPU run's returned tune/hf")
    contrast_weight: float = option(1.0, "weight of the caption-contrast hinge during fine-tuning", ge=0)
    contrast_margin: float = option(0.1, "nats per token a clip's own caption must beat each flipped one by (the "
                                         "hinge is 0 beyond it)", ge=0)
    contrast_concepts: str = option("tempo,drums,register,dynamics", "concepts the hinge flips (comma-separated, "
                                                                     "see organism/sensitivity.py; the shipped "
                                                                     "continuation adds brightness)")
    lm_first_codebook_weight: float = option(1.0, "weight of the first codebook's tokens in the lm and tune "
                                                  "stages' LM loss (1 = the plain mean, as shipped)", gt=0)
    beat_weight: float = option(0.0, "weight of the beat-contrast hinge in the lm and tune stages (0 = off, as "
                                     "shipped): a drum clip continued after a cut must be less likely a sixteenth "
                                     "note off the beat than on it (organism/rhythm.py; docs/organism.md)", ge=0)
    beat_margin: float = option(0.15, "nats per token the on-beat continuation must beat the off-grid ones by", ge=0)
    beat_phase_weight: float = option(0.0, "weight of the beat-phase loss in the lm and tune stages (0 = off): a "
                                           "training-only head on the decoder's last hidden state regresses where "
                                           "each frame falls in the beat and the bar, from the corpus's known grid "
                                           "(organism/beatphase.py; docs/organism.md); the head is not exported",
                                      ge=0)
    beat_codebooks: str = option("all", "tokens the beat hinge compares: every codebook's (as tried in session 18) "
                                        "or the first codebook's alone, where the beat is lost",
                                 choices=["all", "first"])
    beat_train: str = option("both", "which side of the beat hinge trains: both (sessions 18 and 23; session 23's "
                                     "was met by making every continuation after a cut less likely) or on_beat "
                                     "alone (the off-grid losses held fixed: only the on-beat continuation can "
                                     "become likelier)", choices=["both", "on_beat"])
    contrast_flips: str = option("opposite", "flip a concept's words to its opposite value (shipped) or to every "
                                             "other value, middle ones included", choices=["opposite", "all"])
    lm_input_noise: float = option(0.0, "share of the codes the lm and tune stages' decoder reads that are replaced "
                                        "while the targets stay real (0 = off, as shipped): training on imperfect "
                                        "pasts against exposure bias (organism/lm.py corrupt_inputs; "
                                        "docs/organism.md)", ge=0, le=0.5)
    lm_input_noise_kind: str = option("sampled", "what replaces a corrupted code: the LM's own sample (parallel "
                                                 "scheduled sampling), a uniformly random code, or (stale) "
                                                 "the same clip's real code 2-12 frames earlier",
                                      choices=["sampled", "uniform", "stale"])
    lm_input_noise_span: int = option(1, "corrupt whole frames in runs of this many frames instead of scattered "
                                         "codes (1 = scattered)", ge=1, le=100)
    codes_seconds: float | None = option(6.4, "encode only each clip's first S seconds for the LM (encoding is "
                                              "slow on CPU)", gt=0)
    seed: int = option(0, "random seed")


def _lm_config(cfg: OrganismTrainConfig, **stage):
    """The lm or tune stage's LMTrainConfig: the options both stages share, plus `stage`'s own.

    One place, so an LM option added to `organism train` reaches both stages (heads = width / 32,
    ffn = 4 x width).
    """
    from .lm import LMTrainConfig

    return LMTrainConfig(budget_minutes=cfg.schedule_minutes, batch_size=cfg.lm_batch_size, layers=cfg.lm_layers,
                         d_model=cfg.lm_d_model, heads=cfg.lm_d_model // 32, ffn=4 * cfg.lm_d_model,
                         dropout=cfg.lm_dropout, eval_every=cfg.lm_eval_every,
                         first_codebook_weight=cfg.lm_first_codebook_weight, beat_weight=cfg.beat_weight,
                         beat_phase_weight=cfg.beat_phase_weight,
                         beat_margin=cfg.beat_margin, beat_codebooks=cfg.beat_codebooks, beat_train=cfg.beat_train,
                         input_noise=cfg.lm_input_noise, input_noise_kind=cfg.lm_input_noise_kind,
                         input_noise_span=cfg.lm_input_noise_span, **stage)


def train(cfg: OrganismTrainConfig) -> dict:
    from .codec import CodecTrainConfig, train_codec
    from .codes import precompute
    from .lm import train_lm

    check_values(cfg)  # (from_args did; a config built in Python gets the same one-line errors)
    corpus, out = Path(cfg.corpus), Path(cfg.out)
    device = pick_device(cfg.device)
    if not corpus.is_dir():
        raise MusiclensError(f"corpus directory not found: {corpus}")
    # option errors before anything is written to --out
    if cfg.tune_init and not Path(cfg.tune_init).exists():
        raise MusiclensError(f"no LM checkpoint to fine-tune in {cfg.tune_init}: check --tune-init")
    if cfg.lm_init and not Path(cfg.lm_init).exists():
        raise MusiclensError(f"no LM checkpoint to continue in {cfg.lm_init}: check --lm-init")
    if cfg.stage == "decoder" and cfg.decoder_steps <= 0:
        raise MusiclensError("--stage decoder needs --decoder-steps N (N > 0)")
    if cfg.lm_d_model % 32:
        raise MusiclensError(f"--lm-d-model must be a multiple of 32 (heads = width / 32), got {cfg.lm_d_model}")
    stages = ["codec", "decoder", "codes", "lm", "tune"] if cfg.stage == "all" else [cfg.stage]
    if {"codec", "decoder", "codes"} & set(stages):  # the stages that read audio (lm and tune read RUN's codes)
        from .data import read_metadata

        read_metadata(corpus)  # "not a corpus" before --out is made
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.json")
    summary = {}
    if "codec" in stages:
        ccfg = CodecTrainConfig(steps=cfg.codec_steps, budget_minutes=cfg.schedule_minutes,
                                batch_size=cfg.codec_batch_size, crop_seconds=cfg.codec_crop_seconds,
                                num_filters=cfg.codec_filters, causal=cfg.codec_causal,
                                w_adv=cfg.codec_w_adv, w_feat=cfg.codec_w_feat, w_stft=cfg.codec_w_stft,
                                seed=cfg.seed)
        summary["codec"] = train_codec(ccfg, corpus, out, cfg.minutes, cfg.resume, device)
        if not summary["codec"]["done"] and cfg.stage == "all":
            return summary  # out of minutes: continue later with --resume
    if "decoder" in stages and cfg.decoder_steps > 0:
        from .polish import PolishConfig, train_decoder

        pcfg = PolishConfig(steps=cfg.decoder_steps, budget_minutes=cfg.schedule_minutes, batch_size=cfg.codec_batch_size, lr=cfg.decoder_lr,
                            crop_seconds=cfg.decoder_crop_seconds, w_onset=cfg.decoder_w_onset,
                            w_adv=cfg.decoder_w_adv, w_feat=cfg.decoder_w_feat, w_stft=cfg.decoder_w_stft,
                            w_tagger=cfg.decoder_w_tagger, tagger=cfg.decoder_tagger,
                            num_filters=cfg.decoder_filters, seed=cfg.seed)
        summary["decoder"] = train_decoder(pcfg, corpus, out, cfg.minutes, cfg.resume, device)
        if not summary["decoder"]["done"] and cfg.stage == "all":
            return summary
    if "codes" in stages:
        if not (corpus / "metadata.jsonl").exists():
            raise MusiclensError(f"the corpus at {corpus} is not complete yet (no metadata.jsonl)")
        summary["codes"] = precompute(corpus, out, device, resume=cfg.resume, max_seconds=cfg.codes_seconds,
                                      splits=("train", "valid"), minutes=cfg.minutes)
        if not summary["codes"].get("done", True):  # (indexes written before resumable encoding lack "done")
            return summary  # out of minutes: continue later with --resume
    if "text" in stages:
        from .codes import encode_captions

        summary["text"] = encode_captions(out, device)
    if "lm" in stages:
        lcfg = _lm_config(cfg, steps=cfg.lm_steps, lr=cfg.lm_lr, seed=cfg.seed,
                          init=str(Path(cfg.lm_init).resolve()) if cfg.lm_init else "")
        summary["lm"] = train_lm(lcfg, out, cfg.minutes, cfg.resume, device)
        if not summary["lm"]["done"] and cfg.stage == "all":
            return summary
    if "tune" in stages and cfg.tune_steps > 0:
        # another run's checkpoint is recorded as an absolute path: export follows it to show the lineage
        init = Path(cfg.tune_init).resolve() if cfg.tune_init else out / "lm" / "ckpt.pt"
        if not init.exists():  # (--tune-init was checked above)
            raise MusiclensError(f"no LM checkpoint to fine-tune in {init}: run the lm stage first")
        tcfg = _lm_config(cfg, steps=cfg.tune_steps, lr=cfg.tune_lr, seed=cfg.seed + 1, init=str(init),
                          contrast_weight=cfg.contrast_weight, contrast_margin=cfg.contrast_margin,
                          contrast_concepts=cfg.contrast_concepts, contrast_flips=cfg.contrast_flips)
        summary["tune"] = train_lm(tcfg, out, cfg.minutes, cfg.resume, device, subdir="tune")
    return summary


@dataclasses.dataclass
class OrganismEvalConfig:
    """Options of `musiclens organism eval`."""

    model: str = option("", "organism HF folder to evaluate (default: the shipped one, or RUN/lm/hf with --run)")
    run: str = option("", "run directory: evaluate its current LM export and codec")
    corpus: str = option("data/corpus", "rendered corpus (test split captions and clips)")
    out: str = option("organism_eval.json", "JSON file to write")
    what: str = option("all", "codec fidelity, generation metrics, or both", choices=["codec", "generation", "all"])
    n_codec: int = option(40, "held-out clips for codec fidelity", ge=0)
    n_prompts: int = option(64, "captions to generate from", ge=0)
    split: str = option("test", "split the captions come from: test for reported figures, valid for choosing "
                                "a checkpoint or guidance scale", choices=["test", "valid"])
    n_uncond: int = option(16, "unconditional generations for FAD", ge=0)
    seconds: float = option(6.0, "seconds per generated clip", gt=0)
    guidance: float = option(3.0, "classifier-free guidance scale")
    top_k: int = option(0, "sample from the k most likely codes (0 = the model's generation_config, 250 shipped)", ge=0)
    temperature: float = option(1.0, "sampling temperature", gt=0)
    seed: int = option(0, "random seed")
    tagger: str = option("", "tagger folder for the instrument / drums figures (default: the shipped tagger); "
                             "e.g. one trained on `organism reconstruct` output, which hears through the codec")
    reference: bool = option(True, "also measure the real clips the captions were written from, as rendered and "
                                   "through the codec: each figure's ground truth on the same draw")


def evaluate(cfg: OrganismEvalConfig) -> dict:
    from .data import load_clips, read_metadata
    from .evaluate import codec_fidelity, generation_eval, load_tagger

    check_values(cfg)
    folder = Path(cfg.model) if cfg.model else (Path(cfg.run) / "lm" / "hf" if cfg.run else O.organism_path())
    model, tok = O.load_organism_hf("cpu", folder)
    corpus = Path(cfg.corpus)
    rows = read_metadata(corpus)
    tagger = load_tagger(cfg.tagger or None)
    res: dict = {"model": str(folder), "tagger": (cfg.tagger or "shipped") if tagger is not None else False}
    t0 = time.time()
    if cfg.what in ("codec", "all"):
        test = load_clips(corpus, ("test",), O.SAMPLE_RATE, rows=rows, limit=cfg.n_codec)
        res["codec"] = codec_fidelity(model.audio_encoder, test, cfg.n_codec, tagger)
    if cfg.run and (Path(cfg.run) / "codes" / "index.json").exists():
        from .lm import CodeData, conditioning_gap
        from .rhythm import beat_splice_gap
        from .sensitivity import concept_sensitivity

        data = CodeData(Path(cfg.run))
        res["teacher_forced"] = conditioning_gap(model, data, data.indices("valid")[:128], 300)
        res["teacher_forced"]["per_concept"] = concept_sensitivity(model, data, data.indices("valid")[:200], 100)
        res["teacher_forced"]["beat"] = beat_splice_gap(model, data, data.indices("valid")[:200])
    if cfg.what in ("generation", "all"):
        probe = None
        if cfg.run and (Path(cfg.run) / "codes" / "index.json").exists():
            from .codeprobe import train_code_probe

            probe = train_code_probe(cfg.run, model.audio_encoder, seed=cfg.seed)
        res["generation"] = generation_eval(model, tok, rows, cfg.n_prompts, cfg.n_uncond, cfg.seconds, cfg.seed,
                                            cfg.guidance, tagger, corpus, code_probe=probe, split=cfg.split,
                                            top_k=cfg.top_k or None, temperature=cfg.temperature,
                                            reference=cfg.reference)
    res["eval_seconds"] = round(time.time() - t0, 1)
    write_json(cfg.out, res)
    return res


@dataclasses.dataclass
class OrganismExportConfig:
    """Options of `musiclens organism export`."""

    run: str = option("runs/organism", "run directory whose current LM export is shipped")
    out: str = option("", "destination folder (default: the package's shipped organism folder)")
    corpus: str = option("data/corpus", "the corpus it was trained on (summarised in the model card)")
    lm: str = option("auto", "which LM to ship: the fine-tuned one (RUN/tune), the base one (RUN/lm), or auto "
                             "(tune when it exists)", choices=["auto", "tune", "lm"])
    dtype: str = option("lossless", "precision of the shipped weights: lossless = float16 for each tensor that "
                                    "float16 holds exactly, float32 for the rest (an LM trained on a GPU in "
                                    "float16 ships at half its size with the same values; a CPU-trained codec "
                                    "stays float32); float16 rounds everything (bench/export_dtype.py measures "
                                    "what that does to the codec); float32 as trained. `load_model` and plain "
                                    "`from_pretrained` load any of them into float32",
                        choices=["lossless", "float16", "float32"])


def _corpus_summary(corpus: Path) -> dict | None:
    import collections

    from .data import read_metadata

    try:
        rows = read_metadata(corpus)
    except MusiclensError:
        return None
    cfg = json.loads((corpus / "config.json").read_text()) if (corpus / "config.json").exists() else {}
    return {"clips": len(rows), "hours": round(sum(r.get("seconds", 0) for r in rows) / 3600, 2),
            "split": dict(collections.Counter(r["split"] for r in rows)),
            "sources": len({r.get("source") for r in rows}), "seed": cfg.get("seed"),
            "sample_rate": cfg.get("sample_rate"), "example_captions": [r["caption"] for r in rows[:4]]}


def decoder_chain(run: Path) -> list[Path]:
    """The earlier decoder stages of a run, oldest first: RUN/decoder_init, RUN/decoder_init2, ...

    Each stage started from the one before's codec (e.g. widened, then continued); RUN/decoder is
    the last. Keeping them in the run lets the exported card list every stage and its command.
    """
    chain = []
    while (run / decoder_init_name(len(chain))).is_dir():
        chain.append(run / decoder_init_name(len(chain)))
    return chain


def decoder_init_name(i: int) -> str:
    """The folder (and training/ prefix) of the i-th earlier decoder stage: decoder_init, decoder_init2, ..."""
    return f"decoder_init{i + 1 if i else ''}"


def _stage_tagger(stage: Path) -> Path | None:
    """The train_config.json of the tagger a decoder stage's tagger-feature loss used, if it is still there."""
    cfg = stage / "config.json"
    tagger = json.loads(cfg.read_text()).get("tagger") if cfg.exists() else None
    found = Path(tagger) / "train_config.json" if tagger else None
    return found if found is not None and found.exists() else None


def _tune_base(run: Path) -> tuple[Path | None, bool]:
    """(the run this run's tune stage started from, whether it continued that run's fine-tuning).

    `--tune-init OTHER/tune/ckpt.pt` continues OTHER's fine-tuning; `OTHER/lm/ckpt.pt` fine-tunes
    OTHER's LM. The card then shows the whole lineage: OTHER's codec and LM (and first
    fine-tuning), then this run's stage (e.g. on a larger corpus). (None, False) for a run's own LM.
    """
    tcfg = run / "tune" / "config.json"
    init = json.loads(tcfg.read_text()).get("init") if tcfg.exists() else None
    if not init:
        return None, False
    init = Path(init)
    base = init.parent.parent
    if init.parent.name not in ("tune", "lm") or base.resolve() == run.resolve():
        return None, False
    return base, init.parent.name == "tune"


def export(cfg: OrganismExportConfig) -> Path:
    """Copy RUN/tune/hf or RUN/lm/hf (+ training logs) to the destination; write the model card from measured files."""
    import shutil

    from ..io import atomic_dir
    from .card import write_card

    which = cfg.lm
    if which == "auto":
        which = "tune" if (Path(cfg.run) / "tune" / "hf" / "model.safetensors").exists() else "lm"
    src = Path(cfg.run) / which / "hf"
    if not (src / "model.safetensors").exists():
        raise MusiclensError(f"no LM export in {src}: train first (`musiclens organism train`)")
    from .pack import set_export_dtype

    dst = Path(cfg.out) if cfg.out else O.organism_path()
    run = Path(cfg.run)
    base, continued = _tune_base(run) if which == "tune" else (None, False)
    with atomic_dir(dst, overwrite=True) as tmp:
        for f in src.iterdir():
            shutil.copy2(f, tmp / f.name)
        set_export_dtype(tmp, cfg.dtype)
        size = sum(f.stat().st_size for f in tmp.iterdir() if f.is_file())
        if size > 60e6:
            raise MusiclensError(f"the organism in {src} is {size / 1e6:.1f} MB in {cfg.dtype}, over the 60 MB budget")
        (tmp / "training").mkdir()
        # (stage folder, name in training/): a stage this run did not train comes from the run it started from
        logs = [(run / s if (run / s).is_dir() or base is None else base / s, s) for s in ("codec", "decoder", "lm")]
        # the decoder stages this run's codec came from, oldest first: decoder_init, decoder_init2, ...
        logs += [(d, d.name) for d in decoder_chain(run)]
        if which == "tune":
            logs.append((run / "tune", "tune"))
            if continued:
                logs.append((base / "tune", "tune_init"))
        for folder, stage in logs:
            for name in ("config.json", "progress.json", "log.jsonl"):
                p = folder / name
                if p.exists():
                    shutil.copy2(p, tmp / "training" / f"{stage}_{name}")
            tagger = _stage_tagger(folder)
            if tagger is not None:  # the tagger a decoder stage's tagger-feature loss read: how it was trained
                shutil.copy2(tagger, tmp / "training" / f"{stage}_tagger_train_config.json")
        for r, prefix in [(run, "")] + ([(base, "tune_init_")] if continued else []):
            idx = r / "codes" / "index.json"
            if idx.exists():
                write_json(tmp / "training" / f"{prefix}codes_summary.json", json.loads(idx.read_text())["summary"])
        summary = _corpus_summary(Path(cfg.corpus))
        if summary:
            write_json(tmp / "training" / "corpus.json", summary)
    write_card(dst)
    return dst
