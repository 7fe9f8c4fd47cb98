"""``spikequant seqdigits``: sequential digits (each mnist5k image as 28 rows of 28 features):
train an LSTM and a bi-LSTM, convert them with MSAT (and the constant-threshold IF baseline), and
report the converted SNN's test accuracy at each T (steps per row)."""

from __future__ import annotations

import time

DEFAULT_TIMESTEPS = "1,2,4,8,16,32,64,128"


def register(sub) -> None:
    p = sub.add_parser(
        "seqdigits",
        help="sequential digits: LSTM / bi-LSTM -> MSAT SNN, accuracy against T",
        description="Trains an LSTM and a bi-LSTM on mnist5k read row by row (28 steps of 28 "
        "pixels), converts each to a spiking network (MSAT and IF neurons) and writes "
        "seq-digits-lstm.{md,json} (--name).",
    )
    p.add_argument("--hidden", type=int, default=64, help="LSTM hidden size (default 64)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs (default 8)")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--models", default="lstm,bilstm", help="comma list of lstm, bilstm (default both)"
    )
    p.add_argument("--neurons", default="msat,if", help="comma list of msat, if (default both)")
    p.add_argument(
        "--timesteps", default=DEFAULT_TIMESTEPS, help=f"T values (default {DEFAULT_TIMESTEPS})"
    )
    p.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N test")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (step loops of small tensors run fastest with 1 on a busy machine)",
    )
    p.add_argument("--out", default=None, help="output folder (default spikequant-reports)")
    p.add_argument(
        "--name", default="seq-digits-lstm", help="file stem of the report (default %(default)s)"
    )
    p.set_defaults(func=run)


def _parse_list(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    from ...errors import ConfigError

    items = [item.strip() for item in text.split(",") if item.strip()]
    bad = [item for item in items if item not in allowed]
    if not items or bad:
        raise ConfigError(f"--{what} takes a comma list of {', '.join(allowed)}, got {text!r}")
    return items


def run(args) -> int:
    import torch

    from ...convert.recurrent import LSTMClassifier, accuracy_by_timesteps, convert_lstm
    from ...data import load_arrays
    from ...errors import ConfigError
    from ...io import DEFAULT_REPORTS, command_line, results_dir, write_json, write_text

    models = _parse_list(args.models, ("lstm", "bilstm"), "models")
    neurons = _parse_list(args.neurons, ("msat", "if"), "neurons")
    try:
        steps = sorted({int(t) for t in args.timesteps.split(",") if t.strip()})
    except ValueError:
        raise ConfigError(f"--timesteps takes integers, got {args.timesteps!r}") from None
    if not steps or steps[0] < 1 or args.epochs < 1 or args.hidden < 1:
        raise ConfigError("--timesteps, --epochs and --hidden must be positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    command = command_line()

    x_train, y_train = load_arrays("mnist5k", "train")
    x_test, y_test = load_arrays("mnist5k", "test")
    if args.test_limit:
        x_test, y_test = x_test[: args.test_limit], y_test[: args.test_limit]
    seq_train, seq_test = x_train[:, 0], x_test[:, 0]  # [N, 28 rows, 28 pixels]

    report = {
        "command": command,
        "dataset": "mnist5k",
        "test_images": len(seq_test),
        "hidden": args.hidden,
        "epochs": args.epochs,
        "seed": args.seed,
        "models": {},
    }
    for name in models:
        torch.manual_seed(args.seed)
        model = LSTMClassifier(28, args.hidden, 10, bidirectional=name == "bilstm")
        started = time.time()
        _train(model, seq_train, y_train, args)
        with torch.no_grad():
            ann = float((model(seq_test).argmax(1) == y_test).float().mean())
        entry = {"ann_accuracy": ann, "train_seconds": round(time.time() - started, 1)}
        print(f"{name}: ANN test accuracy {100 * ann:.2f} %")
        for neuron in neurons:
            snn = convert_lstm(model, seq_train, neuron=neuron)
            rows = accuracy_by_timesteps(snn, seq_test, y_test, steps, batch_size=1000)
            within = next((r["timesteps"] for r in rows if r["accuracy"] >= ann - 0.01), None)
            entry[neuron] = {
                "scales": snn.scales.tolist(),
                "rows": rows,
                "within_1_point_at_T": within,
            }
            for r in rows:
                print(f"  {neuron} T={r['timesteps']:>4}: {100 * r['accuracy']:.2f} %")
        report["models"][name] = entry

    out = results_dir(args.out, DEFAULT_REPORTS)
    write_json(out / f"{args.name}.json", report)
    write_text(out / f"{args.name}.md", markdown(report))
    print(f"wrote {out / args.name}.md")
    return 0


def _train(model, x, y, args) -> None:
    import torch

    generator = torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs)
    model.train()
    for _ in range(args.epochs):
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), args.batch_size):
            idx = order[i : i + args.batch_size]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    model.eval()


def markdown(report: dict) -> str:
    lines = [
        "# Sequential digits: LSTM / bi-LSTM converted with MSAT",
        "",
        f"Command: `{report['command']}`",
        "",
        f"mnist5k, each image read as 28 rows of 28 pixels; {report['test_images']} test images; "
        f"hidden size {report['hidden']}, {report['epochs']} epochs, seed {report['seed']}. "
        "T = steps per row (an image takes 28 T steps).",
        "",
    ]
    for name, entry in report["models"].items():
        neurons = [n for n in ("msat", "if") if n in entry]
        lines += [f"## {name}", "", f"ANN test accuracy: {100 * entry['ann_accuracy']:.2f} %", ""]
        header = "| T | " + " | ".join(f"{n} acc (%) | {n} spikes/neuron/row" for n in neurons)
        lines += [header + " |", "|---|" + "---|---|" * len(neurons)]
        by_t = {n: {r["timesteps"]: r for r in entry[n]["rows"]} for n in neurons}
        for t in sorted(by_t[neurons[0]]):
            cells = [
                f"{100 * by_t[n][t]['accuracy']:.2f} | {by_t[n][t]['spikes_per_neuron']:.3f}"
                for n in neurons
            ]
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
        lines.append("")
        for n in neurons:
            within = entry[n]["within_1_point_at_T"]
            text = (
                f"first T within 1 point of the ANN: {within}"
                if within is not None
                else "never within 1 point of the ANN over the T measured"
            )
            lines.append(f"- {n}: {text}")
        lines.append("")
    return "\n".join(lines)
