"""Audio-latent benchmark (arXiv 2510.23802 on the organism codec): probes, control vectors, trajectories.

Stages (each reuses its output in --work when it already exists, so the
bench can be resumed):

1. clips     choose `--train-clips` train-split and `--test-clips` test-split
             clips of the rendered corpus (every n-th, deterministic), first
             `--seconds` seconds of each;
2. extract   `musiclens latent extract` through the codec (sites latent.encoder
             and latent.q0), frame labels from CREPE-tiny / RMS / centroid
             (cached by audio content in --work/label-cache);
3. grid      `musiclens latent train`: RMSNorm-L1 SAEs, widths `--expansions`
             x L1 `--l1`, plus one `--wide` cell (64x at the middle L1; CPU time
             rules out the paper's 256x here), probes per cell (+ probes on the
             raw latents), and the same on codebook 0's quantised embedding
             (raw-latent probes and one SAE cell);
4. random    the same probe table for a random-weight EnCodec and DAC
             (tiny-encodec / tiny-dac): how much of the accuracy the *trained*
             codec's latents add;
5. edit      control-vector isolation sweeps (alpha 1, 10, 20, 30) on held-out
             clips, one target class per attribute, with the best-pitch cell;
6. flow      train the small rectified-flow model on the codec's latents
             (`--flow-clips` train clips, `--flow-minutes` CPU minutes, 1
             thread) and ship it (+ the cell) to musiclens/assets/organism/flow
             when `--ship`;
7. traj      trajectories (32 steps) through the flow model for 8 prompts, and
             through a tiny random StableAudioPipeline (mechanics only);
8. musicgen  the organism MusicGen's trajectories over decoder layers and
             generated frames (logit lens into the codec latent space).

The codec: the organism's (musiclens/assets/organism/musicgen) by default, or
`--autoencoder FOLDER` (e.g. the organism run's exported codec). After the
codec's decoder or the LM changed, `--stages edit,traj,musicgen --cell
musiclens/assets/organism/flow/cell --flow musiclens/assets/organism/flow`
re-measures only what decodes audio or reads the LM, with the shipped cell
and flow (no grid, no flow training).

    python bench/latent.py [--autoencoder organism] [--train-clips 160] [--test-clips 40] [--seconds 6] [--ship]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from musiclens.bench_utils import write_result  # noqa: E402

PAPER = {
    "probe_accuracy": {"pitch": [0.75, 0.87], "loudness": [0.17, 0.63], "timbre": [0.17, 0.46]},
    "convergence_step_of_32": {"pitch": 21, "timbre": 25, "loudness": "last (32)"},
    "encoders": "DiffRhythm-VAE, EnCodec, WavTokenizer",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def choose_clips(corpus: Path, n_train: int, n_test: int, out: Path) -> Path:
    rows = [json.loads(line) for line in (corpus / "metadata.jsonl").read_text().splitlines() if line.strip()]
    pick = []
    for split, n in (("train", n_train), ("test", n_test)):
        cand = [r for r in rows if r["split"] == split]
        step = max(1, len(cand) // max(1, n))
        pick += cand[::step][:n]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(str((corpus / r["path"]).resolve()) + "\n" for r in sorted(pick, key=lambda r: r["id"])))
    return out


def extract_store(args, name: str, autoencoder: str, clips: Path, sites: list[str], labels: bool = True,
                  seconds: float | None = None) -> Path:
    from musiclens.latent.extract import LatentExtractConfig, extract

    out = args.work / name
    if (out / "manifest.json").exists() and json.loads((out / "manifest.json").read_text()).get("complete"):
        return out
    t0 = time.perf_counter()
    r = extract(LatentExtractConfig(audio=str(clips), out=str(out), autoencoder=autoencoder, sites=sites,
                                    seconds=seconds or args.seconds, labels=labels, metadata=str(args.corpus / "metadata.jsonl"),
                                    label_cache=str(args.work / "label-cache"), resume=out.exists(),
                                    batch_size=4))
    log(f"extract {name}: {r['clips']} clips, {r['rows']} rows in {time.perf_counter() - t0:.0f} s")
    return out


def grid(args, name: str, store: Path, site: str, expansions: list[int], l1: list[float], steps: int) -> dict:
    from musiclens.latent.grid import LatentTrainConfig, train_grid

    out = args.work / name
    if (out / "grid.json").exists():
        return json.loads((out / "grid.json").read_text())
    t0 = time.perf_counter()
    r = train_grid(LatentTrainConfig(store=str(store), out=str(out), site=site, expansions=expansions, l1=l1,
                                     steps=steps, batch_size=args.batch_size, lr=args.lr,
                                     probe_epochs=args.probe_epochs, probe_min_steps=args.probe_min_steps,
                                     max_train_rows=args.max_train_rows))
    r["seconds"] = round(time.perf_counter() - t0, 1)
    log(f"grid {name}: {len(r['cells'])} cells in {r['seconds']:.0f} s")
    return r


def table(r: dict) -> list[dict]:
    keep = ("name", "expansion", "l1", "d_sae", "sparsity", "l0", "fvu", "pitch_accuracy", "loudness_accuracy",
            "timbre_accuracy")
    return [{k: (round(c[k], 4) if isinstance(c.get(k), float) else c.get(k)) for k in keep} for c in r["cells"]]


def _cell_name(cell: Path) -> str:
    """A cell's grid name (a shipped copy lives in a folder called `cell`; its probes.json keeps the name)."""
    meta = cell / "probes.json"
    return json.loads(meta.read_text()).get("cell", cell.name) if meta.exists() else cell.name


