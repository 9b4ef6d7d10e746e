"""Plot a3c.py's learning curve from its TensorBoard event files: evaluation score (mean +- std of
the --eval-episodes episodes) and training score (mean of the last 100 episodes) against frames.

    pip install matplotlib        # optional, not in requirements.txt
    python tools/plot_curve.py runs/BreakoutNoFrameskip-v4__1__* --out breakout.png --random 1.6
    python tools/plot_curve.py A3C=runs/Pong__a3c "n-step Q=runs/Pong__q" --out pong.png   # several runs
    python tools/plot_curve.py runs/Pong__a3c --csv docs/curves/pong.csv    # the points, kept as text

A LABEL=DIR argument starts a new run named LABEL; the folders after it, until the next LABEL=,
belong to it (a resumed run writes several). Without any LABEL=, all folders are one run.
A DIR that ends in .csv is a file --csv wrote: the event files of a long run rarely outlive the
machine, the points in docs/curves/ do.
"""
import argparse
import collections

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def scalars(logdirs, tag):
    """(step, value) of `tag` over all logdirs (a resumed run writes a new one), sorted by step."""
    out = []
    for d in logdirs:
        acc = EventAccumulator(d, size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            out += [(e.step, e.value) for e in acc.Scalars(tag)]
    return sorted(out)


def runs_of(args):
    """[(label, [logdir, ...]), ...] from 'DIR' and 'LABEL=DIR' arguments."""
    runs = []
    for arg in args:
        if "=" in arg or not runs:
            label, _, d = arg.rpartition("=")
            runs.append((label or None, [d]))
        else:
            runs[-1][1].append(arg)
    return runs


def curves(logdirs, frames_per_step):
    """A run's two curves: training (frames, mean of the last 100 games) and evaluation (frames,
    mean, std), as arrays; from its event files, or from the one .csv file --csv wrote."""
    if len(logdirs) == 1 and logdirs[0].endswith(".csv"):
        with open(logdirs[0]) as f:                           # '#' lines: where the points came from
            rows = np.genfromtxt([line for line in f if not line.startswith("#")], delimiter=",", names=True, ndmin=1)
        tr, ev = ~np.isnan(rows["train_mean"]), ~np.isnan(rows["eval_mean"])
        return ((rows["frames"][tr], rows["train_mean"][tr]),
                (rows["frames"][ev], rows["eval_mean"][ev], np.nan_to_num(rows["eval_std"][ev])))
    train = scalars(logdirs, "charts/episodic_return")
    ev = dict(scalars(logdirs, "eval/episodic_return"))
    ev_std = dict(scalars(logdirs, "eval/episodic_return_std"))
    steps, rets = map(np.array, zip(*train)) if train else (np.zeros(0), np.zeros(0))
    recent = collections.deque(maxlen=100)
    smooth = np.array([(recent.append(r), np.mean(recent))[1] for r in rets])
    at = sorted(ev)                                         # evaluation steps
    return ((steps * frames_per_step, smooth),
            (np.array(at, dtype=float) * frames_per_step, np.array([ev[k] for k in at]),
             np.array([ev_std.get(k, 0.0) for k in at])))


def write_csv(path, train, ev):
    """Every evaluation, and the training mean at the last episode of every 100,000 frames."""
    rows = {int(f): [m, sd, np.nan] for f, m, sd in zip(*ev)}
    last = {int(f) // 100_000: (int(f), r) for f, r in zip(*train)}   # the last episode of each 100k wins
    for f, r in last.values():
        rows.setdefault(f, [np.nan, np.nan, np.nan])[2] = r
    with open(path, "w") as out:
        out.write("frames,eval_mean,eval_std,train_mean\n")
        for f in sorted(rows):
            out.write(f"{f}," + ",".join("" if np.isnan(v) else f"{v:.2f}" for v in rows[f]) + "\n")


def plot_run(ax, logdirs, label, color, frames_per_step, alone):
    (tx, ty), (x, m, sd) = curves(logdirs, frames_per_step)
    name = "" if alone else f"{label}: "
    if len(tx):
        ax.plot(tx / 1e6, ty, color="tab:blue" if alone else color, lw=1,
                alpha=1.0 if alone else 0.45, label=f"{name}training (mean of last 100 episodes)")
    if len(x):
        x = x / 1e6
        c = "tab:red" if alone else color
        ax.plot(x, m, "o-", color=c, ms=4, label=f"{name}evaluation (mean of full episodes)")
        ax.fill_between(x, m - sd, m + sd, color=c, alpha=0.15, label=f"{name}evaluation +- std" if alone else None)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("logdirs", nargs="+", metavar="[LABEL=]DIR",
                   help="a3c.py --logdir folder(s): one run, or several runs each started by LABEL=")
    p.add_argument("--out", default="curve.png", help="PNG to write (default curve.png)")
    p.add_argument("--frames-per-step", type=float, default=4, help="emulator frames per agent step (default 4, Atari's; 1 for other envs)")
    p.add_argument("--random", type=float, help="the random policy's score, drawn as a dashed line")
    p.add_argument("--title", default=None, help="plot title (default: the logdirs)")
    p.add_argument("--csv", metavar="FILE", help="write one run's points to FILE (.csv) instead of a picture")
    a = p.parse_args()
    if a.csv:
        runs = runs_of(a.logdirs)
        if len(runs) != 1:
            p.error(f"--csv writes one run; got {len(runs)} (drop the LABEL= arguments)")
        write_csv(a.csv, *curves(runs[0][1], a.frames_per_step))
        print(f"wrote {a.csv}")
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = runs_of(a.logdirs)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for k, (label, dirs) in enumerate(runs):
        plot_run(ax, dirs, label or ", ".join(dirs)[:40], f"C{k}", a.frames_per_step, alone=len(runs) == 1)
    if a.random is not None:
        ax.axhline(a.random, ls="--", color="gray", lw=1, label=f"random policy ({a.random:g})")
    ax.set_xlabel("frames (millions)" if a.frames_per_step != 1 else "steps (millions)")
    ax.set_ylabel("score (raw, unclipped)")
    ax.set_title(a.title or ", ".join(label or dirs[0] for label, dirs in runs)[:80])
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
