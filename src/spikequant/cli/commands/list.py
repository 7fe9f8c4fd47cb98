"""``spikequant list [models|neurons|recipes|datasets]``: what is available, with one-line help."""

from __future__ import annotations

import json

KINDS = ("models", "neurons", "recipes", "datasets")


def register(sub) -> None:
    p = sub.add_parser("list", help="list models, neurons, recipes or datasets")
    p.add_argument("what", nargs="?", choices=KINDS, default=None, help="default: all four")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def collect(what: str) -> dict[str, str]:
    if what == "models":
        from ...registry import MODELS, list_models

        list_models()
        return MODELS.describe()
    if what == "neurons":
        from ...registry import NEURONS, list_neurons

        list_neurons()
        return {**NEURONS.describe(), "relu": "ANN baseline activation (models run with T = 1)"}
    if what == "recipes":
        from ...config import RECIPE_DIR, list_recipes, read_yaml
        from ...errors import ConfigError

        out = {}
        for name in list_recipes():  # read, not validated: one broken file must not hide the list
            try:
                cfg = read_yaml(RECIPE_DIR / f"{name}.yaml", "recipe")
            except ConfigError:
                out[name] = "(unreadable YAML)"
                continue
            method = cfg.get("method")
            method = method.get("name", "direct") if isinstance(method, dict) else "direct"
            out[name] = f"[{method}] {cfg.get('description', '')}".strip()
        return out
    from ...data import dataset_info, list_datasets

    result = {}
    for name in list_datasets():
        info = dataset_info(name)
        where = "bundled" if info.bundled else "local folder"
        result[name] = f"{info.description} ({info.num_classes} classes, {where})"
    return result


def run(args) -> int:
    kinds = [args.what] if args.what else list(KINDS)
    found = {kind: collect(kind) for kind in kinds}
    if args.json:
        print(json.dumps(found))
        return 0
    for kind, entries in found.items():
        print(f"{kind}:")
        width = max((len(k) for k in entries), default=0)
        for name, doc in entries.items():
            print(f"  {name.ljust(width)}  {doc}")
    return 0
