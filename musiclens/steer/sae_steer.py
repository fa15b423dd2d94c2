"""SAE feature steering inputs: load the SAE, find each feature's β (max activation).

β_j comes from `musiclens features` (its catalogue's `max_act` column, the
largest activation of feature j over the corpus), so α = 1 pushes the
residual by as much as the feature ever contributes on real music. Until a
catalogue exists, pass β explicitly (`--beta`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..errors import MusiclensError
from .inject import FeatureSteer, check_strength, sae_layer


def load_sae_checked(path: str | Path, model=None):
    """`musiclens.sae.load_sae(path)`, refusing an SAE of another width or model."""
    from ..sae import load_sae

    path = Path(path)
    if not path.exists():
        raise MusiclensError(f"SAE directory not found: {path}")
    sae = load_sae(path)
    if model is not None:
        cfg = sae.cfg
        get = (lambda k: cfg.get(k)) if isinstance(cfg, dict) else (lambda k: getattr(cfg, k, None))
        d_in = get("d_in")
        if d_in is not None and int(d_in) != model.d_model:
            raise MusiclensError(f"SAE {path} has d_in={d_in}, but {model.name} has d_model {model.d_model}")
        name = get("model_name")
        if name and name != model.name and Path(str(name)).name != Path(model.name).name:
            raise MusiclensError(f"SAE {path} was trained on model {name!r}, not {model.name!r}")
        layer = sae_layer(sae)
        if layer >= model.n_layers:
            raise MusiclensError(f"SAE {path} hooks layer {layer}, but {model.name} has {model.n_layers} layers")
    return sae


def _catalogue_rows(path: Path) -> list[dict]:
    if path.is_dir():
        if (path / "catalogue.parquet").exists():
            path = path / "catalogue.parquet"
        elif (path / "catalogue.json").exists():
            path = path / "catalogue.json"
        else:
            raise MusiclensError(f"{path} has no catalogue.parquet or catalogue.json")
    if not path.exists():
        raise MusiclensError(f"features catalogue not found: {path}")
    if path.suffix == ".parquet":
        import pandas as pd

        try:
            return pd.read_parquet(path).to_dict("records")
        except Exception as e:
            raise MusiclensError(f"cannot read catalogue {path}: {e}")
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise MusiclensError(f"catalogue {path} is not valid JSON: {e}")
    if isinstance(rows, dict):
        rows = rows.get("features", [])
    return list(rows)


def catalogue_names(sae_path: str | Path) -> set[str]:
    """The names an SAE may have in a features catalogue / annotations.json.

    `musiclens features` names an SAE by its folder, and prefixes the parent folder when several
    SAEs share a folder name (sweep/L4/topk_x32_k32 -> "L4_topk_x32_k32"), so both spellings count.
    """
    from ..features.scan import qualified_name

    return {Path(sae_path).name, qualified_name(sae_path)}


def catalogue_rows_for(catalogue: str | Path, sae_path: str | Path, layer: int) -> list[dict]:
    """The catalogue rows that belong to this SAE (by name, else by layer)."""
    rows = _catalogue_rows(Path(catalogue))
    name = Path(sae_path).name
    names = catalogue_names(sae_path)
    mine = [r for r in rows if r.get("sae") in names]
    if not mine:
        mine = [r for r in rows if int(r.get("layer", -1)) == layer]
        if len({r.get("sae") for r in mine}) > 1:
            raise MusiclensError(f"catalogue {catalogue} has several SAEs at layer {layer} and none named {name!r}")
    if not mine:
        raise MusiclensError(f"catalogue {catalogue} has no rows for SAE {name!r} (layer {layer})")
    return mine


def betas_from_catalogue(catalogue: str | Path, sae_path: str | Path, layer: int, features: Sequence[int]) -> list[float]:
    """β_j = `max_act` of each feature in a `musiclens features` catalogue."""
    by_feat = {int(r["feature"]): r for r in catalogue_rows_for(catalogue, sae_path, layer)}
    out = []
    for j in features:
        if j not in by_feat or by_feat[j].get("max_act") is None:
            raise MusiclensError(f"feature {j} has no max_act in catalogue {catalogue}")
        out.append(float(by_feat[j]["max_act"]))
    return out


def feature_steer(model, sae_path: str | Path, features: Sequence[int], alpha: float | Sequence[float] = 1.0,
                  beta: float | Sequence[float] | None = None, catalogue: str | Path | None = None) -> FeatureSteer:
    """A checked `FeatureSteer` for `features` of the SAE at `sae_path`."""
    sae = load_sae_checked(sae_path, model)
    layer = sae_layer(sae)
    feats = [int(j) for j in features]
    n = sae.cfg.d_sae
    bad = [j for j in feats if not 0 <= j < n]
    if bad:  # checked here, before a sweep or evaluation generates anything
        raise MusiclensError(f"feature(s) {bad[:5]} out of range: the SAE has features 0..{n - 1}")
    for name, v in (("--alpha", alpha), ("--beta", beta)):
        if isinstance(v, (list, tuple)) and len(v) not in (0, 1, len(feats)):
            raise MusiclensError(f"{name}: give 1 or {len(feats)} values (one per --feature), got {len(v)}")
    if beta is None or (isinstance(beta, (list, tuple)) and len(beta) == 0):
        if catalogue is None:
            raise MusiclensError("SAE steering needs β: pass --beta or --catalogue (a `musiclens features` output)")
        beta = betas_from_catalogue(catalogue, sae_path, layer, feats)
    if isinstance(beta, (list, tuple)):
        beta = [check_strength(b, "beta") for b in beta]
    else:
        beta = check_strength(beta, "beta")
    return FeatureSteer(sae=sae, features=feats, alpha=alpha, beta=beta, layer=layer)
