"""a3c.py's bookkeeping and logging: what the threads record (Shared), and the TensorBoard scalars
(charts/, losses/, eval/) and key=value line on stdout that the main thread writes from it (Log)."""
import collections
import os
import threading
import time

import numpy as np

from cli import fmt_time


class Shared:
    """What the threads share besides the graph: T as last read, frames per thread, finished games,
    the losses of each update and the evaluations, for the log to drain."""

    def __init__(self, T, threads, first=0):
        self.T, self.frames, self.first = T, [0] * threads, first  # first: this process's first thread
        # At most one rollout per core at a time. The OS time-slices 8 threads on 2 cores anyway; slicing
        # at rollout boundaries means fewer threads contend for the GIL at once (measured: docs/a3c-results.md, speed).
        self.cores = threading.BoundedSemaphore(min(threads, len(os.sched_getaffinity(0))))
        self.games, self.stats, self.evals = collections.deque(), collections.deque(), collections.deque()

    def record(self, i, info):
        self.frames[i] += info["frames"]
        if info["game_over"]:
            self.games.append((self.T, info["episode_return"], info["episode_length"]))

    def update(self, stats):
        self.T = max(self.T, int(stats["T"]))
        self.stats.append({k: float(v) for k, v in stats.items() if k != "T"})  # A3C's three, or q_loss


def torso_stats(scope):
    """For the Atari CNN: the share of its 256 fc units whose output differs between the states of an
    update's rollout (TensorBoard losses/live_units, and live= on stdout). A ReLU that fires for no
    input passes no gradient and stays off; once the conv layers are dead too, the fc units that still
    fire give the same output for every screen. At 0 the torso is dead: pi and V no longer depend on s,
    and the policy drifts to uniform under the entropy term (docs/a3c-results.md)."""
    import tensorflow.compat.v1 as tf
    try:
        fc = tf.get_default_graph().get_tensor_by_name(f"{scope}/fc:0")  # [n, 256]
    except KeyError:                                       # the MLP: tanh units, which do not die
        return {}
    varies = tf.reduce_max(fc, 0) > tf.reduce_min(fc, 0)  # [256]: an output that depends on s
    return {"live_units": tf.reduce_mean(tf.cast(varies, tf.float32))}


class Log:
    """Called every --log-interval from the main thread: drains what the threads recorded in
    `shared` (games, losses, evaluations) and writes it; `writer` is a tf.summary.FileWriter or None."""

    def __init__(self, writer, args, shared, learning_rate):
        self.writer, self.args, self.shared, self.learning_rate = writer, args, shared, learning_rate
        self.recent, self.games, self.last_eval = collections.deque(maxlen=100), 0, float("nan")
        self.t0 = self.t = time.time()
        self.T0, self.frames = shared.T, 0

    def scalars(self, **tag_value_step):                   # charts_fps=(value, step) -> charts/fps
        if self.writer:
            import tensorflow.compat.v1 as tf
            for tag, (value, step) in tag_value_step.items():
                self.writer.add_summary(tf.Summary(value=[tf.Summary.Value(
                    tag=tag.replace("_", "/", 1), simple_value=float(value))]), step)
            self.writer.flush()

    def __call__(self, final=False):
        """Drain what the threads recorded; returns the mean raw score of the last 100 games."""
        sh, args, now, frames, T = self.shared, self.args, time.time(), sum(self.shared.frames), self.shared.T
        while sh.games:
            step, ret, length = sh.games.popleft()
            self.recent.append(ret)
            self.games += 1
            self.scalars(charts_episodic_return=(ret, step), charts_episodic_length=(length, step))
        while sh.evals:
            step, games = sh.evals.popleft()               # (raw score, agent steps) per game
            (mean, length), std = np.mean(games, axis=0), np.std([ret for ret, _ in games])
            self.last_eval = mean
            print(f"eval global_step={step} eval_return={mean:.2f} eval_std={std:.2f} eval_length={length:.0f} "
                  f"episodes={args.eval_episodes}")
            self.scalars(eval_episodic_return=(mean, step), eval_episodic_return_std=(std, step),
                         eval_episodic_length=(length, step))
        fps = (frames - self.frames) / max(now - self.t, 1e-9)
        lr, mean = self.learning_rate(args, T), np.mean(self.recent) if self.recent else float("nan")
        stats = [sh.stats.popleft() for _ in range(len(sh.stats))]
        losses = {k: np.mean([st[k] for st in stats]) for k in (stats[0] if stats else {})}  # policy, ..., q
        if "grad_norm" in losses:                          # one outsized update can kill the torso: keep the max
            losses["grad_norm_max"] = max(st["grad_norm"] for st in stats)
        self.scalars(charts_fps=(fps, T), charts_lr=(lr, T),
                     **{f"losses_{k.removesuffix('_loss')}": (value, T) for k, value in losses.items()})
        if not final:
            eta = (args.max_steps - T) / (T - self.T0) * (now - self.t0) if T > self.T0 else float("nan")
            live = f" live={losses['live_units']:.2f}" if "live_units" in losses else ""
            print(f"global_step={T} progress={100 * T / args.max_steps:.1f}% eta={fmt_time(eta)} fps={fps:.0f} "
                  f"episodes={self.games} mean_return={mean:.2f} lr={lr:.2e}{live}", flush=True)
        self.t, self.frames = now, frames
        return mean
