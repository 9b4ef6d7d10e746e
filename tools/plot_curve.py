"""Plot a3c.py's learning curve from its TensorBoard event files: evaluation score (mean +- std of
the --eval-episodes games) and training score (mean of the last 100 games) against frames.

    pip install matplotlib        # optional, not in requirements.txt
    python tools/plot_curve.py runs/BreakoutNoFrameskip-v4__1__* --out breakout.png --random 1.6
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


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("logdirs", nargs="+", help="a3c.py --logdir folder(s) of one run")
    p.add_argument("--out", default="curve.png", help="PNG to write (default curve.png)")
    p.add_argument("--frames-per-step", type=float, default=4, help="emulator frames per agent step (4 on Atari)")
    p.add_argument("--random", type=float, help="the random policy's score, drawn as a dashed line")
    p.add_argument("--title", default=None, help="plot title (default: the logdirs)")
    a = p.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = scalars(a.logdirs, "charts/episodic_return")
    ev = dict(scalars(a.logdirs, "eval/episodic_return"))
    ev_std = dict(scalars(a.logdirs, "eval/episodic_return_std"))
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if train:
        steps, rets = map(np.array, zip(*train))
        recent = collections.deque(maxlen=100)
        smooth = [(recent.append(r), np.mean(recent))[1] for r in rets]
        ax.plot(steps * a.frames_per_step / 1e6, smooth, color="tab:blue", lw=1, label="training (mean of last 100 games)")
    if ev:
        s = np.array(sorted(ev))
        m, sd = np.array([ev[k] for k in s]), np.array([ev_std.get(k, 0.0) for k in s])
        x = s * a.frames_per_step / 1e6
        ax.plot(x, m, "o-", color="tab:red", ms=4, label="evaluation (mean of full games)")
        ax.fill_between(x, m - sd, m + sd, color="tab:red", alpha=0.15, label="evaluation +- std")
    if a.random is not None:
        ax.axhline(a.random, ls="--", color="gray", lw=1, label=f"random policy ({a.random:g})")
    ax.set_xlabel("frames (millions)")
    ax.set_ylabel("score (raw, unclipped)")
    ax.set_title(a.title or ", ".join(a.logdirs)[:80])
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
