"""`musiclens tagger train|eval`: the organism's attribute tagger (instrument, drums, brightness, ...)."""

from __future__ import annotations

import argparse
from collections import Counter


def register(sub) -> None:
    from ..config import add_arguments
    from ..measure.tagger import TaggerConfig

    p = sub.add_parser("tagger", help="train or evaluate the attribute tagger (a CNN on log-mel)")
    tsub = p.add_subparsers(dest="tagger_command", metavar="<action>")
    t = tsub.add_parser("train", help="train the tagger on a rendered corpus",
                        description="Train the attribute CNN on the corpus train split; writes a tagger folder "
                                    "(config.json + model.safetensors) and metrics.json (test accuracy per head).")
    add_arguments(t, TaggerConfig)
    t.set_defaults(func=_train)
    e = tsub.add_parser("eval", help="accuracy per head of a tagger on a corpus split")
    e.add_argument("--corpus", required=True, help="rendered corpus directory")
    e.add_argument("--tagger", default=None, help="tagger folder (default: the shipped organism tagger)")
    e.add_argument("--split", default="test", choices=["train", "valid", "test"], help="split (default: test)")
    e.add_argument("--limit", type=int, default=0, help="evaluate at most this many clips (0 = all)")
    e.add_argument("--out", default=None, help="also write the accuracies to this JSON file")
    e.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=False,
                   help="replace an existing --out file (default: False)")
    e.set_defaults(func=_eval)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _print_acc(acc: dict) -> None:
    for h, v in acc.items():
        print(f"  {h:<11} accuracy {v['accuracy']:.3f}  (chance {v['chance']:.3f}, n={v['n']})")


def _train(args) -> int:
    from ..config import from_args
    from ..measure.tagger import TaggerConfig, train_tagger

    cfg = from_args(TaggerConfig, args)
    m = train_tagger(cfg)
    print(f"tagger {cfg.out}: {m['epochs_done']}/{m['epochs']} epochs in {m['train_cpu_minutes']} CPU min; "
          f"{m['eval_split']} accuracy:")
    _print_acc(m["accuracy"])
    return 0


def _eval(args) -> int:
    import soundfile as sf
    from tqdm import tqdm

    from ..corpus import load_metadata
    from ..errors import MusiclensError
    from ..io import write_json
    from ..measure.tagger import Tagger

    from pathlib import Path

    if args.limit < 0:
        raise MusiclensError(f"--limit must be >= 0 (0 = all), got {args.limit}")
    if args.out and Path(args.out).exists() and not args.overwrite:
        raise MusiclensError(f"output exists: {args.out} (use --overwrite)")
    tagger = Tagger.load(args.tagger)
    recs = [r for r in load_metadata(args.corpus) if r["split"] == args.split]
    if args.limit > 0:
        recs = recs[:args.limit]
    if not recs:
        raise MusiclensError(f"no {args.split} clips in {args.corpus}")
    correct = {h: 0 for h in tagger.heads}
    confusion: dict = {h: {} for h in tagger.heads}  # head -> true label -> predicted label -> count
    for i in tqdm(range(0, len(recs), 16), desc="tagging", unit="batch", disable=None):
        chunk = recs[i:i + 16]
        clips, srs = zip(*(sf.read(str(Path(args.corpus) / r["path"]), dtype="float32") for r in chunk))
        preds = tagger.predict_batch(list(clips), srs[0])
        for r, p in zip(chunk, preds):
            for h in tagger.heads:
                correct[h] += int(p[h] == r.get(h))
                row = confusion[h].setdefault(str(r.get(h)), {})
                row[p[h]] = row.get(p[h], 0) + 1
    acc = {h: {"accuracy": round(correct[h] / len(recs), 4), "chance": round(1 / len(tagger.heads[h]), 4),
               "n": len(recs), "confusion": confusion[h]} for h in tagger.heads}
    print(f"{args.split} split of {args.corpus}:")
    _print_acc(acc)
    for h in tagger.heads:  # where the errors go: the labels predicted far more often than they occur
        true = {lab: sum(row.values()) for lab, row in confusion[h].items()}
        pred = Counter()
        for row in confusion[h].values():
            pred.update(row)
        over = sorted(((n - true.get(lab, 0), lab, n) for lab, n in pred.items()), reverse=True)
        if over and over[0][0] > 0.1 * len(recs):
            print(f"  {h}: most over-predicted " + ", ".join(f"{lab} ({n} predicted, {true.get(lab, 0)} true)"
                                                          for d, lab, n in over[:2] if d > 0))
    if args.out:
        write_json(args.out, acc)
    return 0
