"""How fast does a3c.py train, against how fast the simulator alone runs, in the same threads?

    python bench/a3c_speed.py --env BreakoutNoFrameskip-v4 --threads 2
    python bench/a3c_speed.py --env BreakoutNoFrameskip-v4 --threads 8 --vector-env
    python bench/a3c_speed.py --threads 2 --variants default,lstm,partial_run   # side by side, one run
    python bench/a3c_speed.py --threads 2 --variants default,nstep-q,1step-q,1step-sarsa   # the four methods
    python bench/a3c_speed.py --profile                  # where one agent step's time goes (1 thread)

Each variant runs a3c.py's own training path (its --method's loop from `LEARNERS`, in threads on a fresh graph) for
--warmup agent steps, then is timed for --steps more; random-action stepping of the same env
path in the same number of threads gives the simulator's own speed. Ends with
    RESULT env=... threads=N fps=<training frames/s> random_fps=<random-action frames/s>
(fps of the first variant).
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
    p.add_argument("--vector-env", action=argparse.BooleanOptionalAction,
                   help="one ale_py AtariVectorEnv per thread (default: as a3c.py, on where the id allows)")
    p.add_argument("--variants", default="default",
                   help="comma-separated: default (A3C), lstm, partial_run, nstep-q, 1step-q, 1step-sarsa")
    p.add_argument("--warmup", type=int, default=1000, help="agent steps before timing starts")
    p.add_argument("--steps", type=int, default=6000, help="agent steps timed per variant (all threads)")
    p.add_argument("--profile", action="store_true", help="time each part of one agent step, 1 thread")
    p.add_argument("--no-core-limit", action="store_true",
                   help="let every thread run its rollout at once (a3c.py lets one rollout per core run at a time)")
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args()


def make_envs(b, n):
    return [atari_env.make_env(b.env, b.seed + i, vector=b.vector_env) for i in range(n)]


def random_fps(b):
    envs, frames = make_envs(b, b.threads), [0] * b.threads
    steps = b.steps // b.threads

    def step_random(i):
        rng, env = np.random.default_rng(i), envs[i]
        env.reset()
        for _ in range(steps):
            frames[i] += env.step(int(rng.integers(env.action_space.n)))[3]["frames"]

    threads = [threading.Thread(target=step_random, args=(i,)) for i in range(b.threads)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(frames) / (time.perf_counter() - t0)


def build(b, variant, envs, finalize=True):
    """a3c.py's graph for `variant`, as main() builds it; returns (args, sess, g, nets)."""
    extra = {"lstm": ["--lstm"], "partial_run": ["--partial-run"], "default": [],
             **{m: ["--method", m] for m in a3c.TARGETS}}[variant]
    args = a3c.parse_args(["--env", b.env, "--threads", str(b.threads), "--seed", str(b.seed), *extra,
                           "--vector-env" if b.vector_env else "--no-vector-env"])
    a3c.fill_defaults(args, envs[0].observation_space.shape, a3c.DEFAULTS, a3c.MLP_LSTM)
    args.max_steps = 10 ** 12                              # no annealing, no end
    shape, n_actions = envs[0].observation_space.shape, int(envs[0].action_space.n)
    tf.set_random_seed(b.seed)
    g = a3c.build_global(shape, n_actions, args)
    nets = [a3c.build_local(f"thread_{i}", g, shape, n_actions, args) for i in range(b.threads)]  # + partial_run's
    sess = a3c.session(args.threads)
    sess.run(tf.global_variables_initializer())
    if finalize:
        sess.graph.finalize()
    return args, sess, g, nets


def training_fps(b, variant):
    envs = make_envs(b, b.threads)
    with tf.Graph().as_default():
        args, sess, g, nets = build(b, variant, envs)
    shared, stop = a3c.Shared(0, b.threads), threading.Event()
    if b.no_core_limit:
        shared.cores = threading.BoundedSemaphore(b.threads)
    loop = a3c.LEARNERS[args.method]                       # A3C's actor_learner or value_learner
    threads = [threading.Thread(target=loop, args=(i, sess, nets[i], g, envs[i], args, shared, stop))
               for i in range(b.threads)]
    for t in threads:
        t.start()
    while shared.T < b.warmup:
        time.sleep(0.01)
    T0, f0, t0, c0 = shared.T, sum(shared.frames), time.perf_counter(), time.process_time()
    while shared.T < T0 + b.steps:
        time.sleep(0.01)
    T1, f1, t1, c1 = shared.T, sum(shared.frames), time.perf_counter(), time.process_time()
    stop.set()
    for t in threads:
        t.join()
    sess.close()
    training_fps.cpu_ms_per_step = (c1 - c0) / (T1 - T0) * 1e3   # CPU of the whole process per agent step
    return (f1 - f0) / (t1 - t0), (T1 - T0) / (t1 - t0)


