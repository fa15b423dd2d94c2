"""`musiclens organism train|eval|export|reconstruct|pack|pack-lm`: reproduce, measure and ship the organism."""

from __future__ import annotations

import json


def register(sub) -> None:
    from ..config import add_arguments
    from ..organism.pipeline import OrganismEvalConfig, OrganismExportConfig, OrganismTrainConfig
    from ..organism.pack import PackConfig, PackLMConfig
    from ..organism.reconstruct import ReconstructConfig

    p = sub.add_parser("organism", help="train, evaluate or export the organism (musiclens's own MusicGen)")
    osub = p.add_subparsers(dest="organism_command", metavar="<action>")
    t = osub.add_parser("train", help="train codec and language model on a rendered corpus",
                        description="Stages: codec (EnCodec: data-dependent init, k-means codebooks, EMA VQ, dead-code restarts), "
                                    "decoder (the codec's decoder fine-tuned with an STFT discriminator, codes "
                                    "frozen), codes (encode the corpus + MiniLM caption states once), lm (MusicGen "
                                    "decoder), tune (the decoder fine-tuned with a caption-contrast loss "
                                    "so that it follows tempo, register, dynamics and drums words). Each stage checkpoints every few minutes; --minutes M stops "
                                    "each stage after M minutes and --resume continues. Uses a GPU when "
                                    "available (--device auto).")
    add_arguments(t, OrganismTrainConfig)
    t.set_defaults(func=_train)
    e = osub.add_parser("eval", help="codec fidelity and prompt adherence of an organism",
                        description="Writes a JSON file with codec fidelity (mel distance, SI-SDR, onset "
                                    "rate, centroid, RMS, pitch, tagger agreement) and the generation "
                                    "metrics of issue 3 on test-split captions.")
    add_arguments(e, OrganismEvalConfig)
    e.set_defaults(func=_eval)
    x = osub.add_parser("export", help="copy a run's current model into a shippable HF folder",
                        description="Default destination: the package's shipped organism "
                                    "(musiclens/assets/organism/musicgen).")
    add_arguments(x, OrganismExportConfig)
    x.set_defaults(func=_export)
    r = osub.add_parser("reconstruct", help="the corpus as the organism's codec hears it (encode + decode)",
                        description="Writes a corpus-format folder (audio/ + metadata.jsonl) of codec "
                                    "reconstructions, for listening and for `musiclens tagger eval|train`: "
                                    "what the codec erases, no generation can contain. Resumable.")
    add_arguments(r, ReconstructConfig)
    r.set_defaults(func=_reconstruct)
    k = osub.add_parser("pack", help="a size-capped Opus copy of the corpus, to train the codec on a lent GPU",
                        description="Writes a corpus-format folder of the first S seconds of train clips "
                                    "(seeded random order) as Ogg Opus, up to --max-mb, plus 16 valid clips: "
                                    "what a GPU machine without FluidSynth and with a 64 MiB transfer limit "
                                    "needs for `organism train --stage codec` (docs/organism.md).")
    add_arguments(k, PackConfig)
    k.set_defaults(func=_pack)
    m = osub.add_parser("pack-lm", help="codes, codec and a trimmed MiniLM, to train the LM on a lent GPU",
                        description="Writes what `tools/device_lm.sh` needs to run the text, lm and tune stages "
                                    "on a GPU machine without the MiniLM package and with a 64 MiB transfer "
                                    "limit: RUN's codes, its codec in float16, and a float16 MiniLM that keeps "
                                    "only the word embeddings the corpus's captions and their flips use.")
    add_arguments(m, PackLMConfig)
    m.set_defaults(func=_pack_lm)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _train(args) -> int:
    from ..config import from_args
    from ..organism.pipeline import OrganismTrainConfig, train

    summary = train(from_args(OrganismTrainConfig, args))
    for stage, s in summary.items():
        print(f"{stage}: {json.dumps(s)}")
    return 0


def _reconstruct(args) -> int:
    from ..config import from_args
    from ..organism.reconstruct import ReconstructConfig, reconstruct

    cfg = from_args(ReconstructConfig, args)
    s = reconstruct(cfg)
    print(f"wrote {s['clips']} clips ({s['reconstructed_now']} new, {s['seconds_each']:.2f} s each) to {cfg.out}")
    return 0


def _pack(args) -> int:
    from ..config import from_args
    from ..organism.pack import PackConfig, pack

    cfg = from_args(PackConfig, args)
    s = pack(cfg)
    print(f"wrote {s['clips']} clips {s['per_split']} of {s['seconds']:g} s, {s['mib']} MiB "
          f"({s['kib_per_clip']} KiB a clip, {s['format']}) to {cfg.out}; the next shard: --skip {s['next_skip']}")
    return 0


def _pack_lm(args) -> int:
    from ..config import from_args
    from ..organism.pack import PackLMConfig, pack_lm

    cfg = from_args(PackLMConfig, args)
    s = pack_lm(cfg)
    print(f"wrote {cfg.out}: codes of {s['clips']} clips, codec, MiniLM ({s['kept_tokens']} token rows kept, "
          f"{s['minilm_mib']} MiB)" + (f", the LM of {s['init']} ({s['init_mib']} MiB)" if "init" in s else "")
          + f"; {s['mib']} MiB in all")
    return 0


def _eval(args) -> int:
    from ..config import from_args
    from ..organism.pipeline import OrganismEvalConfig, evaluate

    cfg = from_args(OrganismEvalConfig, args)
    res = evaluate(cfg)
    gen = res.get("generation", {})
    print(f"wrote {cfg.out}")
    if "codec" in res:
        c = res["codec"]
        print(f"codec: log-mel L1 {c['log_mel_l1']:.3f}, SI-SDR {c['si_sdr_db']:.1f} dB (n={c['n']})")
    for k in ("instrument", "drums", "tempo", "register", "brightness", "dynamics", "fad"):
        if k in gen:
            v = {kk: vv for kk, vv in gen[k].items() if kk != "per_clip"} if isinstance(gen[k], dict) else gen[k]
            print(f"{k}: {json.dumps(v)[:300]}")
    return 0


def _export(args) -> int:
    from ..config import from_args
    from ..organism.pipeline import OrganismExportConfig, export

    print(f"organism written to {export(from_args(OrganismExportConfig, args))}")
    return 0
