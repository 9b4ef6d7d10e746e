"""a3c.py's cluster mode on Ray (docs/cluster.md): the slides' three steps split across processes.

    ParameterServer  an actor: theta, theta_v, T and RMSProp's slots in its own TF1 graph, whose
                     apply_gradients takes the gradients as placeholders (push), and theta as arrays (pull)
    Worker           an actor per --workers: --threads actor-learner threads, a3c.LEARNERS unchanged,
                     on a RemoteSession: copy_from_global first pulls theta; the update runs
                     compute_gradients -> clip in the worker's graph and pushes the clipped gradients
    Cluster          the chief, in the process the user started: starts Ray (or joins --ray-address), the
                     actors, and one thread that follows the workers (their games, frames and losses into
                     a3c_log.Shared; a dead worker restarted by Ray is started again); checkpoints pull
                     the parameter server's state into the chief's graph first

Ray starts, watches and stops the processes; arrays travel through its object store."""
import importlib
import logging
import os
import secrets
import signal
import socket
import threading
import time

import atari_env
from a3c_cli import PROG, make_env
from a3c_log import Shared
from cli import UserError, first_line, warn
from tf_session import session

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_RESTARTS = 3        # per worker; one more death ends the run
START_TIMEOUT = 180     # s for an actor to start (Ray places it, it imports TensorFlow, builds its graph)


def add_flags(p):
    cl = p.add_argument_group("cluster mode on Ray (docs/cluster.md)")
    cl.add_argument("--workers", type=int, metavar="N", help="run Algorithm 3's threads in N worker processes (--threads "
                    "each) beside a parameter server; a local Ray instance unless --ray-address")
    cl.add_argument("--ray-address", metavar="HOST:PORT", help="join the Ray cluster whose head is there "
                    "(`ray start --head` prints it; `auto`: the one this machine has joined)")


class VariableLoader:
    """Writes arrays into variables through their initializers (feeding the initial value), so that a
    finalised graph needs no new op. Names are the variables' own: the same in every process's graph."""

    def __init__(self, variables):
        self.variables = variables
        self.names = [v.op.name for v in variables]

    def get(self, sess):
        return dict(zip(self.names, sess.run(self.variables)))

    def set(self, sess, values):
        missing = set(self.names) - set(values)
        if missing:
            raise ValueError(f"no value for {sorted(missing)[:3]}")
        sess.run([v.initializer for v in self.variables],
                 {v.initializer.inputs[1]: values[n] for v, n in zip(self.variables, self.names)})


def ps_update(g, tf):
    """The parameter server's half of the update: RMSProp applied to theta from gradients fed as arrays,
    then T <- T + n. Built in the chief's graph too, so that its Saver holds the same slots."""
    d_theta = [tf.placeholder(w.dtype.base_dtype, w.shape) for w in g.theta]
    n_ph = tf.placeholder(tf.int64, [])
    update = g.opt.apply_gradients(zip(d_theta, g.theta))
    with tf.control_dependencies([update]):
        T = tf.identity(g.T.assign_add(n_ph))
    return d_theta, n_ph, T


class ParameterServer:
    """Holds theta, theta_v, T and RMSProp's slots; applies one pushed update at a time (Ray runs an
    actor's calls in order), so the parameter server's RMSProp is the shared one of Section 4."""

    def __init__(self, args, obs_shape, n_actions):
        a3c = importlib.import_module("a3c")
        tf = a3c.tf
        with tf.Graph().as_default():
            self.g = a3c.build_global(obs_shape, n_actions, args)
            self.d_theta_ph, self.n_ph, self.T_after = ps_update(self.g, tf)
            self.theta = VariableLoader(self.g.theta)
            self.state = VariableLoader(tf.global_variables("global/"))
            self.sess = session(1)
            self.sess.run(tf.global_variables_initializer())  # the chief sends its theta (set_state) before any use
            self.sess.graph.finalize()

    def pull(self):
        return self.sess.run(self.g.theta)

    def push(self, d_theta, lr, n):
        return int(self.sess.run(self.T_after, {**dict(zip(self.d_theta_ph, d_theta)), self.g.lr_ph: lr,
                                                self.n_ph: n}))

    def get_T(self):
        return int(self.sess.run(self.g.T))

    def get_state(self):
        return self.state.get(self.sess)

    def set_state(self, values):
        self.state.set(self.sess, values)

    def pid(self):
        return os.getpid()


