"""A3C: asynchronous advantage actor-critic, with Python threads and partial_run.

Paper: Mnih et al., "Asynchronous Methods for Deep Reinforcement Learning", ICML 2016,
https://arxiv.org/abs/1602.01783 -- Algorithm 3 (the loop in `rollout` + `worker`),
Section 8 (network, t_max = 5, gamma = 0.99, beta = 0.01, shared RMSProp).

    python a3c.py --env Breakout-v0 --threads 8                 # the card's command
    python a3c.py --env BreakoutNoFrameskip-v4 --threads 8      # the paper's frame setting
    python a3c.py --env CartPole-v1 --threads 2 --max-steps 500000
    python a3c.py --play checkpoints/CartPole-v1__1 --episodes 10
    python a3c.py --play checkpoints/BreakoutNoFrameskip-v4__1 --record breakout.mp4
"""
import argparse
import collections
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow.compat.v1 as tf  # noqa: E402

tf.logging.set_verbosity(tf.logging.ERROR)  # partial_run & co. are "deprecated" but present in TF 2.21
tf.disable_v2_behavior()  # placeholders, Session, partial_run, v1 optimizers, as in the slides

import atari_env  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default=None, help="gymnasium id (default Breakout-v0; for --play: the checkpoint's)")
    p.add_argument("--threads", type=int, default=8, help="actor-learner threads (paper: 16)")
    p.add_argument("--max-steps", type=int, default=80_000_000,
                   help="global steps T (agent steps, all threads) to train; lr anneals to 0 over them (paper's 1 day: ~80M)")
    p.add_argument("--t-max", type=int, default=5, help="steps per rollout before an update (paper: 5)")
    p.add_argument("--lr", type=float, default=7e-4,
                   help="initial RMSProp learning rate (paper samples LogUniform(1e-4, 1e-2); 7e-4 is the authors' value)")
    p.add_argument("--gamma", type=float, default=0.99, help="discount (paper: 0.99)")
    p.add_argument("--beta", type=float, default=0.01, help="entropy bonus weight (paper: 0.01)")
    p.add_argument("--value-coef", type=float, default=0.5,
                   help="weight of the (R - V)^2 loss (paper: plain gradient = 1.0; authors' code: 0.5)")
    p.add_argument("--max-grad-norm", type=float, default=40.0, help="clip accumulated gradients to this global norm")
    p.add_argument("--rms-decay", type=float, default=0.99, help="RMSProp decay (paper: 0.99)")
    p.add_argument("--rms-eps", type=float, default=0.1, help="RMSProp epsilon (authors: 0.1)")
    p.add_argument("--seed", type=int, default=1, help="seeds TF, numpy and thread i's env with seed + i")
    p.add_argument("--logdir", default=None, help="TensorBoard dir (default runs/<env>__<seed>__<time>)")
    p.add_argument("--checkpoint-dir", default=None, help="checkpoint dir (default checkpoints/<env>__<seed>)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint-dir")
    p.add_argument("--partial-run", action=argparse.BooleanOptionalAction, default=False,
                   help="reuse the forward passes that chose the actions in the update (the slides' tip); "
                        "off by default: TF 2.21's partial_run keeps part of every fed tensor (~120 KB per "
                        "update with the Atari net, GBs over a long run) and measured no faster than "
                        "recomputing (--no-partial-run, the default)")
    p.add_argument("--vector-env", action="store_true",
                   help="Atari: one ale_py AtariVectorEnv per thread (native preprocessing, releases the GIL)")
    p.add_argument("--log-interval", type=float, default=5.0, help="seconds between stdout/TensorBoard logs")
    p.add_argument("--save-interval", type=float, default=600.0, help="seconds between checkpoints")
    p.add_argument("--play", metavar="CHECKPOINT_DIR", help="run a trained policy instead of training")
    p.add_argument("--episodes", type=int, default=10, help="--play: full games to run")
    p.add_argument("--record", metavar="FILE.mp4", help="--play: write a video of the games")
    return p.parse_args(argv)


def die(msg, code=2):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


