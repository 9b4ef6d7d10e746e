"""Is an Atari checkpoint's torso alive? Feeds it frames of random play and reports, for each layer
of the CNN, how many of its ReLUs fire for none of them (dead units pass no gradient, so they stay
off), how many fc outputs vary across the frames (losses/live_units while training), and how much
pi and V vary (not at all: the policy ignores the screen).

    python tools/torso.py checkpoints/BreakoutNoFrameskip-v4__1 [more checkpoint folders] [--frames 400]

It builds a3c.py's own network and restores the checkpoint into it, as --play does, so it can look at
a run while it trains. docs/a3c-results.md ("a dead torso") shows what it printed for dead and live runs.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import a3c  # noqa: E402
from a3c_checkpoints import restore  # noqa: E402
from a3c_play import open_play  # noqa: E402


def report(folder, n, seed=7):
    tf = a3c.tf
    args = a3c.parse_args(["--play", folder, "--threads", "1"])
    env, meta, _, n_actions = open_play(args, seed)       # the checkpoint's env and network flags, checked
    if meta.get("network") != "cnn":
        raise SystemExit(f"{folder}: a {meta.get('network')} checkpoint; this looks at the Atari CNN only")
    rng, obs = np.random.default_rng(seed), [env.reset()]
    for _ in range(n):
        obs.append(env.step(int(rng.integers(env.action_space.n)))[0])
    env.close()
    with tf.Graph().as_default():
        obs_shape = env.observation_space.shape
        args.rms_eps = 0.1                                 # build_global makes an optimizer; this never uses it
        g = a3c.build_global(obs_shape, n_actions, args)
        net = a3c.build_local("torso", g, obs_shape, n_actions, args, learner=False)
        sess = a3c.session(1)
        restore(sess, tf.train.Saver(g.theta + [g.T]), meta)
        sess.run(net.copy_from_global)
        layers = [tf.get_default_graph().get_tensor_by_name(f"torso/{name}:0") for name in ("conv1", "conv2", "fc")]
        *acts, pi, v = sess.run((*layers, net.pi, net.v), a3c.feed(net, np.array(obs), a3c.zero_state(args)))
    off = [np.mean(a.reshape(len(obs), -1, a.shape[-1]).max(axis=(0, 1)) == 0) for a in acts]  # no frame, nowhere
    h = acts[-1]                                           # fc [n + 1, 256]
    print(f"{folder} T={meta['T']}: off for all {len(h)} frames: conv1 {off[0]:.0%}, conv2 {off[1]:.0%}, "
          f"fc {off[2]:.0%} of its units; fc units whose output varies across the frames "
          f"{np.mean(h.max(0) > h.min(0)):.0%}; pi's std across frames {pi.std(0).max():.4f}, V's {v.std():.4f}",
          flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+", help="checkpoint folders (each with its latest.json)")
    p.add_argument("--frames", type=int, default=400, help="agent steps of random play fed to each (default 400)")
    cli = p.parse_args()
    for folder in cli.checkpoints:
        report(folder, cli.frames)
