"""Does partial_run make A3C faster? Same env, threads and number of updates in both modes.

The slides' tip: keep the forward passes that chose the actions (partial_run) and reuse them in
the update, instead of running the network again. This measures it instead of assuming it.

    python bench/a3c_partial_run.py --env BreakoutNoFrameskip-v4 --threads 2 --updates 300
    python bench/a3c_partial_run.py --env BreakoutNoFrameskip-v4 --threads 8 --vector-env
    python bench/a3c_partial_run.py --env BreakoutNoFrameskip-v4 --threads 2 --random-only

Prints updates/s and env frames/s of each mode, then
    RESULT partial_run_fps=... recompute_fps=... speedup=...
--random-only steps the same env wrappers with random actions in the same threads (no network),
the simulator's own speed, and prints RESULT random_fps=...
"""
import argparse
import os
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import a3c  # noqa: E402  (also sets up tensorflow.compat.v1)
import atari_env  # noqa: E402

tf = a3c.tf


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="BreakoutNoFrameskip-v4", help="gymnasium id")
    p.add_argument("--threads", type=int, default=2, help="actor-learner threads")
    p.add_argument("--updates", type=int, default=300, help="updates per thread, per mode (after 20 warm-up)")
    p.add_argument("--vector-env", action="store_true", help="one ale_py AtariVectorEnv per thread")
    p.add_argument("--random-only", action="store_true", help="only step the envs with random actions")
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args()


def in_threads(fn, n):
    """Run fn(i) in n threads; return wall seconds."""
    threads = [threading.Thread(target=fn, args=(i,)) for i in range(n)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.time() - t0


def main():
    b = parse_args()
    envs = [atari_env.make_env(b.env, b.seed + i, vector=b.vector_env) for i in range(b.threads)]
    print(atari_env.describe(b.env, b.vector_env), flush=True)
    obs = [e.reset() for e in envs]
    frames = [0] * b.threads

    if b.random_only:
        steps = b.updates * 5

        def step_random(i):
            rng = np.random.default_rng(i)
            for _ in range(steps):
                frames[i] += envs[i].step(int(rng.integers(envs[i].action_space.n)))[3]["frames"]

        wall = in_threads(step_random, b.threads)
        print(f"RESULT env={b.env} threads={b.threads} vector_env={int(b.vector_env)} "
              f"random_fps={sum(frames) / wall:.0f} steps_per_s={steps * b.threads / wall:.0f}", flush=True)
        return

    args = a3c.parse_args(["--env", b.env, "--threads", str(b.threads), "--seed", str(b.seed)])
    shape, n_actions = envs[0].observation_space.shape, int(envs[0].action_space.n)
    tf.set_random_seed(b.seed)
    g = a3c.build_global(shape, n_actions, args)
    nets = [a3c.build_thread(i, shape, n_actions, g, args) for i in range(b.threads)]
    sess = a3c.session(args)
    sess.run(tf.global_variables_initializer())
    sess.graph.finalize()
    rngs = [np.random.default_rng(b.seed + i) for i in range(b.threads)]
    fps = {}
    for mode, partial in (("partial_run", True), ("recompute", False)):
        def learn(i, n):
            for _ in range(n):
                sess.run(nets[i]["copy_from_global"])
                obs[i], _, _, f = a3c.rollout(sess, nets[i], g, envs[i], obs[i], rngs[i], args.lr, args, partial)
                frames[i] += f

        in_threads(lambda i: learn(i, 20), b.threads)        # warm-up: first-run graph pruning, caches
        frames[:] = [0] * b.threads
        wall = in_threads(lambda i: learn(i, b.updates), b.threads)
        fps[mode] = sum(frames) / wall
        print(f"mode={mode} threads={b.threads} updates={b.updates * b.threads} wall_s={wall:.1f} "
              f"updates_per_s={b.updates * b.threads / wall:.1f} fps={fps[mode]:.0f}", flush=True)
    print(f"RESULT partial_run_fps={fps['partial_run']:.0f} recompute_fps={fps['recompute']:.0f} "
          f"speedup={fps['partial_run'] / fps['recompute']:.2f}", flush=True)


if __name__ == "__main__":
    main()
