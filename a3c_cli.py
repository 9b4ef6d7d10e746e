"""a3c.py's command line, the part that is not the paper: the range checks of its flags, the
flags of its outputs (--logdir ... --record), default folders, envs made or refused in one line,
and the entry point that turns a user's mistake into one error line and Ctrl-C into a clean exit.

The flags with the paper's defaults, and their help, are declared in a3c.py itself."""
import functools
import os
import sys
import time

import atari_env
from cli import UserError, first_line, run_main
from interrupts import Signals
from tf_setup import load_tf1

PROG = "a3c.py"


def load_tf():
    """tensorflow.compat.v1, loaded quietly in graph mode (tf_setup); Ctrl-C while it loads: nothing
    has started, nothing to save, exit status 130."""
    try:
        return load_tf1()
    except KeyboardInterrupt:
        sys.exit(130)


def check_ranges(args):
    """a3c.py's flags: a value out of range is one UserError line naming the flag."""
    at_least_1, positive, at_least_0 = (lambda x: x >= 1, ">= 1"), (lambda x: x > 0, "> 0"), (lambda x: x >= 0, ">= 0")
    rules = dict(threads=at_least_1, t_max=at_least_1, max_steps=at_least_1, workers=at_least_1,
                 episodes=at_least_1, eval_episodes=at_least_1, lr=positive, rms_eps=positive,
                 max_grad_norm=positive, save_interval=positive, reward_scale=positive, gamma=(lambda x: 0 <= x <= 1, "in [0, 1]"),
                 rms_decay=(lambda x: 0 <= x < 1, "in [0, 1)"), beta=at_least_0, value_coef=at_least_0,
                 eval_every=(lambda x: x >= 0, ">= 0 (0 = off)"), target_every=at_least_1, eps_steps=at_least_1,
                 eval_eps=(lambda x: 0 <= x <= 1, "in [0, 1]"),
                 log_interval=(lambda x: x >= 0.1, ">= 0.1 (seconds)"))
    if args.method is None and not args.play:             # --play takes the checkpoint's
        args.method = "a3c"
    for name, (ok, valid) in rules.items():
        if getattr(args, name) is not None and not ok(getattr(args, name)):
            raise UserError(f"--{name.replace('_', '-')} must be {valid} (got {getattr(args, name)})")
    for flag, on in (("--lstm", args.lstm), ("--partial-run", args.partial_run),
                     ("--value-torso own", args.value_torso == "own")):
        if on and args.method not in (None, "a3c"):
            raise UserError(f"{flag} is for A3C; drop it or --method {args.method}")
    if args.partial_run and args.lstm:
        raise UserError("--partial-run is for the feed-forward network; drop it or --lstm")
    if args.ray_address and not args.workers:
        raise UserError("--ray-address needs --workers N (the worker processes to run on that cluster)")
    if args.workers and args.partial_run:
        raise UserError("--partial-run runs in one process; drop it or --workers")


def kind_help(defaults, mlp_lstm):
    """For a flag whose default depends on the network: its help's '(default: Atari CNN ..., ...)'."""
    names = dict(cnn="Atari CNN", mlp="classic-control MLP", gauss="continuous-action MLP")

    def fmt(v):                                            # a dict: one value per --method
        if isinstance(v, dict):
            return " or ".join(f"{fmt(x)} ({', '.join(m for m in v if v[m] == x)})" for x in dict.fromkeys(v.values()))
        return f"{v:,}" if isinstance(v, int) else f"{v:g}"

    def per_kind(name):
        lstm = f", {fmt(mlp_lstm[name])} with --lstm" if name in mlp_lstm else ""
        return "(default: " + ", ".join(f"{names[k]} {fmt(d[name])}" + (lstm if k == "mlp" else "")
                                        for k, d in defaults.items() if name in d) + ")"
    return per_kind


def read_actions(args, space):
    """args.bounds and args.continuous from the env's action space (a Box: the Gaussian policy);
    returns the number of discrete actions, or of the Box's dimensions."""
    n_actions, args.bounds = atari_env.actions(space)
    args.continuous = args.bounds is not None
    return n_actions