# ---------------------------------------------------------------- network (Section 8)
def conv(x, k, c_out, stride, name):
    w = tf.get_variable(f"{name}/w", [k, k, x.shape[-1], c_out], initializer=tf.glorot_uniform_initializer())
    b = tf.get_variable(f"{name}/b", [c_out], initializer=tf.zeros_initializer())
    return tf.nn.relu(tf.nn.conv2d(x, w, [1, stride, stride, 1], "VALID") + b)


def dense(x, n_out, name, act=tf.nn.relu, init=None):
    w = tf.get_variable(f"{name}/w", [x.shape[-1], n_out], initializer=init or tf.glorot_uniform_initializer())
    b = tf.get_variable(f"{name}/b", [n_out], initializer=tf.zeros_initializer())
    return act(tf.matmul(x, w) + b)


def network(s, n_actions):
    """s: [B, 84, 84, 4] uint8 (Atari) or [B, d] float32 -> logits [B, A], V [B].
    Variables come from the enclosing scope, so reuse=True shares them."""
    if s.dtype == tf.uint8:
        x = tf.cast(s, tf.float32) / 255.0
        x = conv(x, 8, 16, 4, "conv1")                    # [B, 20, 20, 16]
        x = conv(x, 4, 32, 2, "conv2")                    # [B, 9, 9, 32]
        x = dense(tf.reshape(x, [-1, 9 * 9 * 32]), 256, "fc")  # [B, 256]
    else:                                                 # MLP torso for vector observations
        x = dense(dense(s, 64, "fc1", tf.tanh), 64, "fc2", tf.tanh)
    ident = tf.identity
    logits = dense(x, n_actions, "pi", ident, tf.random_normal_initializer(stddev=0.01))  # theta: torso + pi
    v = dense(x, 1, "v", ident)[:, 0]                     # theta_v: torso + v (the torso is shared)
    return logits, v


def placeholder_for(obs_shape, name):
    return tf.placeholder(tf.uint8 if len(obs_shape) == 3 else tf.float32, [1, *obs_shape], name)


def build_global(obs_shape, n_actions, args):
    """A3C_global: theta and theta_v, the global step T, RMSProp with statistics shared by all threads."""
    with tf.variable_scope("global"):
        logits, _ = network(placeholder_for(obs_shape, "s"), n_actions)
        T = tf.get_variable("T", [], tf.int64, tf.zeros_initializer(), trainable=False)
        lr = tf.placeholder(tf.float32, [], "lr")         # fed each update: linear annealing to 0
        # One optimizer applied to the global variables from every thread = shared statistics (Section 4).
        # Note: TF's RMSProp starts its mean-square slot at ones; the reference starts at zeros.
        # Epsilon sits inside the square root, as in the reference.
        opt = tf.train.RMSPropOptimizer(lr, decay=args.rms_decay, momentum=0.0, epsilon=args.rms_eps)
    global_vars = tf.trainable_variables("global/")
    return dict(s=logits.graph.get_tensor_by_name("global/s:0"), pi=tf.nn.softmax(logits),
                T=T, lr=lr, opt=opt, vars=global_vars)


