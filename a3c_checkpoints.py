"""a3c.py's checkpoints, and how a run starts from one.

    <dir>/step-<T>/model.*   TF's Saver: theta, theta_v, T (global/...), RMSProp's slots (global/<w>/RMSProp, _1)
    <dir>/latest.json        env, obs_shape, n_actions, action_space, network, lstm, fire_reset, fire_life_loss, value_torso, method, mu, T, dir

Saved atomically (safe_files): a crash at any moment leaves the old checkpoint or the new one.
A run never deletes or replaces what it did not write itself."""
import json
import os
import shutil
import time

from a3c_cli import PROG
from cli import UserError, first_line, warn
from safe_files import staged_dir, write_json_atomic, writable_dir


def save(tf_saver_save, ckpt_dir, meta, mine):
    """Write a staged dir, rename it to step-<T>, swap latest.json, then delete the step dir
    this run wrote before (`mine`). Nothing this run did not write is touched or replaced."""
    name = f"step-{meta['T']}"
    if name not in mine and os.path.exists(os.path.join(ckpt_dir, name)):  # not ours: leave it alone
        name = f"step-{meta['T']}-{time.time_ns()}"
    if name not in mine:
        with staged_dir(ckpt_dir) as tmp:
            tf_saver_save(os.path.join(tmp, "model"))
            os.replace(tmp, os.path.join(ckpt_dir, name))
    write_json_atomic(os.path.join(ckpt_dir, "latest.json"), dict(meta, dir=name))
    for old in [d for d in mine if d != name]:
        shutil.rmtree(os.path.join(ckpt_dir, old), ignore_errors=True)
    mine[:] = [name]


def load_meta(ckpt_dir):
    """latest.json of a checkpoint dir, checked; a one-line UserError for anything missing or broken."""
    path = os.path.join(ckpt_dir, "latest.json")
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint in {ckpt_dir} (latest.json missing); train one first or check the path")
    try:
        with open(path) as f:
            meta = json.load(f)
        kinds = dict(env=str, obs_shape=list, n_actions=int, T=int, dir=str, lstm=bool)  # as save() writes them
        ok = isinstance(meta, dict) and all(isinstance(meta.get(k), kind) for k, kind in kinds.items()) \
            and all(isinstance(n, int) for n in meta["obs_shape"])
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"{path} is unreadable or incomplete; restore it from a backup, or start afresh "
                        f"with --overwrite")
    model_dir = os.path.realpath(os.path.join(ckpt_dir, meta["dir"]))
    inside = os.path.dirname(model_dir) == os.path.realpath(ckpt_dir)
    if not inside or not os.path.isfile(os.path.join(model_dir, "model.index")):
        raise UserError(f"{path} points to {meta['dir']!r}, which is not a saved model inside {ckpt_dir}")
    meta["model"] = os.path.join(model_dir, "model")
    return meta


def check_meta(meta, ckpt_dir, env_id, obs_shape, n_actions, lstm, value_torso=None, method="a3c", action_space=None,
               mu=None):
    """The checkpoint holds the network this run builds, or one UserError line says what differs."""
    saved = meta.get("method", "a3c")                      # checkpoints from before the flag: a3c
    if saved != method:
        raise UserError(f"checkpoint {ckpt_dir} holds a --method {saved} network, not {method}; "
                        f"use --method {saved} with it")
    saved_space = meta.get("action_space", action_space)  # checkpoints from before continuous actions: unchecked
    if meta["env"] != env_id or tuple(meta["obs_shape"]) != tuple(obs_shape) or meta["n_actions"] != n_actions \
            or saved_space != action_space:
        raise UserError(f"checkpoint {ckpt_dir} is for {meta['env']} (obs {tuple(meta['obs_shape'])}, "
                        f"actions {saved_space or meta['n_actions']}), not {env_id} (actions {action_space})")
    if meta["lstm"] != lstm:
        raise UserError(f"checkpoint {ckpt_dir} holds {'an LSTM' if meta['lstm'] else 'a feed-forward'} network; "
                        f"{'add' if meta['lstm'] else 'drop'} --lstm")
    saved_torso = meta.get("value_torso", "shared")        # checkpoints from before the flag: shared
    if value_torso and saved_torso != value_torso:
        raise UserError(f"checkpoint {ckpt_dir} holds a network with --value-torso {saved_torso}; "
                        f"resume it with that")
    if mu and (meta.get("mu") or "linear") != mu:        # continuous checkpoints from before the flag: linear
        raise UserError(f"checkpoint {ckpt_dir} holds a network with --mu {meta.get('mu') or 'linear'}; "
                        f"resume it with that")


def for_play(args):
    """--play: the checkpoint's latest.json; the network flags follow what it holds."""
    meta = load_meta(args.play)
    args.env = args.env or meta["env"]
    args.lstm = args.lstm or meta["lstm"]                  # a mismatch is refused by check_meta
    args.value_torso = meta.get("value_torso", "shared")
    args.mu = meta.get("mu") or "linear"                   # checkpoints from before the flag: linear mu
    args.method = args.method or meta.get("method", "a3c")  # a mismatch is refused by check_meta
    args.fire_reset = meta.get("fire_reset", True) and args.fire_reset
    args.fire_life_loss = meta.get("fire_life_loss", False) and args.fire_life_loss  # older checkpoints: as trained
    return meta


