"""What does a3c.py's cluster mode (Ray) cost on one machine?

    python bench/a3c_cluster.py --env BreakoutNoFrameskip-v4

1. Per update, the two calls that touch the global network, in one process against a worker of the
   cluster (a3c_cluster.RemoteSession; the parameter server an actor in another process of a local
   Ray instance): copy_from_global (pull theta) and the update (compute_gradients -> clip here,
   RMSProp in the parameter server).
2. End to end, a3c.py itself, the same number of agent steps: 1 process x 2 threads against
   2 workers x 1 thread beside the parameter server.
Prints one `per_update ...` line per set-up of 1., one `end_to_end ...` line per set-up of 2.
"""
import argparse
import os
import re
import subprocess
import sys
import time
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
import a3c  # noqa: E402
import a3c_cluster  # noqa: E402  (the cluster machinery beside a3c.py, not this file)

tf = a3c.tf
SCRIPT = os.path.join(HERE, "..", "a3c.py")


def timed(fn, reps):
    for _ in range(10):
        fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps * 1e3


def per_update_ms(b, remote):
    """ms per copy_from_global and per update; remote: through a parameter-server actor."""
    shape, n_actions = (84, 84, 4), 4
    args = a3c.parse_args(["--env", b.env, "--threads", "1", "--workers", "1"])
    a3c.fill_defaults(args, shape, a3c.DEFAULTS, a3c.MLP_LSTM)
    with tf.Graph().as_default():
        g = a3c.build_global(shape, n_actions, args)
        net = a3c.build_local("thread_0", g, shape, n_actions, args)
        sess = a3c.session(1)
        sess.run(tf.global_variables_initializer())
        if remote:
            import ray
            ps = ray.remote(a3c_cluster.ParameterServer).options(num_cpus=0).remote(args, shape, n_actions)
            ray.get(ps.pid.remote())
            sess = a3c_cluster.RemoteSession(sess, ps, g, [net])
        rng = np.random.default_rng(0)
        fd = {net.s_ph: rng.integers(0, 255, (5, *shape), dtype=np.uint8), net.a_ph: [0, 1, 2, 3, 0],
              net.R_ph: np.ones(5, np.float32), g.lr_ph: 1e-9}
        out = {"copy_from_global": timed(lambda: sess.run(net.copy_from_global), b.reps),
               "update": timed(lambda: sess.run(net.train, fd), b.reps)}
        n_params = sum(int(np.prod(v.shape)) for v in g.theta)
    return out, n_params


def end_to_end_fps(b, flags):
    """a3c.py with `flags` for --steps agent steps: its RESULT line's frames/s."""
    p = subprocess.run([sys.executable, SCRIPT, "--env", b.env, "--max-steps", str(b.steps), "--eval-every", "0",
                        "--log-interval", "30", "--checkpoint-dir", f"/tmp/a3c_cluster_bench/ck{time.time_ns()}",
                        "--logdir", "/tmp/a3c_cluster_bench/tb", *flags], capture_output=True, text=True)
    m = re.search(r"^RESULT .* fps=(\d+)", p.stdout, re.M)
    if not m:
        raise RuntimeError(p.stdout[-2000:] + p.stderr[-2000:])
    return float(m.group(1))


def main():
    pa = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    pa.add_argument("--env", default="BreakoutNoFrameskip-v4")
    pa.add_argument("--reps", type=int, default=200, help="calls timed per measurement")
    pa.add_argument("--steps", type=int, default=40000, help="agent steps per end-to-end run")
    b = pa.parse_args()
    a3c_cluster.start_ray(types.SimpleNamespace(ray_address=None, workers=1))
    for remote in (False, True):
        ms, n_params = per_update_ms(b, remote)
        where = "worker + parameter server (Ray, localhost)" if remote else "one process"
        print(f"per_update {where}: copy_from_global={ms['copy_from_global']:.2f} ms update={ms['update']:.2f} ms "
              f"sum={sum(ms.values()):.2f} ms params={n_params} MB_each_way={n_params * 4 / 1e6:.2f}", flush=True)
    a3c_cluster.shutdown()
    for name, flags in (("1 process x 2 threads", ["--threads", "2"]),
                        ("2 workers x 1 thread + parameter server", ["--workers", "2", "--threads", "1"])):
        print(f"end_to_end {name}: fps={end_to_end_fps(b, flags):.0f}", flush=True)


if __name__ == "__main__":
    main()