class RemoteSession:
    """A worker's (or the chief's) session as a3c.py's functions see it. Two fetches travel to the
    parameter server: a net's copy_from_global (pull theta into this graph's copy of it, then copy
    as usual) and a learner's train (compute_gradients -> clip here, push d_theta, get T back);
    everything else runs in this process's graph."""

    def __init__(self, sess, ps, g, nets, check_ps=None):
        self.sess, self.ps, self.g, self.check_ps = sess, ps, g, check_ps
        self.copies = {net.copy_from_global for net in nets}
        self.learners = {id(net.train): net for net in nets if hasattr(net, "train")}
        self.theta = VariableLoader(g.theta)
        self.steps = 0                                     # agent steps pushed from this process

    def pull_theta(self):
        import ray
        try:
            theta = ray.get(self.ps.pull.remote())
        except ray.exceptions.RayActorError:
            if self.check_ps:                              # the chief's: one line naming the parameter server
                self.check_ps()
            raise
        self.theta.set(self.sess, dict(zip(self.theta.names, theta)))

    def run(self, fetches, feed_dict=None, **kw):
        import ray
        if not isinstance(fetches, dict) and fetches in self.copies:
            self.pull_theta()                              # theta <- the parameter server's theta
        net = self.learners.get(id(fetches))
        if net is None:
            return self.sess.run(fetches, feed_dict, **kw)
        stats = {k: t for k, t in fetches.items() if k != "T"}  # T is the one fetch that waits for the update
        d_theta, stats = self.sess.run((net.clipped, stats), feed_dict)
        n = len(feed_dict[net.R_ph])
        self.steps += n
        return dict(stats, T=ray.get(self.ps.push.remote(d_theta, feed_dict[self.g.lr_ph], n)))


class Worker:
    """--threads actor-learner threads, as a3c.main starts them in one process: thread first + i plays its
    own env seeded seed + first + i, its own theta', the --method's loop (a3c.LEARNERS)."""

    def __init__(self, index, args, ps_name):
        import ray
        ps = ray.get_actor(ps_name)                        # by name: a restarted worker needs no stored handle
        a3c = importlib.import_module("a3c")
        tf = a3c.tf
        first = index * args.threads
        env_kw = dict(vector=args.vector_env, **atari_env.flags_of(args))
        envs = [make_env(args.env, args.seed + first + i, **env_kw) for i in range(args.threads)]
        obs_shape, n_actions = envs[0].observation_space.shape, atari_env.actions(envs[0].action_space)[0]
        with tf.Graph().as_default():
            tf.set_random_seed(args.seed + first)
            g = a3c.build_global(obs_shape, n_actions, args)  # theta as last pulled: what copy_from_global reads
            nets = [a3c.build_local(f"thread_{i}", g, obs_shape, n_actions, args) for i in range(args.threads)]
            self.sess = RemoteSession(session(args.threads), ps, g, nets)
            self.sess.sess.run(tf.global_variables_initializer())
            self.sess.sess.graph.finalize()
        self.shared = Shared(ray.get(ps.get_T.remote()), args.threads, first)
        self.stop_event, self.errors = threading.Event(), []

        def run(i):
            try:
                a3c.LEARNERS[args.method](i, self.sess, nets[i], g, envs[i], args, self.shared, self.stop_event)
            except Exception as e:  # noqa: BLE001 -- reported to the chief, which ends the run with it
                self.errors.append(f"actor-learner {first + i} failed: {first_line(e)}")
                self.stop_event.set()
        self.threads = [threading.Thread(target=run, args=(i,), name=f"actor-learner {first + i}", daemon=True)
                        for i in range(args.threads)]

    def start(self):
        for t in self.threads:
            if t.ident is None:                            # asked again after a passing unavailability: once
                t.start()
        return os.getpid()

    def drain(self):
        """What happened since the last drain: games, losses; and the totals so far."""
        sh = self.shared
        games = [sh.games.popleft() for _ in range(len(sh.games))]
        stats = [sh.stats.popleft() for _ in range(len(sh.stats))]
        return dict(frames=sum(sh.frames), steps=self.sess.steps, games=games, stats=stats, errors=list(self.errors),
                    running=any(t.is_alive() for t in self.threads))

    def stop(self):
        self.stop_event.set()                              # each thread finishes its rollout and its push
        for t in self.threads:
            t.join()
        return self.drain()