def fill_defaults(args, obs_shape, defaults, mlp_lstm):
    """The defaults that depend on the network: the CNN's for Atari frames, the MLP's for vectors
    (`mlp_lstm` over those with --lstm), the Gaussian policy's for Box actions (args.continuous).
    Returns the network's kind, as latest.json records it."""
    kind = "cnn" if len(obs_shape) == 3 else "gauss" if args.continuous else "mlp"
    if kind == "gauss" and (args.method != "a3c" or args.partial_run):
        flag = "--partial-run" if args.method == "a3c" else f"--method {args.method}"
        raise UserError(f"{flag} needs discrete actions, and {args.env} has continuous ones; drop {flag}")
    args.value_torso = args.value_torso or ("own" if kind == "gauss" else "shared")  # Section 9: no sharing
    if args.value_torso == "own" and (kind == "cnn" or args.lstm and kind == "mlp"):
        raise UserError("--value-torso own is for the feed-forward MLP (vector observations, no --lstm)")
    for name, value in dict(defaults[kind], **(mlp_lstm if kind == "mlp" and args.lstm else {})).items():
        if getattr(args, name) is None:
            setattr(args, name, value.get(args.method) if isinstance(value, dict) else value)  # dict: per --method
    return kind


def add_output_flags(p):
    """Where a run writes, how often, and --play: flags no algorithm reads."""
    p.add_argument("--logdir", default=None, help="TensorBoard dir (default runs/<env>__<seed>__<time>)")
    p.add_argument("--checkpoint-dir", default=None, help="checkpoint dir (default checkpoints/<env>__<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the run whose checkpoint is in --checkpoint-dir")
    p.add_argument("--overwrite", action="store_true", help="start afresh in a --checkpoint-dir that holds a run")
    p.add_argument("--log-interval", type=float, default=5.0,
                   help="seconds between stdout/TensorBoard logs (default 5)")
    p.add_argument("--save-interval", type=float, default=600.0, help="seconds between checkpoints (default 600)")
    p.add_argument("--play", metavar="CHECKPOINT_DIR", help="run a trained policy instead of training")
    p.add_argument("--episodes", type=int, default=10, help="--play: full games to run (default 10)")
    p.add_argument("--record", metavar="FILE.mp4", help="--play: write a video of the games")


def fill_dirs(args):
    """The default env and folders (the same for every worker of a cluster and every restart), and
    --vector-env: the GIL-free env path wherever it can run the id."""
    args.env = args.env or "Breakout-v0"
    if args.vector_env is None:
        args.vector_env = atari_env.vector_ok(args.env)
    tag = f"{args.env.replace('/', '_')}__{args.seed}"
    args.checkpoint_dir = args.checkpoint_dir or os.path.join("checkpoints", tag)
    args.logdir = args.logdir or os.path.join("runs", f"{tag}__{int(time.time())}")


def make_env(env_id, seed, **kw):
    """atari_env.make_env, with a bad id or a missing optional dependency as one UserError line."""
    try:
        return atari_env.make_env(env_id, seed, **kw)
    except atari_env.EnvError as e:
        raise UserError(str(e)) from None
    except Exception as e:  # noqa: BLE001 -- e.g. a missing optional dependency (MuJoCo, Box2D)
        raise UserError(f"cannot make {env_id}: {first_line(e)}") from None


def cluster_shutdown():
    import a3c_cluster                                     # loaded already by a3c.py
    a3c_cluster.shutdown()                                 # cluster mode: no process of this run outlives it


def entry_point(body):
    """main(argv=None) from body(argv, signals). Ctrl-C and SIGTERM raise KeyboardInterrupt in the
    main thread (interrupts.Signals; explicit, because a background job of a non-interactive shell
    starts with SIGINT ignored); one that reaches here came before training started: nothing to
    save, status 130. A UserError is one line and its status. Each call builds a fresh graph (main
    is also called in-process), and an in-process caller gets its own signal handlers back."""
    def before_training(e):
        print("interrupted", file=sys.stderr, flush=True)
        return 130

    @functools.wraps(body)
    def main(argv=None):
        import tensorflow.compat.v1 as tf                  # loaded already, quietly, by a3c.py
        signals = Signals()

        def in_a_fresh_graph():
            with tf.Graph().as_default():
                return body(argv, signals)
        return run_main(PROG, signals, in_a_fresh_graph, before_training, cluster_shutdown)
    return main
