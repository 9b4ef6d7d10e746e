"""What does a3c.py's cluster mode cost on one machine?

    python bench/a3c_cluster.py --env BreakoutNoFrameskip-v4

1. Per update, the two calls that touch the global network, in one process against a worker of a
   localhost cluster (its ps in another process; 1 and 2 ps tasks): copy_from_global (pull theta)
   and the update (compute_gradients on the local network, push, RMSProp on the ps).
2. End to end, a3c.py itself, the same number of agent steps: 1 process x 2 threads against
   2 worker processes x 1 thread + 1 ps. Frames/s = all workers' frames / the slowest one's wall.
Prints one `per_update ...` line per set-up of 1., one `end_to_end ...` line per set-up of 2.
"""
import argparse
import os
import re
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
import a3c  # noqa: E402
import a3c_cluster  # noqa: E402  (the cluster machinery beside a3c.py, not this file)

tf = a3c.tf
SCRIPT = os.path.join(HERE, "..", "a3c.py")


def per_update_ms(b, n_ps):
    """ms per copy_from_global and per update; n_ps = 0: one process, no cluster."""
    shape, n_actions = (84, 84, 4), 4
    args = a3c.parse_args(["--env", b.env, "--threads", "1"])
    a3c.fill_defaults(args, shape, a3c.DEFAULTS, a3c.MLP_LSTM)
    procs, target, config, ps_dev, me = [], "", None, None, None
    if n_ps:
        ports = a3c_cluster.free_ports(n_ps + 1)
        hosts = {"ps": [f"localhost:{p}" for p in ports[:n_ps]], "worker": [f"localhost:{ports[-1]}"]}
        common = [sys.executable, SCRIPT, "--ps-hosts", ",".join(hosts["ps"]), "--worker-hosts", hosts["worker"][0],
                  "--job-name", "ps"]
        procs = [subprocess.Popen(common + ["--task-index", str(i)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for i in range(n_ps)]
        me = "/job:worker/task:0"
        config = tf.ConfigProto(device_filters=["/job:ps", me])
        server = tf.distribute.Server(tf.train.ClusterSpec(hosts), "worker", 0, config=config)
        target, ps_dev = server.target, tf.train.replica_device_setter(n_ps, worker_device=me)
    try:                                                   # the ps processes go whatever happens
        with tf.Graph().as_default():
            with tf.device(ps_dev):
                g = a3c.build_global(shape, n_actions, args)
            with tf.device(me):
                net = a3c.build_local("thread_0", g, shape, n_actions, args)
            sess = a3c.session(args.threads, target, config)
            sess.run(tf.global_variables_initializer())
            rng = np.random.default_rng(0)
            fd = {net.s_ph: rng.integers(0, 255, (5, *shape), dtype=np.uint8), net.a_ph: [0, 1, 2, 3, 0],
                  net.R_ph: np.ones(5, np.float32), g.lr_ph: 1e-9}
            out = {}
            for name, fn in (("copy_from_global", lambda: sess.run(net.copy_from_global)),
                             ("update", lambda: sess.run(net.train, fd))):
                for _ in range(10):
                    fn()
                t0 = time.perf_counter()
                for _ in range(b.reps):
                    fn()
                out[name] = (time.perf_counter() - t0) / b.reps * 1e3
            sess.close()
    finally:
        for p in procs:
            p.kill()
            p.wait()
    n_params = sum(int(np.prod(v.shape)) for v in g.theta)
    return out, n_params


def end_to_end_fps(b, flags):
    """a3c.py with `flags` for --steps agent steps: all workers' frames / the slowest worker's wall."""
    p = subprocess.run([sys.executable, SCRIPT, "--env", b.env, "--max-steps", str(b.steps), "--eval-every", "0",
                        "--log-interval", "30", "--checkpoint-dir", f"/tmp/a3c_cluster_bench/ck{time.time_ns()}",
                        "--logdir", "/tmp/a3c_cluster_bench/tb", *flags], capture_output=True, text=True)
    fps = frames_per_s(p.stdout)
    if fps is None:
        raise RuntimeError(p.stdout[-2000:] + p.stderr[-2000:])
    return fps


def frames_per_s(stdout):
    """From a3c.py's RESULT lines: all workers' frames / the slowest worker's wall (None: no line).
    With --workers the launcher prefixes each worker's lines with [worker i] and then repeats the
    chief's RESULT line unprefixed: only the prefixed ones count, else the chief's is counted twice."""
    lines = re.findall(r"^\[worker \d+\] RESULT .*$", stdout, re.M) or re.findall(r"^RESULT .*$", stdout, re.M)
    frames, wall = 0.0, 0.0
    for m in (re.search(r"fps=(\d+) wall_s=([\d.]+)", line) for line in lines):
        frames += float(m.group(1)) * float(m.group(2))
        wall = max(wall, float(m.group(2)))
    return frames / wall if wall else None


def main():
    pa = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    pa.add_argument("--env", default="BreakoutNoFrameskip-v4")
    pa.add_argument("--reps", type=int, default=200, help="calls timed per measurement")
    pa.add_argument("--steps", type=int, default=40000, help="agent steps per end-to-end run")
    b = pa.parse_args()
    for n_ps in (0, 1, 2):
        ms, n_params = per_update_ms(b, n_ps)
        where = "one process" if not n_ps else f"worker + {n_ps} ps (localhost gRPC)"
        print(f"per_update {where}: copy_from_global={ms['copy_from_global']:.2f} ms update={ms['update']:.2f} ms "
              f"sum={sum(ms.values()):.2f} ms params={n_params} MB_each_way={n_params * 4 / 1e6:.2f}", flush=True)
    for name, flags in (("1 process x 2 threads", ["--threads", "2"]),
                        ("2 workers x 1 thread + 1 ps", ["--workers", "2", "--threads", "1"])):
        print(f"end_to_end {name}: fps={end_to_end_fps(b, flags):.0f}", flush=True)


if __name__ == "__main__":
    main()
