"""Machinery for a3c.py that is not the algorithm: one-line errors, checkpoints, TensorBoard
scalars, video, and the launcher that runs a parameter-server cluster on this machine.

Nothing here changes what A3C computes; a3c.py reads top to bottom without it."""
import argparse
import collections
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types

import numpy as np

import atari_env


@contextlib.contextmanager
def quiet_stderr():
    """TF 2.21 prints C++ start-up lines (oneDNN, no CUDA driver) before any log level applies:
    hide file descriptor 2 while it loads, so that a bad flag still gets one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        die(message)


def check_ranges(args):
    """a3c.py's flags: a value out of range gets one line naming the flag."""
    at_least_1, positive = (lambda x: x >= 1, ">= 1"), (lambda x: x > 0, "> 0")
    for name, (ok, valid) in dict(threads=at_least_1, t_max=at_least_1, max_steps=at_least_1, workers=at_least_1,
                                  episodes=at_least_1, eval_episodes=at_least_1, lr=positive, rms_eps=positive,
                                  max_grad_norm=positive, save_interval=positive, gamma=(lambda x: 0 <= x <= 1, "in [0, 1]"),
                                  rms_decay=(lambda x: 0 <= x < 1, "in [0, 1)"), beta=(lambda x: x >= 0, ">= 0"),
                                  value_coef=(lambda x: x >= 0, ">= 0"), eval_every=(lambda x: x >= 0, ">= 0 (0 = off)"),
                                  log_interval=(lambda x: x >= 0.1, ">= 0.1 (seconds)"),
                                  stall_timeout=(lambda x: x >= 0, ">= 0 (0 = never)")).items():
        if getattr(args, name) is not None and not ok(getattr(args, name)):
            die(f"--{name.replace('_', '-')} must be {valid} (got {getattr(args, name)})")
    if args.partial_run and args.lstm:
        die("--partial-run is for the feed-forward network; drop it or --lstm")


def make_env_or_die(env_id, seed, **kw):
    try:
        return atari_env.make_env(env_id, seed, **kw)
    except atari_env.EnvError as e:
        die(str(e))
    except Exception as e:  # noqa: BLE001 -- e.g. a missing optional dependency (MuJoCo, Box2D)
        die(f"cannot make {env_id}: {first_line(e)}")