def build_thread(i, obs_shape, n_actions, g, args):
    """Thread i's network theta', theta_v', unrolled over t_max (+1 for the bootstrap state)
    with shared weights, so partial_run can run each step's forward pass on its own."""
    t_max = args.t_max
    with tf.variable_scope(f"thread_{i}"):
        s = [placeholder_for(obs_shape, f"s_{k}") for k in range(t_max + 1)]
        out = []
        for k in range(t_max + 1):
            with tf.variable_scope("net", reuse=k > 0):
                out.append(network(s[k], n_actions))
        local_vars = tf.trainable_variables(f"thread_{i}/")
        # copy_from_global: theta' <- theta, theta_v' <- theta_v (sync local weights)
        copy_from_global = tf.group(*[l.assign(w) for l, w in zip(local_vars, g["vars"])])

        a = tf.placeholder(tf.int32, [t_max], "a")
        R = tf.placeholder(tf.float32, [t_max], "R")
        mask = tf.placeholder(tf.float32, [t_max], "mask")  # 0 for padded steps after an early terminal
        logits = tf.concat([lg for lg, _ in out[:t_max]], 0)  # [t_max, A]
        v = tf.concat([vv for _, vv in out[:t_max]], 0)     # [t_max]
        log_pi = tf.nn.log_softmax(logits)                  # log_softmax, not log(softmax): no NaN on underflow
        log_pi_a = tf.reduce_sum(log_pi * tf.one_hot(a, n_actions), 1)  # log pi(a_i|s_i)  [t_max]
        advantage = tf.stop_gradient(R - v)                 # R - V(s_i): a constant for the policy gradient
        entropy = -tf.reduce_sum(tf.exp(log_pi) * log_pi, 1)  # H(pi(s_i))  [t_max]
        # Algorithm 3 ascends log pi * (R - V) + beta H; we minimise, so both enter with a minus:
        # the entropy *bonus* is subtracted from the loss (wrong sign = entropy gets minimised).
        policy_loss = -tf.reduce_sum(mask * (log_pi_a * advantage + args.beta * entropy))
        value_loss = tf.reduce_sum(mask * tf.square(R - v))  # (R - V(s_i; theta_v'))^2
        loss = policy_loss + args.value_coef * value_loss
        # Algorithm 3's "d theta <- d theta + grad ..." for i = t-1..t_start: the steps are separate
        # copies of the net, so tf.gradients of the sum adds the per-step gradients (AddN) = accumulation.
        accum_grads = tf.gradients(loss, local_vars)
        clipped, _ = tf.clip_by_global_norm(accum_grads, args.max_grad_norm)
        # Asynchronous update of the *global* theta, theta_v with the thread's gradients (Hogwild, no lock).
        apply = g["opt"].apply_gradients(zip(clipped, g["vars"]))
        n = tf.cast(tf.reduce_sum(mask), tf.int64)
        with tf.control_dependencies([apply]):              # partial_run cannot fetch ops: fetch a tensor
            T_after = tf.identity(g["T"].assign_add(n))     # T <- T + steps of this rollout
    n_f = tf.maximum(tf.reduce_sum(mask), 1.0)
    return dict(s=s, a=a, R=R, mask=mask, copy_from_global=copy_from_global, grads=accum_grads,
                pi=[tf.nn.softmax(lg) for lg, _ in out[:t_max]], v0=out[0][1], v_boot=out[t_max][1],
                train=[T_after, policy_loss / n_f, value_loss / n_f, tf.reduce_sum(mask * entropy) / n_f])


# ---------------------------------------------------------------- Algorithm 3, one thread
def n_step_returns(rewards, R, gamma):
    """R <- r_i + gamma R for i = t-1 down to t_start (Algorithm 3). R: 0 or V(s_t)."""
    out = np.zeros(len(rewards), np.float32)
    for i in reversed(range(len(rewards))):
        R = rewards[i] + gamma * R
        out[i] = R
    return out


def sample(rng, pi):
    pi = pi.astype(np.float64)                             # float32 sums can miss numpy's 1e-8 tolerance
    return int(rng.choice(len(pi), p=pi / pi.sum()))


