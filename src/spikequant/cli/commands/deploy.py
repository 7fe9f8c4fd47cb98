"""``spikequant deploy RUN --out model.sqrt``: lower a trained Quant-SNN / SpQuant-SNN run to an
integer-only program (2-bit or int8 weight levels, ternary membranes, integer thresholds, leak as
a shift, statically closed channels removed) in one safetensors file with a SHA-256 content hash.
A Ca-LIF converted run (``spikequant convert RUN --method calif --save-run OUT``) becomes an exact
integer Ca-LIF program (ISI-coded 8-bit pixels, bipolar spikes, pool neurons, rounding phase).
Run it with ``spikequant run model.sqrt INPUT``.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import ConfigError

# datasets whose samples are 8-bit pixels p stored as p / 255 (or 4-bit p / 16)
INPUT_SCALES = {"mnist5k": 1.0 / 255.0, "digits8x8": 1.0 / 16.0}
CODE_MAX = {"mnist5k": 255, "digits8x8": 16}


def run(args) -> int:
    from ...pipeline import load_run_model
    from ...runtime.format import save_program
    from ...runtime.lower import lower_model

    target = Path(args.run)
    if not target.exists():
        raise ConfigError(f"no run folder or checkpoint at {target}")
    from ...io import check_output_file

    check_output_file(args.out)  # before any work
    if args.emit_c:
        check_output_file(args.emit_c, "--emit-c")
    model, meta = load_run_model(target)
    from ...convert.saved import RUNTIME_REFUSALS, is_converted, refusal

    dataset = meta.get("dataset")
    if is_converted(meta) and (meta.get("conversion") or {}).get("method") == "calif":
        return _deploy_calif(args, model, meta, target)
    if is_converted(meta):
        raise ConfigError(refusal(meta, RUNTIME_REFUSALS, "the integer runtime"))
    kind = args.input_kind
    scale = args.input_scale
    code_max = args.code_max
    if kind == "analog":
        if scale is None:
            scale = INPUT_SCALES.get(dataset)
            if scale is None:
                raise ConfigError(
                    f"dataset {dataset!r}: give --input-scale (the float value of one input code)"
                )
        if code_max is None:
            code_max = CODE_MAX.get(dataset, 255)
    program = lower_model(
        model,
        input_kind=kind,
        input_scale=scale if scale is not None else 1.0,
        code_max=code_max if code_max is not None else 1,
        source={"run": str(target), "recipe": meta.get("name"), "dataset": dataset},
    )
    digest = save_program(program, args.out)
    if args.emit_c:
        from ...io import write_text
        from ...runtime.emit_c import emit_c

        write_text(args.emit_c, emit_c(program, digest))
        print(f"wrote {args.emit_c}: dependency-free C99 (cc -O2 -std=c99 {args.emit_c})")
    removed = sum(len(layer["removed_channels"]) for layer in program.layers)
    print(
        f"wrote {args.out}: {len(program.layers)} layers, T = {program.timesteps}, "
        f"{program.weight_bytes():,} weight bytes, {removed} pruned channels removed"
    )
    print(f"sha256 {digest}")
    return 0


def _deploy_calif(args, model, meta, target: Path) -> int:
    from ...data import dataset_info
    from ...runtime.format import save_program
    from ...runtime.lower_calif import lower_calif

    given = [
        flag
        for flag, value in (
            ("--input-kind", args.input_kind != "analog"),
            ("--input-scale", args.input_scale is not None),
            ("--code-max", args.code_max is not None),
        )
        if value
    ]
    if given:
        raise ConfigError(
            f"{', '.join(given)} do not apply to a Ca-LIF program: it takes 8-bit pixels and "
            "ISI-codes them itself"
        )
    dataset = meta.get("dataset")
    shape = dataset_info(str(dataset)).input_shape  # ConfigError naming the known ones
    program = lower_calif(
        model,
        shape,
        source={"run": str(target), "conversion": "calif", "dataset": dataset},
    )
    digest = save_program(program, args.out)
    if args.emit_c:
        from ...io import write_text
        from ...runtime.emit_c_calif import emit_c_calif, membrane_bits

        write_text(args.emit_c, emit_c_calif(program, digest))
        build = (
            f"needs __int128 (GCC/Clang): cc -O2 -std=gnu99 {args.emit_c}"
            if membrane_bits(program) == 128
            else f"cc -O2 -std=c99 {args.emit_c}"
        )
        print(f"wrote {args.emit_c}: dependency-free C ({build})")
    wide = sum(layer["weight_encoding"] == "int32" for layer in program.layers)
    print(
        f"wrote {args.out}: Ca-LIF program, {len(program.layers)} layers, T = "
        f"{program.timesteps}, ISI budget K = {program.header['input']['budget']}, "
        f"{program.weight_bytes():,} weight bytes ({wide} layers with int32 levels)"
    )
    print(f"sha256 {digest}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "deploy",
        help="lower a trained Quant/SpQuant-SNN run to an integer program (.sqrt)",
        description=__doc__,
    )
    p.add_argument("run", help="run folder or checkpoint of a spquant recipe")
    p.add_argument("--out", required=True, help="program file to write (e.g. model.sqrt)")
    p.add_argument(
        "--input-kind",
        choices=("analog", "spikes"),
        default="analog",
        help="analog codes repeated over T (default) or binary event frames",
    )
    p.add_argument(
        "--input-scale",
        type=float,
        default=None,
        help="float value of one input code (default: from the dataset)",
    )
    p.add_argument("--code-max", type=int, default=None, help="largest input code")
    p.add_argument(
        "--emit-c",
        default=None,
        metavar="FILE.c",
        help="also write the program as one dependency-free C file",
    )
    p.set_defaults(func=run)