def die(msg, code=2):
    """Bad input or an unrecoverable state: one line on stderr, no traceback."""
    print(f"a3c.py: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def warn(msg):
    print(f"a3c.py: warning: {msg}", file=sys.stderr, flush=True)


def ignore_signals():
    """Ctrl-C and SIGTERM are ignored from here on (a3c.main gives the handlers back on return)."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)


def first_line(e):
    """'Type: message' on one line. TensorFlow's errors start with 'Graph execution error:', then the
    node and where it was defined; the line that says what went wrong comes after those."""
    text = [ln for ln in str(e).strip().splitlines() if any(c.isalnum() for c in ln)]  # no "=====" rules
    if text and text[0].startswith("Graph execution error"):
        header = (" ", "\t", "Graph execution", "Detected at", "Node:", "From /job:")
        text = [ln for ln in text if not ln.startswith(header)] or text
    return f"{type(e).__name__}: {text[0][:240]}" if text else type(e).__name__


def retry_aborted(actor_learner, aborted_error):
    """Cluster mode: TensorFlow's gRPC runtime may abort or cancel one step (AbortedError and the
    like, `aborted_error`), a passing failure that its MonitoredSession retries too; the thread then
    starts a fresh rollout. The same again within 5 minutes, or any other error, ends the thread."""
    def run(*args):
        last = -1e9
        while True:
            try:
                return actor_learner(*args)
            except aborted_error as e:
                if time.time() - last < 300:
                    raise
                last = time.time()
                warn(f"{threading.current_thread().name}: {first_line(e)}; it starts a fresh rollout")
    return run


RESTART = 3  # exit status of a worker that TF's gRPC runtime failed (stalled, or errors twice); --workers restarts


def stall_watchdog(shared, timeout, learners, who):
    """Cluster mode: TF 2.21's gRPC runtime can leave a worker's session.run calls blocked for good
    (README: known problem). No update for `timeout` s while a learner thread is alive: one error line,
    and exit status RESTART (blocked threads cannot be joined); the --workers launcher then restarts."""
    seen, since = shared.T, time.time()
    while any(t.is_alive() for t in learners):             # also after a stop: they must finish their rollout
        time.sleep(1.0)
        if shared.T != seen:
            seen, since = shared.T, time.time()
        elif time.time() - since > timeout:
            print(f"a3c.py: error: {who}: no update for {timeout:g} s: stalled in TensorFlow's gRPC runtime "
                  f"(README); continue with --resume", file=sys.stderr, flush=True)
            os._exit(RESTART)


# ---------------------------------------------------------------- checkpoints
# <dir>/step-<T>/model.*  +  <dir>/latest.json (env, obs shape, actions, network, T, dir).
def writable_dir(path, flag):
    """Create `path` if needed and prove we can write there, before any training is done."""
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        die(f"{flag} {path} is not a writable folder ({e.strerror}); choose another {flag}")


def save(tf_saver_save, ckpt_dir, meta, mine):
    """Atomic: write a temp dir, rename it to step-<T>, swap latest.json, then delete the step dir
    this run wrote before (`mine`). Nothing this run did not write is touched or replaced."""
    name = f"step-{meta['T']}"
    if name not in mine and os.path.exists(os.path.join(ckpt_dir, name)):  # not ours: leave it alone
        name = f"step-{meta['T']}-{time.time_ns()}"
    if name not in mine:
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=ckpt_dir)
        try:
            tf_saver_save(os.path.join(tmp, "model"))
            os.replace(tmp, os.path.join(ckpt_dir, name))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    latest_tmp = os.path.join(ckpt_dir, f".latest-{os.getpid()}.tmp")
    with open(latest_tmp, "w") as f:
        json.dump(dict(meta, dir=name), f)
    os.replace(latest_tmp, os.path.join(ckpt_dir, "latest.json"))
    for old in [d for d in mine if d != name]:
        shutil.rmtree(os.path.join(ckpt_dir, old), ignore_errors=True)
    mine[:] = [name]


def load_meta(ckpt_dir):
    """latest.json of a checkpoint dir, checked; a one-line error for anything missing or broken."""
    path = os.path.join(ckpt_dir, "latest.json")
    if not os.path.isfile(path):
        die(f"no checkpoint in {ckpt_dir} (latest.json missing); train one first or check the path")
    try:
        with open(path) as f:
            meta = json.load(f)
        kinds = dict(env=str, obs_shape=list, n_actions=int, T=int, dir=str, lstm=bool)  # as save() writes them
        ok = isinstance(meta, dict) and all(isinstance(meta.get(k), kind) for k, kind in kinds.items()) \
            and all(isinstance(n, int) for n in meta["obs_shape"])
    except (OSError, ValueError):
        ok = False
    if not ok:
        die(f"{path} is unreadable or incomplete; restore it from a backup, or start afresh with --overwrite")
    model_dir = os.path.realpath(os.path.join(ckpt_dir, meta["dir"]))
    if os.path.dirname(model_dir) != os.path.realpath(ckpt_dir) or not os.path.isfile(os.path.join(model_dir, "model.index")):
        die(f"{path} points to {meta['dir']!r}, which is not a saved model inside {ckpt_dir}")
    meta["model"] = os.path.join(model_dir, "model")
    return meta


def check_meta(meta, ckpt_dir, env_id, obs_shape, n_actions, lstm, value_torso=None):
    if meta["env"] != env_id or tuple(meta["obs_shape"]) != tuple(obs_shape) or meta["n_actions"] != n_actions:
        die(f"checkpoint {ckpt_dir} is for {meta['env']} (obs {tuple(meta['obs_shape'])}, {meta['n_actions']} "
            f"actions), not {env_id}")
    if meta["lstm"] != lstm:
        die(f"checkpoint {ckpt_dir} holds {'an LSTM' if meta['lstm'] else 'a feed-forward'} network; "
            f"{'add' if meta['lstm'] else 'drop'} --lstm")
    saved_torso = meta.get("value_torso", "shared")        # checkpoints from before the flag: shared
    if value_torso and saved_torso != value_torso:
        die(f"checkpoint {ckpt_dir} holds a network with --value-torso {saved_torso}; resume it with that")


def prepare_checkpoint_dir(args):
    """Before any training: the folders are writable, and a folder that holds a run is continued
    (--resume), replaced only on request (--overwrite), or refused. Returns the checkpoint to
    resume (or None) and the step dirs this run may delete once it has saved its own."""
    writable_dir(args.checkpoint_dir, "--checkpoint-dir")
    writable_dir(args.logdir, "--logdir")
    if args.resume:                                        # continuing that run: its checkpoint is ours to replace
        saved = load_meta(args.checkpoint_dir)
        return saved, [saved["dir"]]
    if os.path.exists(os.path.join(args.checkpoint_dir, "latest.json")) and not args.overwrite:
        die(f"{args.checkpoint_dir} already holds a checkpoint; continue it with --resume, choose another "
            f"--checkpoint-dir, or start afresh there with --overwrite")
    return None, []                                        # --overwrite: the old step dir stays, latest.json moves on


# ---------------------------------------------------------------- logging
class Log:
    """Every --log-interval: TensorBoard scalars (charts/, losses/, eval/) and one key=value line."""

    def __init__(self, tf, writer, args, shared, learning_rate):
        self.tf, self.writer, self.args, self.shared, self.learning_rate = tf, writer, args, shared, learning_rate
        self.recent, self.games, self.last_eval = collections.deque(maxlen=100), 0, float("nan")
        self.t0 = self.t = time.time()
        self.T0, self.frames = shared.T, 0

    def scalars(self, **tag_value_step):                   # charts_fps=(value, step) -> charts/fps
        if self.writer:
            for tag, (value, step) in tag_value_step.items():
                self.writer.add_summary(self.tf.Summary(value=[self.tf.Summary.Value(
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
            step, mean, std = sh.evals.popleft()
            self.last_eval = mean
            print(f"eval global_step={step} eval_return={mean:.2f} eval_std={std:.2f} episodes={args.eval_episodes}")
            self.scalars(eval_episodic_return=(mean, step), eval_episodic_return_std=(std, step))
        fps = (frames - self.frames) / max(now - self.t, 1e-9)
        lr, mean = self.learning_rate(args, T), np.mean(self.recent) if self.recent else float("nan")
        stats = [sh.stats.popleft() for _ in range(len(sh.stats))]
        self.scalars(charts_fps=(fps, T), charts_lr=(lr, T), **{f"losses_{k}": (v, T) for k, v in zip(
            ["policy", "value", "entropy"], np.mean(stats, 0) if stats else [])})
        if not final:
            eta = (args.max_steps - T) / (T - self.T0) * (now - self.t0) if T > self.T0 else float("nan")
            print(f"global_step={T} progress={100 * T / args.max_steps:.1f}% eta={fmt_time(eta)} fps={fps:.0f} "
                  f"episodes={self.games} mean_return={mean:.2f} lr={lr:.2e}", flush=True)
        self.t, self.frames = now, frames
        return mean


def fmt_time(s):
    if s != s or s == float("inf"):
        return "?"
    s = max(0, int(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def open_video(path, env, env_id):
    """--record: prove the file can be written before playing (OpenCV fails silently otherwise)."""
    import cv2
    try:
        env.reset()
        frame = env.render()
    except Exception as e:  # noqa: BLE001 -- classic control renders with pygame, an optional install
        die(f"--record cannot render {env_id}: {first_line(e)}")
    with quiet_stderr():                                   # OpenCV prints its own C++ error for a bad path
        video = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 15, (frame.shape[1], frame.shape[0]))
    if not video.isOpened():
        die(f"--record cannot write {path}: not a writable path, or not a video type OpenCV encodes (use .mp4)")
    return video


# ---------------------------------------------------------------- cluster flags and the local launcher
def parse_hosts(text, flag):
    hosts = [h.strip() for h in (text or "").split(",") if h.strip()]
    for h in hosts:
        host, _, port = h.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            die(f"{flag}: {h!r} is not host:port (e.g. 10.0.0.2:2222)")
    if not hosts:
        die(f"{flag} is required with --job-name (host:port[,host:port...])")
    return hosts


def join_cluster(tf, args):
    """Start this process's TF server (--job-name, --task-index). A ps serves until its process ends
    (TF has no shutdown); a worker gets what train() needs to place and run its graph."""
    hosts = {"ps": parse_hosts(args.ps_hosts, "--ps-hosts"), "worker": parse_hosts(args.worker_hosts, "--worker-hosts")}
    if args.task_index is None or not 0 <= args.task_index < len(hosts[args.job_name]):
        die(f"--task-index must be 0..{len(hosts[args.job_name]) - 1} for --job-name {args.job_name} "
            f"(got {args.task_index})")
    me = f"/job:{args.job_name}/task:{args.task_index}"
    # Without device filters a worker waits for every other worker, and the ps dials workers that are not up.
    config = tf.ConfigProto(device_filters=["/job:ps"] if args.job_name == "ps" else ["/job:ps", me])
    try:
        with quiet_stderr():                               # "failed call to cuInit" on machines without a GPU
            server = tf.distribute.Server(tf.train.ClusterSpec(hosts), args.job_name, args.task_index, config=config)
    except tf.errors.OpError as e:                         # e.g. the port is taken
        die(f"cannot start this {args.job_name}'s server at {hosts[args.job_name][args.task_index]}: {first_line(e)}")
    if args.job_name == "ps":
        while True:
            time.sleep(3600)
    return types.SimpleNamespace(chief=args.task_index == 0, task_index=args.task_index, target=server.target,
                                 config=config, worker_device=me,  # theta, T, slots on the ps (round-robin):
                                 ps_device=tf.train.replica_device_setter(len(hosts["ps"]), worker_device=me))


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _strip(argv, flag):
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return out


def _die_with_parent():
    try:  # Linux: children die with the launcher even if it is killed with SIGKILL (no orphans)
        import ctypes
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def launch_local(script, argv, n_workers, checkpoint_dir=None, restarts=5):
    """--workers N: a ps and N workers on free localhost ports, logs prefixed, all stopped together.
    The ps has no shutdown: it runs until this launcher kills it, after the chief's last save.
    A worker that TF's gRPC runtime failed (exit status RESTART) makes it restart them all from the
    chief's last checkpoint (--resume), up to `restarts` times."""
    interrupted = threading.Event()
    for attempt in range(restarts + 1):
        failed, restart, chief, result = _run_cluster(script, argv, n_workers, interrupted)
        can_resume = checkpoint_dir and os.path.exists(os.path.join(checkpoint_dir, "latest.json"))
        if not (restart and can_resume and attempt < restarts and not interrupted.is_set()):
            break
        warn(f"{failed}; restarting the cluster from the last checkpoint ({attempt + 1} of {restarts})")
        argv = [a for a in argv if a not in ("--resume", "--overwrite")] + ["--resume"]
    if failed == "interrupted":
        saved = "the chief saved a checkpoint" if chief.returncode == 0 else \
            f"the chief exited with status {chief.returncode}: see its log above for its checkpoint"
        print(f"interrupted: {saved}", file=sys.stderr, flush=True)
        return 0
    if failed:
        die(failed, 1)
    if result:
        print(result[-1], flush=True)                      # the chief's RESULT line, last
    return 0