def saved_variables(g):
    """What a checkpoint holds, by name: theta, theta_v, T under their names (global/...), and RMSProp's
    two slots of each w in theta as global/<w>/RMSProp and _1, wherever its apply_gradients made them
    (inside an actor-learner's scope in one process, at the top in cluster mode)."""
    import tensorflow.compat.v1 as tf
    slots = {f"{w.op.name}/{g.opt.get_name()}{suffix}": g.opt.get_slot(w, slot)
             for w in g.theta for slot, suffix in (("rms", ""), ("momentum", "_1")) if g.opt.get_slot(w, slot)}
    ids = {id(v) for v in slots.values()}
    return {**{v.op.name: v for v in tf.global_variables("global/") if id(v) not in ids}, **slots}


def restore(sess, saver, meta):
    import tensorflow.compat.v1 as tf
    try:
        saver.restore(sess, meta["model"])
    except (tf.errors.OpError, ValueError) as e:
        raise UserError(f"cannot restore {meta['model']} ({first_line(e)}); the checkpoint is damaged or from "
                        f"another network") from None


class Checkpoints:
    """A training run's checkpoints. Before any training: the folders are writable, and a folder
    that holds a run is continued (--resume), replaced only on request (--overwrite), or refused.
    In cluster mode `sync` first pulls the parameter server's state into this graph."""

    def __init__(self, args, obs_shape, n_actions, action_space, network):
        meta = dict(env=args.env, obs_shape=list(obs_shape), n_actions=n_actions, action_space=str(action_space),
                    network=network, lstm=args.lstm,
                    fire_reset=args.fire_reset, fire_life_loss=args.fire_life_loss,
                    value_torso=args.value_torso, method=args.method,
                    mu=args.mu if args.continuous else None)  # --mu: continuous actions only
        self.dir, self.meta, self.saved, self.mine = args.checkpoint_dir, meta, None, []
        self.interval, self.sync = args.save_interval, None
        writable_dir(args.checkpoint_dir, "--checkpoint-dir")
        writable_dir(args.logdir, "--logdir")
        if args.resume:                                    # continuing that run: its checkpoint is ours to replace
            self.saved = load_meta(args.checkpoint_dir)
            self.mine = [self.saved["dir"]]
            check_meta(self.saved, args.checkpoint_dir, args.env, meta["obs_shape"], meta["n_actions"],
                       args.lstm, args.value_torso, args.method, meta["action_space"], meta["mu"])
        elif os.path.exists(os.path.join(args.checkpoint_dir, "latest.json")) and not args.overwrite:
            raise UserError(f"{args.checkpoint_dir} already holds a checkpoint; continue it with --resume, "
                            f"choose another --checkpoint-dir, or start afresh there with --overwrite")
        # --overwrite: the old step dir stays, latest.json moves on

    def start(self, sess, g):
        """theta, T and RMSProp's slots initialised or restored, then the thread-local copies.
        Finalises the graph."""
        import tensorflow.compat.v1 as tf
        held = saved_variables(g)
        self.saver = tf.train.Saver(held, max_to_keep=1, sharded=False)
        self.sess, self.T, self.last = sess, g.T, time.time()
        sess.run(tf.global_variables_initializer())
        if self.saved:
            try:
                in_file = {name for name, _ in tf.train.list_variables(self.saved["model"])}
            except (tf.errors.OpError, ValueError):
                in_file = set(held)                        # damaged: restore() says so in one line
            old = [n for n in held if n not in in_file and "/RMSProp" in n]  # saved before the slots were
            restore(sess, tf.train.Saver({n: v for n, v in held.items() if n not in old}) if old else self.saver,
                    self.saved)
            if old:
                warn(PROG, f"{self.dir} holds no RMSProp statistics (saved by an older a3c.py): they start afresh")
            print(f"resumed {self.dir} at global_step={sess.run(g.T)}", flush=True)
        sess.graph.finalize()                              # no op may be added from the threads by mistake

    def when_due(self):
        """Save if the last save (or the start) is more than --save-interval s ago."""
        if time.time() - self.last > self.interval:
            self.last = time.time()
            self()

    def __call__(self):
        """Save now. A failure warns and returns False: training goes on. False without a word when
        `sync` cannot have the state (the parameter server is gone: the run's error line says so)."""
        if self.sync and not self.sync():
            return False
        import tensorflow.compat.v1 as tf
        try:
            save(lambda path: self.saver.save(self.sess, path, write_meta_graph=False, write_state=False),
                 self.dir, dict(self.meta, T=int(self.sess.run(self.T))), self.mine)
            return True
        except (OSError, ValueError, tf.errors.OpError) as e:  # ValueError: TF's "parent directory doesn't exist"
            where = f"the last good one is {os.path.join(self.dir, self.mine[0])}" if self.mine else "none was saved"
            warn(PROG, f"checkpoint not saved ({first_line(e)}); {where}")
            return False
