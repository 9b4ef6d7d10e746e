"""Is an Atari checkpoint's torso alive? Feeds it frames of random play and reports, for each layer
of the CNN, how many of its ReLUs fire for none of them (dead units pass no gradient, so they stay
off), how many fc outputs vary across the frames (losses/live_units while training), and how much
pi and V vary (not at all: the policy ignores the screen).

    python tools/torso.py checkpoints/BreakoutNoFrameskip-v4__1 [more checkpoint folders] [--frames 400]

Reads the checkpoint with NumPy and TensorFlow's checkpoint reader only, so it can look at a run
while it trains. docs/a3c-results.md ("a dead torso") shows what it printed for a dead and a live run.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import atari_env  # noqa: E402
import tf_setup  # noqa: E402


def frames(env_id, n, seed=7):
    env = atari_env.make_env(env_id, seed=seed, vector=atari_env.vector_ok(env_id))
    rng, obs = np.random.default_rng(seed), [env.reset()]
    for _ in range(n):
        obs.append(env.step(int(rng.integers(env.action_space.n)))[0])
    env.close()
    return np.array(obs, np.float32) / 255.0              # [n + 1, 84, 84, 4], as the network scales it


def report(folder, n):
    with tf_setup.quiet_stderr():
        import tensorflow as tf                            # eager: the layers run one by one on NumPy arrays
    meta = json.load(open(os.path.join(folder, "latest.json")))
    if meta.get("network") != "cnn":
        raise SystemExit(f"{folder}: a {meta.get('network')} checkpoint; this looks at the Atari CNN only")
    w = tf.train.load_checkpoint(os.path.join(folder, meta["dir"], "model")).get_tensor
    x, off = frames(meta["env"], n), []
    for layer, stride in (("conv1", 4), ("conv2", 2)):       # conv 8x8/4, 16 -> conv 4x4/2, 32, as a3c.network
        with tf_setup.quiet_stderr():                      # the first op's "failed call to cuInit" on a CPU machine
            x = np.maximum(tf.nn.conv2d(x, w(f"global/{layer}/w"), [1, stride, stride, 1], "VALID").numpy()
                           + w(f"global/{layer}/b"), 0)
        off.append(np.mean(x.max(axis=(0, 1, 2)) == 0))    # channels that fire nowhere, for no frame
    h = np.maximum(x.reshape(len(x), -1) @ w("global/fc/w") + w("global/fc/b"), 0)  # [n, 256]
    off.append(np.mean(h.max(0) == 0))
    logits = h @ w("global/pi/w") + w("global/pi/b")
    pi = np.exp(logits - logits.max(1, keepdims=True))
    pi /= pi.sum(1, keepdims=True)
    v = h @ w("global/v/w")[:, 0] + w("global/v/b")[0]
    print(f"{folder} T={meta['T']}: off for all {len(h)} frames: conv1 {off[0]:.0%}, conv2 {off[1]:.0%}, "
          f"fc {off[2]:.0%} of its units; fc units whose output varies across the frames "
          f"{np.mean(h.max(0) > h.min(0)):.0%}; pi's std across frames {pi.std(0).max():.4f}, V's {v.std():.4f}",
          flush=True)

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+", help="checkpoint folders (each with its latest.json)")
    p.add_argument("--frames", type=int, default=400, help="agent steps of random play fed to each (default 400)")
    args = p.parse_args()
    for folder in args.checkpoints:
        report(folder, args.frames)