def _run_cluster(script, argv, n_workers, interrupted):
    """Start a ps and n_workers workers, wait until the workers end, one fails, or Ctrl-C; stop them all.
    Returns (what failed or None, whether it asked for a restart, the chief's process, its RESULT lines)."""
    for s in (signal.SIGINT, signal.SIGTERM):              # a flag, not KeyboardInterrupt, which could strike while
        signal.signal(s, lambda *_: interrupted.set())     # the processes or their log readers are being started
    ps_port, *worker_ports = free_ports(n_workers + 1)
    common = [sys.executable, script, *_strip(argv, "--workers"), "--ps-hosts", f"localhost:{ps_port}",
              "--worker-hosts", ",".join(f"localhost:{p}" for p in worker_ports)]
    names = ["ps"] + [f"worker {i}" for i in range(n_workers)]
    procs, result = {}, []
    for name in names:                                     # own session: the terminal's Ctrl-C reaches us only
        job, i = ("ps", 0) if name == "ps" else ("worker", int(name.split()[1]))
        procs[name] = subprocess.Popen(common + ["--job-name", job, "--task-index", str(i)], stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                       preexec_fn=_die_with_parent)
    last_line = {n: "" for n in names}

    def stream(name):
        for line in procs[name].stdout:
            if line.startswith("RESULT ") and name == "worker 0":
                result.append(line.rstrip("\n"))
            if line.strip():
                last_line[name] = line.strip()
            print(f"[{name}] {line}", end="", flush=True)

    readers = [threading.Thread(target=stream, args=(n,), daemon=True) for n in names]
    for r in readers:
        r.start()
    workers = [procs[n] for n in names[1:]]

    def first_failure():                                   # (what, whether it asks for a restart), or None
        for name in names:
            code = procs[name].poll()
            if code not in (None, 0) or (name == "ps" and code is not None):
                time.sleep(0.2)                            # let its reader print its last line
                return f"{name} exited with status {code}: {last_line[name][:200]}", code == RESTART

    failure = None
    while not failure and any(p.poll() is None for p in workers) and not interrupted.is_set():
        time.sleep(0.2)
        failure = first_failure()
    failed, restart = failure or first_failure() or (None, False)
    if interrupted.is_set():
        failed = "interrupted"
    ignore_signals()                                       # a second Ctrl-C must not kill the chief mid-save
    for p in workers:                                      # the chief saves a checkpoint on SIGTERM
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.time() + 120
    for p in workers:
        try:
            p.wait(max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
    procs["ps"].kill()
    procs["ps"].wait()
    for r in readers:
        r.join(5)
    return failed, restart, workers[0], result