def best_cell(r: dict, grid_dir: Path) -> Path:
    """The main grid's cell with the best held-out pitch accuracy."""
    cells = [c for c in r["cells"] if c["name"] != "latent"]
    best = max(cells, key=lambda c: c["pitch_accuracy"])
    return grid_dir / "cells" / best["name"]


def chosen_cell(args) -> Path:
    """`--cell` when given, else the grid's best: the cell the edit, traj and musicgen stages use."""
    if args.cell is not None:
        return args.cell
    return best_cell(json.loads((args.work / "grid" / "grid.json").read_text()), args.work / "grid")


def flow_adherence(flow, ae, rows: list[dict], n: int = 4, seconds: float = 5.0) -> dict:
    """Does the flow model follow its captions? Decode samples for contrasting captions and measure them.

    For each factor (brightness, register, dynamics) take n test-split captions of each extreme,
    generate one sample per caption (32 Euler steps, CFG 3), decode through the codec and
    measure median spectral centroid, median RMS dB and median CREPE MIDI of voiced frames.
    The same measurements on the real clips of those captions are given for reference.
    """
    import numpy as np

    from musiclens.extract.audio import AudioItem, load_clip
    from musiclens.latent.flow import CaptionEncoder
    from musiclens.latent.labels import frame_values

    enc = CaptionEncoder()

    def stats(y: np.ndarray) -> dict:
        v = frame_values(y, ae.sample_rate, ae.hop, len(y) // ae.hop)
        voiced = (v["periodicity"] >= 0.4) & (v["rms_db"] >= -60)
        midi = 69 + 12 * np.log2(np.maximum(v["pitch_hz"], 1e-6) / 440.0)
        return {"centroid_hz": float(np.median(v["centroid_hz"])), "rms_db": float(np.median(v["rms_db"])),
                "midi": float(np.median(midi[voiced])) if voiced.any() else None}

    out = {}
    for factor, (lo, hi) in {"brightness": ("dark", "bright"), "register": ("low", "high"),
                             "dynamics": ("soft", "loud")}.items():
        res = {}
        for level in (lo, hi):
            sel = [r for r in rows if r["split"] == "test" and r[factor] == level][:n]
            caps = [r["caption"] for r in sel]
            lat, _ = flow.sample(enc(caps), int(seconds * ae.frame_rate), steps=32, guidance=3.0, seed=1)
            audio = ae.decode(lat).cpu().numpy()
            gen = [stats(y) for y in audio]
            real = [stats(load_clip(AudioItem(0, r["id"], str(ROOT / "data" / "corpus" / r["path"])), ae.sample_rate,
                                    seconds).audio) for r in sel]
            agg = lambda xs, k: float(np.median([x[k] for x in xs if x[k] is not None])) if any(
                x[k] is not None for x in xs) else None
            res[level] = {"generated": {k: agg(gen, k) for k in ("centroid_hz", "rms_db", "midi")},
                          "real": {k: agg(real, k) for k in ("centroid_hz", "rms_db", "midi")}}
        out[factor] = res
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--autoencoder", default="organism")
    ap.add_argument("--corpus", type=Path, default=ROOT / "data" / "corpus")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "latent-bench")
    ap.add_argument("--train-clips", type=int, default=160)
    ap.add_argument("--test-clips", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--expansions", default="4,16")
    ap.add_argument("--l1", default="0.005,0.03,0.15")
    ap.add_argument("--wide", type=int, default=64, help="one extra cell this wide (x latent) at the middle L1")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-train-rows", type=int, default=24000)
    ap.add_argument("--probe-epochs", type=int, default=6)
    ap.add_argument("--probe-min-steps", type=int, default=200)
    ap.add_argument("--edit-clips", type=int, default=4)
    ap.add_argument("--flow-clips", type=int, default=800)
    ap.add_argument("--flow-minutes", type=float, default=10.0)
    ap.add_argument("--traj-prompts", type=int, default=8)
    ap.add_argument("--ship", action="store_true", help="copy the trained flow model + cell into musiclens/assets")
    ap.add_argument("--stages", default="extract,grid,random,edit,flow,traj,musicgen")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cell", type=Path, default=None,
                    help="SAE + probe cell for the edit, traj and musicgen stages instead of the grid's best (e.g. "
                         "the shipped musiclens/assets/organism/flow/cell): re-measures what decodes audio after the "
                         "LM or the codec's decoder changed, without re-running the grid")
    ap.add_argument("--flow", type=Path, default=None,
                    help="rectified-flow folder for the traj stage instead of WORK/flow (e.g. the shipped "
                         "musiclens/assets/organism/flow)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    stages = set(args.stages.split(","))
    if not (args.corpus / "metadata.jsonl").exists():  # written when a render completes
        sys.exit(f"corpus not rendered: {args.corpus} (run `musiclens corpus render`)")
    args.work.mkdir(parents=True, exist_ok=True)
    from musiclens.latent.autoencoders import load_autoencoder

    ae = load_autoencoder(args.autoencoder)
    fig: dict = {"paper": PAPER, "autoencoder": {"name": ae.name, "kind": ae.kind, "weights_hash": ae.weights_hash,
                                                 "latent_width": ae.dim, "frame_rate": ae.frame_rate,
                                                 "codebooks": ae.n_codebooks},
                 "data": {"corpus": str(args.corpus), "train_clips": args.train_clips, "test_clips": args.test_clips,
                          "seconds_per_clip": args.seconds}}
    results_path = args.work / "figures.json"
    if results_path.exists():
        fig.update({k: v for k, v in json.loads(results_path.read_text()).items() if k not in fig})

    def save():
        results_path.write_text(json.dumps(fig, indent=1, default=str))

    clips = choose_clips(args.corpus, args.train_clips, args.test_clips, args.work / "clips.txt")
    exps = [int(x) for x in args.expansions.split(",")]
    l1s = [float(x) for x in args.l1.split(",")]
    store = None
    if stages & {"extract", "grid", "edit"}:
        t0 = time.perf_counter()
        store = extract_store(args, "store", args.autoencoder, clips, ["latent.encoder", "latent.q0"])
        fig.setdefault("timing", {})["extract_seconds"] = round(time.perf_counter() - t0, 1)
    if "grid" in stages:
        r = grid(args, "grid", store, "latent.encoder", exps, l1s, args.steps)
        fig["probe_table"] = {"site": "latent.encoder", "chance": r["chance_accuracy"], "train_frames": r["train_frames"],
                              "test_frames": r["test_frames"], "train_clips": r["train_clips"],
                              "test_clips": r["test_clips"], "sae_seconds": r["sae_seconds"], "cells": table(r)}
        if args.wide:
            rw = grid(args, "grid-wide", store, "latent.encoder", [args.wide], [l1s[len(l1s) // 2]], args.steps)
            fig["probe_table"]["cells"] += [c for c in table(rw) if c["name"] != "latent"]
            fig["probe_table"]["sae_seconds_wide"] = rw["sae_seconds"]
        rq = grid(args, "grid-q0", store, "latent.q0", [exps[min(1, len(exps) - 1)]], [l1s[min(1, len(l1s) - 1)]],
                  args.steps)
        fig["probe_table_q0"] = {"site": "latent.q0 (codebook 0 quantised embedding)", "chance": rq["chance_accuracy"],
                                 "cells": table(rq)}
        save()
    if "random" in stages:
        fig["random_encoders"] = {}
        for name in ("tiny-encodec", "tiny-dac"):
            st = extract_store(args, f"store-{name}", name, clips, ["latent.encoder"])
            rr = grid(args, f"grid-{name}", st, "latent.encoder", [8], [0.03], min(args.steps, 600))
            fig["random_encoders"][name] = {"note": "random weights: a floor for what untrained latents give",
                                            "chance": rr["chance_accuracy"], "cells": table(rr)}
        save()
    if "edit" in stages:
        from musiclens.latent.control import held_out_audio, load_control, sweep, target_class

        cell = chosen_cell(args)
        cm = load_control(cell, args.autoencoder)
        held = held_out_audio(str(store), cm.ae.sample_rate, args.edit_clips, args.seconds)
        targets = {"pitch": "C5", "loudness": str(cm.bins.n_classes("loudness") - 3),
                   "timbre": str(cm.bins.n_classes("timbre") - 5)}
        fig["control_vectors"] = {"cell": _cell_name(cell), "clips": [c for c, _ in held], "sweeps": {}}
        for attr, tgt in targets.items():
            t0 = time.perf_counter()
            k = target_class(cm.bins, attr, tgt)
            rep = sweep(cm, [y for _, y in held], attr, k, [1.0, 10.0, 20.0, 30.0])
            rep["seconds"] = round(time.perf_counter() - t0, 1)
            fig["control_vectors"]["sweeps"][attr] = rep
            log(f"edit {attr} -> {rep['target']}: " + ", ".join(
                f"a={row['alpha']:g} hit={row['target_hit_rate']:.2f}" for row in rep["alphas"]))
            save()
    if "flow" in stages:
        from musiclens.latent.flow import FlowTrainConfig, train_flow

        fclips = choose_clips(args.corpus, args.flow_clips, 0, args.work / "flow-clips.txt")
        fst = extract_store(args, "flow-store", args.autoencoder, fclips, ["latent.encoder"], labels=False,
                            seconds=10.0)
        fout = args.work / "flow"
        if not (fout / "model.safetensors").exists():
            info = train_flow(FlowTrainConfig(store=str(fst), out=str(fout), minutes=args.flow_minutes, threads=1,
                                              overwrite=True))
        else:
            info = {k: v for k, v in json.loads((fout / "config.json").read_text()).items() if k != "loss_curve"}
        fig["flow"] = {k: info.get(k) for k in ("steps", "seconds", "threads", "final_loss", "parameters",
                                                 "train_clips", "codec_weights_hash")}
        if args.ship:
            from musiclens.latent.flow import shipped_flow_path

            rg = json.loads((args.work / "grid" / "grid.json").read_text())
            ship_cell = best_cell(rg, args.work / "grid")
            dest = shipped_flow_path()
            tmp = dest.with_name(".flow.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(fout, tmp)
            shutil.copytree(ship_cell, tmp / "cell")
            # the grid records its store's path, a folder of this machine's --work: ship a description instead
            cell_cfg = json.loads((tmp / "cell" / "cfg.json").read_text())
            cell_cfg["metadata"]["latent_store"] = "store/ of `python bench/latent.py --work DIR` (not shipped)"
            (tmp / "cell" / "cfg.json").write_text(json.dumps(cell_cfg, indent=2) + "\n")
            # held-out audio for tests/latent/test_latent_organism.py: the first test-split clips of the
            # bench list (the edit clips), first 4 s, as 16-bit WAV
            from musiclens.audio import write_wav
            from musiclens.latent.control import held_out_audio

            for cid, y in held_out_audio(str(args.work / "store"), 16000, 4, 4.0):
                write_wav(tmp / "cell" / "heldout" / f"{Path(cid).stem}.wav", y, 16000)
            (tmp / "README.md").write_text(
                "Rectified-flow model on the organism codec's continuous latents (latent.encoder), conditioned on\n"
                "MiniLM caption embeddings; trained by `python bench/latent.py --ship` "
                f"({info.get('steps')} steps, {info.get('seconds')} s, 1 CPU thread).\n"
                f"`cell/` is the RMSNorm-L1 SAE + probes ({ship_cell.name}) used for its trajectories;\n"
                "`cell/heldout/` holds 4 s of four test-split corpus clips for the tests.\n")
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
            fig["flow"]["shipped"] = str(dest.relative_to(ROOT))
        save()
    if "traj" in stages:
        from musiclens.latent.flow import load_flow
        from musiclens.latent.probes import Probes
        from musiclens.latent.trajectory import build_tiny_stable_audio, flow_trajectory, stable_audio_trajectory
        from musiclens.sae.io import load_sae

        cell = chosen_cell(args)
        flow = load_flow(args.flow or args.work / "flow")
        rows = [json.loads(line) for line in (args.corpus / "metadata.jsonl").read_text().splitlines() if line.strip()]
        prompts = [r["caption"] for r in rows if r["split"] == "test"][:args.traj_prompts]
        res, _ = flow_trajectory(flow, load_sae(cell), Probes.load(cell), prompts, seconds=5.0, steps=32)
        fig["trajectory_flow"] = {"cell": _cell_name(cell), "steps": 32, "prompts": len(prompts),
                                  "convergence_step": res["convergence_step"], "s": res["s"], "tv": res["tv"]}
        t0 = time.perf_counter()
        fig["flow_adherence"] = flow_adherence(flow, ae, rows)
        fig["flow_adherence"]["seconds"] = round(time.perf_counter() - t0, 1)
        save()
        from musiclens.latent.plots import plot_trajectory

        res["title"] = "rectified flow on the organism codec: attribute convergence"
        plot_trajectory(res, ROOT / "bench" / "results" / "latent_trajectory.png")
        # tiny random StableAudioPipeline: mechanics only, its numbers mean nothing
        st = extract_store(args, "store-tiny-oobleck", "tiny-oobleck", clips, ["latent.encoder"])
        ro = grid(args, "grid-tiny-oobleck", st, "latent.encoder", [4], [0.03], 300)
        oc = args.work / "grid-tiny-oobleck" / "cells" / ro["cells"][1]["name"]
        res2 = stable_audio_trajectory(build_tiny_stable_audio(), load_sae(oc), Probes.load(oc), prompts[:2],
                                       seconds=2.0, steps=32)
        fig["trajectory_tiny_stable_audio"] = {"note": "random weights; checks the diffusers path end to end",
                                               "convergence_step": res2["convergence_step"]}
        save()
    if "musicgen" in stages:
        from musiclens import load_model
        from musiclens.latent.probes import Probes
        from musiclens.latent.trajectory import musicgen_trajectories
        from musiclens.sae.io import load_sae

        cell = chosen_cell(args)
        model = load_model("organism")
        if model.hf.audio_encoder is not None and args.autoencoder not in ("organism",):
            fig["musicgen_note"] = f"cell trained on {args.autoencoder}; MusicGen's codec is the organism's"
        rows = [json.loads(line) for line in (args.corpus / "metadata.jsonl").read_text().splitlines() if line.strip()]
        prompts = [r["caption"] for r in rows if r["split"] == "test"][:args.traj_prompts]
        t0 = time.perf_counter()
        res = musicgen_trajectories(model, load_sae(cell), Probes.load(cell), prompts, seconds=4.0)
        fig["trajectory_musicgen"] = {
            "model": "organism", "cell": _cell_name(cell), "prompts": len(prompts), "seconds": 4.0,
            "layers": {"n": res["layers"]["steps"], "convergence_layer": res["layers"]["convergence_step"],
                       "s": res["layers"]["s"], "tv": res["layers"]["tv"]},
            "generated_frames": {"n": res["generated_steps"]["steps"],
                                 "convergence_frame": res["generated_steps"]["convergence_step"]},
            "wall_seconds": round(time.perf_counter() - t0, 1)}
        save()
    # which stages this command ran: the others' figures come from earlier runs in the same --work
    fig["stages_this_run"] = sorted(stages)
    write_result("latent", fig, "python bench/latent.py " + " ".join(sys.argv[1:]))
    log("wrote bench/results/latent.json")


if __name__ == "__main__":
    main()