def ps_died(e, checkpoint):
    last = os.path.join(checkpoint.dir, checkpoint.mine[0]) if checkpoint.mine else "none was saved"
    return UserError(f"the parameter server died ({first_line(e)[:120]}); training stopped, the last checkpoint "
                     f"is {last}" + ("; continue with --resume" if checkpoint.mine else ""), 1)


def check_reachable(address):
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray-address {address!r} is not HOST:PORT or auto (e.g. 10.0.0.2:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise UserError(f"cannot reach a Ray cluster at {address} ({e.strerror or e}); start its head there "
                        f"with `ray start --head`, or check the address") from None


def start_ray(args):
    """A local Ray instance for this run (no dashboard, token authentication on), or the cluster at
    --ray-address, which receives this folder's code."""
    if not args.ray_address:                               # before Ray is imported: it reads these then
        os.environ.setdefault("RAY_AUTH_MODE", "token")    # this run's own token: only its processes get in
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
    import ray
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    if args.ray_address and args.ray_address != "auto":
        check_reachable(args.ray_address)
    code = dict(working_dir=HERE, excludes=[".git", ".venv", "venv", "checkpoints", "runs", "videos", "*.mp4"])
    ours = signal.getsignal(signal.SIGTERM)
    try:
        if not args.ray_address:
            ray.init(num_cpus=args.workers, **quiet)       # one logical CPU per worker; the ps takes none
        else:
            ray.init(address=args.ray_address, runtime_env=code, **quiet)
        signal.signal(signal.SIGTERM, ours)                # ray.init's own exits without a save
    except Exception as e:  # noqa: BLE001 -- Ray raises ConnectionError, RuntimeError, its own errors
        where = f"join the Ray cluster at {args.ray_address}" if args.ray_address else "start a local Ray instance"
        token = " (a cluster with token authentication: export RAY_AUTH_MODE=token, its token in ~/.ray/auth_token " \
            "or RAY_AUTH_TOKEN)" if args.ray_address not in (None, "auto") and "RAY_AUTH_MODE" not in os.environ else ""
        raise UserError(f"cannot {where} ({first_line(e)}){token}", 1) from None


class Cluster:
    """The chief's side. Built before the chief's graph is finalised (its Saver must see the parameter
    server's slots); start() once the chief holds theta (initialised or restored)."""

    def __init__(self, args, g, obs_shape, n_actions, tf):
        ps_update(g, tf)                                   # the same global/ variables as the parameter server's
        self.args, self.g = args, g
        self.state = VariableLoader(tf.global_variables("global/"))
        start_ray(args)
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        self.ps_name = f"a3c-parameter-server-{os.getpid()}-{secrets.token_hex(4)}"
        self.ps = ray.remote(ParameterServer).options(num_cpus=0, scheduling_strategy=here, name=self.ps_name).remote(
            args, obs_shape, n_actions)                   # beside the chief
        self.ready(self.ps.pid.remote, "the parameter server")

    def ready(self, call, who):
        """call() once the actor runs; its answer. A restarting actor is waited for."""
        import ray
        deadline = time.time() + START_TIMEOUT
        try:
            while True:
                try:
                    return ray.get(call(), timeout=max(1.0, deadline - time.time()))
                except ray.exceptions.ActorUnavailableError:  # restarting: ask again
                    if time.time() > deadline:
                        raise ray.exceptions.GetTimeoutError from None
                    time.sleep(1.0)
        except ray.exceptions.GetTimeoutError:
            raise UserError(f"{who} did not start within {START_TIMEOUT} s (does the Ray cluster have a free CPU "
                            f"for each worker? `ray status` says)", 1) from None
        except ray.exceptions.RayActorError as e:
            cause = getattr(e, "cause", None) or e
            raise UserError(f"{who} could not start: {first_line(cause)}", 1) from None

    def start(self, sess, nets, shared, stop, checkpoint):
        """Send the chief's state to the parameter server, start the workers. Returns the session for the
        chief's own nets (the evaluator's copy_from_global pulls) and the thread that follows the workers."""
        import ray
        self.sess, self.checkpoint, self.alive = sess, checkpoint, True
        ray.get(self.ps.set_state.remote(self.state.get(sess)))
        checkpoint.sync = self.pull_state
        Worker_ = ray.remote(Worker).options(num_cpus=1, max_restarts=MAX_RESTARTS, scheduling_strategy="SPREAD")
        self.workers = [Worker_.remote(k, self.args, self.ps_name) for k in range(self.args.workers)]
        self.pids = [self.ready(w.start.remote, f"worker {k}") for k, w in enumerate(self.workers)]
        shared.frames = [0] * self.args.workers            # the chief's log sums the workers' frames
        self.base = [dict(frames=0, steps=0) for _ in self.workers]  # what a worker's earlier lives counted
        self.last = [dict(frames=0, steps=0) for _ in self.workers]
        self.deaths = [0] * len(self.workers)
        follower = threading.Thread(target=self.follow, args=(shared, stop), name="cluster", daemon=True)
        return RemoteSession(sess, self.ps, self.g, nets, self.check_ps), [follower]

    def pull_state(self):
        """theta, theta_v, T, RMSProp's slots from the parameter server into the chief's graph (before a
        save). False if the parameter server is gone: the last checkpoint stays as it is."""
        import ray
        if not self.alive:
            return False
        try:
            self.state.set(self.sess, ray.get(self.ps.get_state.remote(), timeout=120))
            return True
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            self.alive = False
            return False

    def merge(self, k, d, shared):
        self.last[k] = d
        shared.frames[k] = self.base[k]["frames"] + d["frames"]
        shared.games.extend(d["games"])
        shared.stats.extend(d["stats"])
        if d["errors"]:
            self.check_ps()                                # a dead parameter server fails every worker: name it
            raise UserError(f"worker {k}: {d['errors'][0]}", 1)

    def check_ps(self):
        """T from the parameter server; a UserError naming it if it is gone."""
        import ray
        try:
            return ray.get(self.ps.get_T.remote(), timeout=60)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as e:
            self.alive = False
            raise ps_died(e, self.checkpoint) from None

    def died(self, k, e):
        """Worker k died: Ray restarts it (a fresh process, its threads start new games from the current
        theta); this starts its threads again. One death more than MAX_RESTARTS ends the run."""
        self.deaths[k] += 1
        if self.deaths[k] > MAX_RESTARTS:
            raise UserError(f"worker {k} died {self.deaths[k]} times, the last: {first_line(e)[:160]}", 1)
        for key in ("frames", "steps"):
            self.base[k][key] += self.last[k][key]
        self.last[k] = dict(frames=0, steps=0)
        warn(PROG, f"worker {k} (pid {self.pids[k]}) died; Ray restarts it ({self.deaths[k]} of {MAX_RESTARTS}), "
                   f"its threads start new games from the current theta")
        self.pids[k] = self.ready(self.workers[k].start.remote, f"worker {k} (restarted)")

    def follow(self, shared, stop):
        """The chief's thread in place of the actor-learners: every 0.5 s T from the parameter server and
        each worker's news into `shared`, until the workers are done or `stop`; then they stop, and the
        chief's graph gets the final state."""
        import ray
        try:
            pending = {w.drain.remote(): k for k, w in enumerate(self.workers)}
            running = [True] * len(self.workers)
            while any(running) and not stop.is_set():
                shared.T = max(shared.T, self.check_ps())
                done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.5)
                for ref in done:
                    k = pending.pop(ref)
                    try:
                        d = ray.get(ref)
                        self.merge(k, d, shared)
                        running[k] = d["running"]
                    except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as e:
                        self.died(k, e)
                    if running[k]:
                        pending[self.workers[k].drain.remote()] = k
                stop.wait(0.5)
        finally:
            self.finish(shared)

    def finish(self, shared):
        import ray
        stopping = {w.stop.remote(): k for k, w in enumerate(self.workers)}
        for ref, k in stopping.items():                    # each finishes its rollout and push
            try:
                self.merge(k, ray.get(ref, timeout=120), shared)
            except (ray.exceptions.RayError, UserError):
                pass                                       # gone, or its error is the run's already
        if self.pull_state():
            shared.T = int(self.sess.run(self.g.T))
        steps = [self.base[k]["steps"] + self.last[k]["steps"] for k in range(len(self.workers))]
        print(f"cluster workers={len(self.workers)} threads={self.args.threads} "
              f"worker_steps={','.join(map(str, steps))} restarts={sum(self.deaths)}", flush=True)


def shutdown():
    """Ends this run's Ray processes (a local instance) or its actors (a joined cluster); no-op without Ray."""
    import sys
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