def rollout(sess, net, g, env, obs, rng, lr, args, partial_run=True, extra=()):
    """Act for up to t_max steps (or a terminal), then one update. Returns next obs, outputs, finished games.
    partial_run: the forward passes that chose the actions are reused by the update (the slides' tip).
    Measured: TF 2.21 leaks part of each tensor fed through partial_run, even on finished handles
    (a 2-op graph fed 100 KB grows ~43 KB per handle; plain session.run stays flat)."""
    t_max, zero = args.t_max, np.zeros_like(obs)[None]
    if partial_run:
        fetches = net["pi"] + [net["v_boot"]] + net["train"] + list(extra)
        h = sess.partial_run_setup(fetches, net["s"] + [net["a"], net["R"], net["mask"], g["lr"]])
    states, actions, rewards, games = [], [], [], []
    done, final, frames = False, None, 0
    for k in range(t_max):                                  # t_start .. t
        if partial_run:
            pi = sess.partial_run(h, net["pi"][k], {net["s"][k]: obs[None]})[0]
        else:
            pi = sess.run(net["pi"][0], {net["s"][0]: obs[None]})[0]
        action = sample(rng, pi)                           # a_t ~ pi(a_t | s_t; theta')
        states.append(obs)
        actions.append(action)
        obs, r, done, info = env.step(action)
        rewards.append(r)
        frames += info["frames"]
        if info["game_over"]:
            games.append((info["episode_return"], info["episode_length"]))
        if done:
            final = info.get("final_obs") if info["truncated"] else None  # time limit: bootstrap, not 0
            break
    n = len(rewards)
    boot_state = obs if not done else final                # obs: the state after step t (already reset at game over)
    pad = {net["s"][k]: zero for k in range(n, t_max)}     # padded steps (masked out) finish the partial_run handle
    if boot_state is None:
        R = 0.0                                            # terminal s_t: R = 0
        pad[net["s"][t_max]] = zero
    elif partial_run:                                      # bootstrap R = V(s_t; theta_v') from the last state
        R = float(sess.partial_run(h, net["v_boot"], {net["s"][t_max]: boot_state[None]})[0])
    else:
        R = float(sess.run(net["v0"], {net["s"][0]: boot_state[None]})[0])
    feed = {net["a"]: np.pad(actions, (0, t_max - n)), net["mask"]: (np.arange(t_max) < n).astype(np.float32),
            net["R"]: np.pad(n_step_returns(rewards, R, args.gamma), (0, t_max - n)), g["lr"]: lr}
    if partial_run:
        feed.update(pad)
        left = net["pi"][n:] + ([net["v_boot"]] if boot_state is None else [])  # unfetched outputs of the handle
        vals = sess.partial_run(h, left + net["train"] + list(extra), feed)[len(left):]
    else:
        feed.update({net["s"][k]: x[None] for k, x in enumerate(states)})
        feed.update(pad)
        feed.pop(net["s"][t_max], None)
        vals = sess.run(net["train"] + list(extra), feed)  # the network runs a second time here
    return obs, vals, games, frames


def worker(i, sess, net, g, env, args, shared, stop):
    rng = np.random.default_rng(args.seed + i)
    obs = env.reset()
    while not stop.is_set() and shared["T"] < args.max_steps:
        lr = args.lr * max(0.0, 1.0 - shared["T"] / args.max_steps)  # linear annealing to 0
        sess.run(net["copy_from_global"])                  # sync local weights theta' <- theta before acting
        obs, (T, pl, vl, ent), games, frames = rollout(sess, net, g, env, obs, rng, lr, args, args.partial_run)
        env.frames += frames
        shared["T"] = max(shared["T"], int(T))
        shared["losses"].append((pl, vl, ent))
        for ret, length in games:
            shared["games"].append((int(T), ret, length))
    stop.set()                                             # the first thread to reach T_max stops the rest


class WorkerError(RuntimeError):
    pass


def run_workers(targets, stop, tick, interval):
    """Start one thread per target, call tick() every `interval` s until all end.
    A worker that raises sets `stop`, the others end, and WorkerError is raised here."""
    errors = []

    def wrap(i, fn):
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 -- reported by the main thread
            errors.append((i, e))
            stop.set()

    threads = [threading.Thread(target=wrap, args=(i, fn), daemon=True) for i, fn in enumerate(targets)]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            stop.wait(interval)
            tick()
            if stop.is_set():
                for t in threads:
                    t.join()
    except KeyboardInterrupt:                              # Ctrl-C reaches the main thread only
        stop.set()
        for t in threads:                                  # workers finish their rollout and return
            t.join()
        raise
    if errors:
        i, e = errors[0]
        raise WorkerError(f"worker {i} failed: {type(e).__name__}: {e}")