def profile(b):
    """Per agent step, 1 thread: each part timed alone, many times, then the whole training loop."""
    b.threads = 1
    envs = make_envs(b, 1)
    env = envs[0]
    with tf.Graph().as_default():
        args, sess, g, nets = build(b, "default", envs, finalize=False)
        net = nets[0]
        with tf.variable_scope("profile"):                 # the update split in two to time RMSProp apart
            grads_ph = [tf.placeholder(tf.float32, v.shape) for v in g.theta]
            apply_only = g.opt.apply_gradients(zip(grads_ph, g.theta))
    rng, n = np.random.default_rng(0), 300
    n_actions = int(env.action_space.n)
    s = env.reset()
    states = [env.step(int(rng.integers(n_actions)))[0] for _ in range(args.t_max)]
    fd = a3c.feed(net, np.array(states), ())
    fd.update({net.a_ph: [0] * args.t_max, net.R_ph: np.ones(args.t_max, np.float32), g.lr_ph: 1e-9})
    grads = sess.run(net.grads, fd)

    def timed(fn, reps=n):
        fn()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps * 1e3   # ms per call

    raw = env.env if hasattr(env, "env") and hasattr(env.env, "unwrapped") else None
    parts = {}
    if isinstance(env, atari_env.AtariEnv):
        frame = raw.step(0)[0]
        parts["emulator (4 raw frames, gymnasium AtariEnv)"] = timed(lambda: [raw.step(int(rng.integers(n_actions))) for _ in range(4)])
        parts["preprocessing (max, resize, stack)"] = timed(lambda: env._push(atari_env.preprocess(frame, frame)))
    else:
        parts["env step (emulator + native preprocessing)"] = timed(lambda: env.step(int(rng.integers(n_actions))))
    parts["acting forward pass, per step"] = timed(lambda: sess.run((net.pi, net.state), a3c.feed(net, s[None], ())))
    pool = a3c.tf.Session.run                              # the same call handed to TF's inter-op thread pool
    parts["  the same via TF's inter-op pool (plain Session.run)"] = timed(
        lambda: pool(sess, (net.pi, net.state), a3c.feed(net, s[None], ())))
    parts["sampling the action (numpy)"] = timed(lambda: a3c.sample(rng, (np.full(n_actions, 1 / n_actions, np.float32),)), 3000)
    per_rollout = {
        "bootstrap V(s_t), per rollout": timed(lambda: sess.run(net.v, a3c.feed(net, s[None], ()))),
        "update: gradients + clip + RMSProp, per rollout": timed(lambda: sess.run(net.train, fd)),
        "  of which RMSProp apply alone": timed(lambda: sess.run(apply_only, {**dict(zip(grads_ph, grads)), g.lr_ph: 1e-9})),
        "copy_from_global, per rollout": timed(lambda: sess.run(net.copy_from_global)),
    }
    for k, v in per_rollout.items():
        parts[k.replace("per rollout", f"per step (/{args.t_max})")] = v / args.t_max
    sess.close()
    fps, steps_per_s = training_fps(b, "default")
    whole = 1e3 / steps_per_s
    print(f"{'part of one agent step (1 thread)':<58} {'ms':>7}")
    for k, v in parts.items():
        print(f"{k:<58} {v:7.3f}")
    counted = sum(v for k, v in parts.items() if not k.startswith("  "))
    print(f"{'sum of the parts':<58} {counted:7.3f}")
    print(f"{'whole training loop, measured (1 thread)':<58} {whole:7.3f}   ({fps:.0f} frames/s)")
    print(f"{'rest: Python loop, bookkeeping, GIL hand-overs':<58} {whole - counted:7.3f}")


def main():
    b = parse_args()
    if b.vector_env is None:
        b.vector_env = atari_env.vector_ok(b.env)
    print(atari_env.describe(b.env, b.vector_env), flush=True)
    if b.profile:
        return profile(b)
    rnd = random_fps(b)
    print(f"mode=random threads={b.threads} fps={rnd:.0f}", flush=True)
    fps = {}
    for variant in b.variants.split(","):
        fps[variant], sps = training_fps(b, variant)
        print(f"mode={variant} threads={b.threads} core_limit={int(not b.no_core_limit)} fps={fps[variant]:.0f} steps_per_s={sps:.0f} "
              f"of_random={fps[variant] / rnd:.2f} cpu_ms_per_step={training_fps.cpu_ms_per_step:.2f}", flush=True)
    first = b.variants.split(",")[0]
    print(f"RESULT env={b.env} threads={b.threads} vector_env={int(b.vector_env)} fps={fps[first]:.0f} "
          f"random_fps={rnd:.0f}", flush=True)


if __name__ == "__main__":
    main()
