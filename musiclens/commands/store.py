"""`musiclens store info|verify STORE`: inspect and check an activation store.

`verify` recomputes every shard's sha256 and checks row counts, shapes and the
clip table against the manifest, so a copied or half-synced store is caught
before hours of SAE training read garbage. It exits 1 (one line per problem)
when anything is wrong.
"""

from __future__ import annotations

import json
import sys

from ..errors import MusiclensError


def _info(args) -> int:
    from ..store import store_summary

    s = store_summary(args.store)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    size = s["bytes"] / 2**20
    print(f"store      {s['path']}  ({'complete' if s['complete'] else 'INCOMPLETE: rerun with --resume'})")
    print(f"model      {s['model_name']}  (weights {str(s['weights_hash'])[:16]})")
    print(f"layers     {','.join(map(str, s['layers']))}  d_model {s['d_model']}  dtype {s['dtype']}")
    print(f"rows       {s['rows']}  clips {s['clips']}  shards {s['shards']}  ({size:.1f} MiB)")
    print(f"skipped    {s['skipped']} inputs (see skipped.json)")
    for k, v in sorted(s["meta"].items()):
        print(f"meta.{k:<9} {v}")
    return 0


def _verify(args) -> int:
    from pathlib import Path

    from ..store import verify_store

    if not Path(args.store).exists():
        raise MusiclensError(f"activation store not found: {args.store}")
    problems = verify_store(args.store)
    for p in problems:
        print(f"{args.store}: {p}", file=sys.stderr)
    if problems:
        return 1
    from ..store import store_summary

    s = store_summary(args.store)
    print(f"ok: {s['shards']} shards, {s['rows']} rows, {s['clips']} clips, all sha256 and row counts match")
    return 0


def register(sub) -> None:
    p = sub.add_parser("store", help="inspect or verify an activation store",
                       description="Inspect (info) or check (verify) an activation store written by `musiclens extract`.")
    ssub = p.add_subparsers(dest="store_command", metavar="<info|verify>", required=True)
    pi = ssub.add_parser("info", help="print the store's model, layers, rows, clips, shards",
                         description="Print a store's manifest summary (reads no shard data).")
    pi.add_argument("store", help="store directory")
    pi.add_argument("--json", action="store_true", help="print the summary as JSON")
    pi.set_defaults(func=_info)
    pv = ssub.add_parser("verify", help="recompute every sha256 and check row counts (exit 1 on problems)",
                         description="Recompute every shard's sha256 and check row counts, shapes and the clip "
                                     "table. Exit 0 if sound, 1 with one line per problem otherwise.")
    pv.add_argument("store", help="store directory")
    pv.set_defaults(func=_verify)