# ---------------------------------------------------------------- checkpoints
def save(sess, saver, ckpt_dir, meta):
    """Atomic: write into a temp dir, os.replace it to step-<T>, then swap latest.json."""
    os.makedirs(ckpt_dir, exist_ok=True)
    name = f"step-{meta['T']}"
    if not os.path.exists(os.path.join(ckpt_dir, name)):
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=ckpt_dir)
        saver.save(sess, os.path.join(tmp, "model"), write_meta_graph=False, write_state=False)
        os.replace(tmp, os.path.join(ckpt_dir, name))
    with open(os.path.join(ckpt_dir, ".latest.tmp"), "w") as f:
        json.dump(dict(meta, dir=name), f)
    os.replace(os.path.join(ckpt_dir, ".latest.tmp"), os.path.join(ckpt_dir, "latest.json"))
    for old in os.listdir(ckpt_dir):
        if old.startswith("step-") and old != name:
            shutil.rmtree(os.path.join(ckpt_dir, old), ignore_errors=True)


def load_meta(ckpt_dir, env_id, obs_shape=None, n_actions=None):
    path = os.path.join(ckpt_dir, "latest.json")
    if not os.path.isfile(path):
        die(f"no checkpoint in {ckpt_dir} (latest.json missing)")
    with open(path) as f:
        meta = json.load(f)
    if env_id is not None and (meta["env"] != env_id or (obs_shape is not None and (
            tuple(meta["obs_shape"]) != tuple(obs_shape) or meta["n_actions"] != n_actions))):
        die(f"checkpoint {ckpt_dir} is for {meta['env']} (obs {tuple(meta['obs_shape'])}, "
            f"{meta['n_actions']} actions), not {env_id}")
    return meta


def summary(writer, tag, value, step):
    writer.add_summary(tf.Summary(value=[tf.Summary.Value(tag=tag, simple_value=float(value))]), step)


def make_env_or_die(env_id, seed, **kw):
    try:
        return atari_env.make_env(env_id, seed, **kw)
    except atari_env.EnvError as e:
        die(str(e))
    except Exception as e:  # noqa: BLE001 -- e.g. a missing optional dependency (MuJoCo, Box2D)
        die(f"cannot make {env_id}: {type(e).__name__}: {e}")


def session(args):
    # Each session.run is a chain of tiny ops for batch 1: splitting one op over cores (intra-op)
    # only makes the threads fight; let each worker's run take one inter-op thread instead.
    return tf.Session(config=tf.ConfigProto(intra_op_parallelism_threads=1,
                                            inter_op_parallelism_threads=max(2, args.threads)))


# ---------------------------------------------------------------- --play
def play(args):
    meta = load_meta(args.play, None)
    env_id = args.env or meta["env"]
    env = make_env_or_die(env_id, args.seed, training=False, render=bool(args.record))
    obs_shape, n_actions = env.observation_space.shape, int(env.action_space.n)
    load_meta(args.play, env_id, obs_shape, n_actions)
    print(atari_env.describe(env_id), flush=True)
    tf.set_random_seed(args.seed)
    g = build_global(obs_shape, n_actions, args)
    sess = session(args)
    tf.train.Saver(g["vars"] + [g["T"]]).restore(sess, os.path.join(args.play, meta["dir"], "model"))
    rng, video, scores = np.random.default_rng(args.seed), None, []
    obs = env.reset()
    while len(scores) < args.episodes:
        pi = sess.run(g["pi"], {g["s"]: obs[None]})[0]
        obs, _, _, info = env.step(sample(rng, pi))       # sample, as in training
        if args.record:
            try:
                frame = env.render()
            except Exception as e:  # noqa: BLE001 -- classic control renders with pygame
                die(f"--record cannot render {env_id}: {e}")
            if video is None:
                video = cv2_writer(args.record, frame.shape)
            video.write(frame[:, :, ::-1])                 # RGB -> BGR
        if info["game_over"]:                              # full games: life loss does not end them
            scores.append(info["episode_return"])
            print(f"episode={len(scores)} return={scores[-1]:.1f} length={info['episode_length']}", flush=True)
    if video is not None:
        video.release()
    print(f"RESULT env={env_id} episodes={len(scores)} mean_return={np.mean(scores):.2f} "
          f"std_return={np.std(scores):.2f}", flush=True)


def cv2_writer(path, shape):
    import cv2
    return cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 15, (shape[1], shape[0]))


# ---------------------------------------------------------------- training
def main(argv=None):
    args = parse_args(argv)
    # Ctrl-C (and kill -TERM) -> KeyboardInterrupt in the main thread -> save a checkpoint, exit 0.
    # Explicit, because a background job may start with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.threads < 1:
        die("--threads must be >= 1")
    if args.play:
        return play(args)
    args.env = args.env or "Breakout-v0"
    tag = f"{args.env.replace('/', '_')}__{args.seed}"
    args.checkpoint_dir = args.checkpoint_dir or os.path.join("checkpoints", tag)
    args.logdir = args.logdir or os.path.join("runs", f"{tag}__{int(time.time())}")
    envs = [make_env_or_die(args.env, args.seed + i, vector=args.vector_env) for i in range(args.threads)]
    obs_shape, n_actions = envs[0].observation_space.shape, int(envs[0].action_space.n)
    meta = dict(env=args.env, obs_shape=list(obs_shape), n_actions=n_actions,
                network="cnn" if len(obs_shape) == 3 else "mlp")
    saved = load_meta(args.checkpoint_dir, args.env, obs_shape, n_actions) if args.resume else None
    print(atari_env.describe(args.env, args.vector_env), flush=True)

    tf.set_random_seed(args.seed)
    g = build_global(obs_shape, n_actions, args)
    nets = [build_thread(i, obs_shape, n_actions, g, args) for i in range(args.threads)]
    saver = tf.train.Saver(tf.global_variables("global/"), max_to_keep=1)  # theta, theta_v, T, RMSProp slots
    sess = session(args)
    sess.run(tf.global_variables_initializer())
    if saved:
        saver.restore(sess, os.path.join(args.checkpoint_dir, saved["dir"], "model"))
    sess.graph.finalize()                                  # no op may be added from the threads by mistake
    writer = tf.summary.FileWriter(args.logdir)
    shared = dict(T=int(sess.run(g["T"])), games=collections.deque(), losses=collections.deque())
    for env in envs:
        env.frames = 0
    t0, last = time.time(), [time.time(), 0, time.time()]  # time, frames, last save
    recent, n_games = collections.deque(maxlen=100), [0]

    def tick(final=False):
        now, frames, T = time.time(), sum(e.frames for e in envs), shared["T"]
        while shared["games"]:
            step, ret, length = shared["games"].popleft()
            recent.append(ret)
            n_games[0] += 1
            summary(writer, "charts/episodic_return", ret, step)
            summary(writer, "charts/episodic_length", length, step)
        losses = [shared["losses"].popleft() for _ in range(len(shared["losses"]))]
        fps = (frames - last[1]) / max(now - last[0], 1e-9)
        lr = args.lr * max(0.0, 1.0 - T / args.max_steps)
        mean = np.mean(recent) if recent else float("nan")
        summary(writer, "charts/fps", fps, T)
        summary(writer, "charts/lr", lr, T)
        if losses:
            for tag_, val in zip(["policy", "value", "entropy"], np.mean(losses, 0)):
                summary(writer, f"losses/{tag_}", val, T)
        writer.flush()
        if not final:
            print(f"global_step={T} fps={fps:.0f} episodes={n_games[0]} mean_return={mean:.2f} lr={lr:.2e}", flush=True)
        last[:2] = now, frames
        if final or now - last[2] > args.save_interval:
            save(sess, saver, args.checkpoint_dir, dict(meta, T=int(sess.run(g["T"]))))
            last[2] = now
        return mean

    stop = threading.Event()
    targets = [lambda i=i: worker(i, sess, nets[i], g, envs[i], args, shared, stop) for i in range(args.threads)]
    try:
        run_workers(targets, stop, tick, args.log_interval)
    except KeyboardInterrupt:
        print("interrupted: saving checkpoint", file=sys.stderr, flush=True)
    except WorkerError as e:
        die(str(e), 1)
    shared["T"] = int(sess.run(g["T"]))
    mean = tick(final=True)
    wall = time.time() - t0
    fps = sum(e.frames for e in envs) / wall
    print(f"RESULT env={args.env} global_step={shared['T']} episodes={n_games[0]} mean_return={mean:.2f} "
          f"fps={fps:.0f} wall_s={wall:.1f}", flush=True)


if __name__ == "__main__":
    main()
