"""A3C and the paper's three value-based methods, one Python thread per actor-learner, TF1-style graphs.

Paper: Mnih et al., "Asynchronous Methods for Deep Reinforcement Learning", ICML 2016,
https://arxiv.org/abs/1602.01783 -- Algorithm 3 (`actor_learner`), Algorithm 1 and S2 (one-step Q,
one-step Sarsa, n-step Q: `value_learner`), Section 8 (network, t_max = 5, gamma = 0.99, beta = 0.01,
shared RMSProp, exploration, the LSTM agent), Section 9 (continuous actions: a Gaussian policy).

    python a3c.py --env BreakoutNoFrameskip-v4               # the paper's Atari setting, 8 threads
    python a3c.py --env Breakout-v0 --threads 8
    python a3c.py --env CartPole-v1                          # classic control: MLP defaults, 500k steps
    python a3c.py --env CartPole-v1 --lstm                   # A3C LSTM
    python a3c.py --env Acrobot-v1                           # the same MLP defaults learn it
    python a3c.py --env CartPole-v1 --method nstep-q         # or 1step-q, 1step-sarsa
    python a3c.py --env Pendulum-v1                          # continuous actions (InvertedPendulum-v5, ...)
    python a3c.py --play checkpoints/CartPole-v1__1 --episodes 10
    python a3c.py --env PongNoFrameskip-v4 --workers 2 --threads 4   # cluster mode: Ray, on this machine
README.md has what to expect; docs/a3c.md the deviations from the paper, docs/cluster.md several machines.
"""
import sys
import threading
import time
import types

import numpy as np

import atari_env
from a3c_checkpoints import Checkpoints  # machinery, these imports down to tf_session
from a3c_cli import (add_output_flags, check_ranges, entry_point, fill_defaults, fill_dirs, kind_help, load_tf,
                     make_env, read_actions)
from a3c_cluster import Cluster, add_flags as add_cluster_flags
from a3c_log import Log, Shared, torso_stats
from a3c_partial_run import build as build_partial_run, rollout as partial_run_rollout
from a3c_play import play
from a3c_threads import ctrl_c_skips, run_threads
from cli import Parser, UserError
from tf_session import session

tf = load_tf()                                             # machinery: TF1-style graphs, TensorFlow's start-up quiet
# Defaults that depend on the network, which the env decides. The Atari CNN keeps the paper's and the
# authors' values but RMSProp's epsilon (0.1 barely learned) and lr (7e-4 kills the torso's ReLUs on Pong);
# the value methods' I_target and epsilon annealing there are the paper's 40,000 and 4M frames. The MLP's,
# and those of "gauss" (the MLP with the Gaussian policy for Box actions), come from measured sweeps.
# docs/a3c.md: deviations from the paper; docs/a3c-results.md: figures.
DEFAULTS = {"cnn": dict(lr=2e-4, rms_eps=1e-5, value_coef=0.5, beta=0.01, gamma=0.99, max_steps=80_000_000,
                        reward_scale=1.0, eval_every=250_000, eval_episodes=10, target_every=10_000, eps_steps=1_000_000),
            "mlp": dict(lr=3e-3, rms_eps=0.1, value_coef=0.01, beta=0.02, gamma=0.99, max_steps=500_000,
                        reward_scale=1.0, eval_every=25_000, eval_episodes=20, eps_steps=100_000,
                        target_every={"nstep-q": 4_000, "1step-q": 1_000, "1step-sarsa": 1_000}),
            "gauss": dict(lr=1e-3, rms_eps=0.1, value_coef=5.0, beta=3e-3, gamma=0.9, max_steps=1_000_000,
                          reward_scale=0.1, eval_every=50_000, eval_episodes=10)}
MLP_LSTM = dict(value_coef=0.5, beta=0.01)  # the MLP with --lstm: what the LSTM runs used
CELLS = 256  # LSTM cells (Section 8)
PLAY_SEED = 20_000  # --play and the final evaluation: games apart from thread i's (seed + i), the same in both


def parse_args(argv=None):
    per_kind = kind_help(DEFAULTS, MLP_LSTM)               # "(default: Atari CNN 0.0002, classic-control MLP 0.003)"
    p = Parser(description=__doc__.split("\n")[0], allow_abbrev=False)  # --work 2 must not reach the workers
    p.add_argument("--env", default=None, help="gymnasium id (default Breakout-v0; for --play: the checkpoint's)")
    p.add_argument("--method", choices=list(TARGETS) + ["a3c"], help="a3c (Algorithm 3, the default; for --play: "
                   "the checkpoint's), nstep-q (Algorithm S2), 1step-q (Algorithm 1), 1step-sarsa: the last three "
                   "learn Q(s, a; theta)")
    p.add_argument("--threads", type=int, default=8, help="actor-learner threads (default 8; paper: 16)")
    p.add_argument("--lstm", action="store_true", help="A3C LSTM: 256 LSTM cells after the torso (Section 8)")
    p.add_argument("--mu", choices=["linear", "tanh"], default="tanh", help="continuous actions: the mean mu "
                   "is a tanh scaled to the action bounds (default) or linear (Section 9)")
    p.add_argument("--value-torso", choices=["shared", "own"], help="MLP: V shares pi's torso (default for "
                   "discrete actions, as the paper's Atari networks) or has its own (default for continuous "
                   "actions, Section 9; docs/a3c-results.md)")
    p.add_argument("--max-steps", type=int, help="global steps T (agent steps, all threads); the lr anneals to 0 "
                   "over them " + per_kind("max_steps") + "; the paper's day of Atari is about 80M")
    p.add_argument("--t-max", type=int, default=5, help="steps per rollout before an update (default and paper: 5)")
    p.add_argument("--lr", type=float, help="initial RMSProp learning rate " + per_kind("lr") +
                   "; the paper samples LogUniform(1e-4, 1e-2), 7e-4 is the authors' value")
    p.add_argument("--gamma", type=float, help=f"discount {per_kind('gamma')}; paper: 0.99")
    p.add_argument("--reward-scale", type=float, help="training rewards times this (scores stay raw) " +
                   per_kind("reward_scale"))
    p.add_argument("--beta", type=float, help=f"A3C: entropy bonus weight {per_kind('beta')}; paper: 0.01, "
                   "1e-4 for continuous actions")
    p.add_argument("--value-coef", type=float, help="A3C: weight of the (R - V)^2 loss " + per_kind("value_coef") +
                   "; the authors' 0.5, Algorithm 3's plain gradient 1.0")
    p.add_argument("--max-grad-norm", type=float, default=40.0,
                   help="clip each update to this global norm (default 40, the authors')")
    p.add_argument("--rms-decay", type=float, default=0.99, help="RMSProp decay (default and paper: 0.99)")
    p.add_argument("--rms-eps", type=float, help="RMSProp epsilon, inside the square root " + per_kind("rms_eps"))
    p.add_argument("--target-every", type=int, help="value methods: global steps between copies theta^- <- theta "
                   f"(I_target) {per_kind('target_every')}; paper: 40,000 frames")
    p.add_argument("--eps-steps", type=int, help="value methods: global steps over which each thread's epsilon "
                   f"anneals from 1 to its final one {per_kind('eps_steps')}; paper: 4M frames")
    p.add_argument("--eval-eps", type=float, default=0.05, help="value methods: epsilon of the evaluation and "
                   "--play (default 0.05, DQN's evaluation)")
    p.add_argument("--seed", type=int, default=1,
                   help="seeds TF, and thread i's env and actions with seed + i (default 1)")
    atari_env.add_flags(p)                                 # machinery: --vector-env, --fire-reset, --fire-life-loss
    p.add_argument("--partial-run", action="store_true",
                   help="the slides' variant: reuse the acting forward passes in the update (feed-forward only; "
                        "TF 2.21 leaks ~120 KB per update on this path, see docs/a3c-results.md)")
    p.add_argument("--eval-every", type=int, help="agent steps between evaluations of a snapshot of theta, "
                   "0 = never " + per_kind("eval_every"))
    p.add_argument("--eval-episodes", type=int, help="full games per evaluation " + per_kind("eval_episodes"))
    add_output_flags(p)                                    # machinery: --logdir ... --record
    add_cluster_flags(p)                                   # machinery: --workers, --ray-address
    p.set_defaults(continuous=False, bounds=None)         # set from the env's action space by main and --play
    args = p.parse_args(argv)
    check_ranges(args)                                     # machinery: a bad value is one line naming its flag
    return args


# ---------------------------------------------------------------- network (Section 8)
def conv(x, k, c_out, stride, name):
    w = tf.get_variable(f"{name}/w", [k, k, x.shape[-1], c_out], initializer=tf.glorot_uniform_initializer())
    b = tf.get_variable(f"{name}/b", [c_out], initializer=tf.zeros_initializer())
    return tf.nn.relu(tf.nn.conv2d(x, w, [1, stride, stride, 1], "VALID") + b, name=name)


def dense(x, n_out, name, act=tf.nn.relu, init=None):
    w = tf.get_variable(f"{name}/w", [x.shape[-1], n_out], initializer=init or tf.glorot_uniform_initializer())
    b = tf.get_variable(f"{name}/b", [n_out], initializer=tf.zeros_initializer())
    return act(tf.matmul(x, w) + b, name=name)             # the tensor <scope>/<name>:0


def lstm(x, state):
    """x [n, d]: ONE sequence of n steps (a rollout, or n = 1 when acting); state (c, h), each [1, CELLS].
    The four gates i, j, f, o in one matrix per input, as TF's BasicLSTMCell had (gone under Keras 3);
    two matrices, not slices of one: the gradient of a slice costs a full-size copy per step."""
    W_x = tf.get_variable("lstm/w_x", [x.shape[-1], 4 * CELLS], initializer=tf.glorot_uniform_initializer())
    W_h = tf.get_variable("lstm/w_h", [CELLS, 4 * CELLS], initializer=tf.glorot_uniform_initializer())
    b = tf.get_variable("lstm/b", [4 * CELLS], initializer=tf.zeros_initializer())
    xW = tf.matmul(x, W_x) + b                             # the input's share for all n steps at once, [n, 4 CELLS]

    def step(carry, xW_t):
        c, h = carry
        i, j, f, o = tf.split(xW_t[None] + tf.matmul(h, W_h), 4, 1)
        c = tf.sigmoid(f + 1.0) * c + tf.sigmoid(i) * tf.tanh(j)  # forget-gate bias 1
        return c, tf.sigmoid(o) * tf.tanh(c)

    c, h = tf.scan(step, xW, initializer=state)            # [n, 1, CELLS] each
    return h[:, 0], (c[-1], h[-1])


def network(s, n_actions, state=None, own_v=False, q=False, args=None):
    """s [n, 84, 84, 4] uint8 (Atari) or [n, d] float32 -> logits [n, A], V [n], next LSTM state;
    args.continuous (A = the Box's dimensions): (mu [n, A], sigma^2 [n, A]) instead of the logits;
    with q: Q(s, .) [n, A], None, (). Variables come from the enclosing scope."""
    if s.dtype == tf.uint8:
        x = tf.cast(s, tf.float32) / 255.0
        x = conv(x, 8, 16, 4, "conv1")                     # [n, 20, 20, 16]
        x = conv(x, 4, 32, 2, "conv2")                     # [n, 9, 9, 32]
        x = dense(tf.reshape(x, [-1, 9 * 9 * 32]), 256, "fc")  # [n, 256]
    else:                                                  # MLP torso for vector observations
        x = dense(dense(s, 64, "fc1", tf.tanh), 64, "fc2", tf.tanh)  # [n, 64]
    if q:                                                  # value methods: the same torso, one output per action
        return dense(x, n_actions, "q", tf.identity), None, ()
    if state is not None:                                  # A3C LSTM
        x, state = lstm(x, state)                          # [n, 256]
    # pi and V share the torso, as in the paper; --value-torso own gives the MLP's V one of its own,
    # which learnt Acrobot on every seed tried (docs/a3c-results.md)
    x_v = dense(dense(s, 64, "v_fc1", tf.tanh), 64, "v_fc2", tf.tanh) if own_v else x
    small = tf.random_normal_initializer(stddev=0.01)      # pi starts near uniform (near mu = 0)
    if args and args.continuous:                           # Section 9: mu linear, sigma^2 a SoftPlus of a linear
        mu = dense(x, n_actions, "mu", tf.identity, small)
        if args.mu == "tanh":                              # or inside the bounds: centre + half-width tanh(.)
            low, high = (np.array(b, np.float32) for b in args.bounds)
            mu = (high + low) / 2 + (high - low) / 2 * tf.tanh(mu)
        sigma2 = dense(x, n_actions, "sigma2", tf.nn.softplus) + 1e-4  # a floor (not in the paper): log 0 = -inf
        pi = (mu, sigma2)
    else:
        pi = dense(x, n_actions, "pi", tf.identity, small)  # the logits; theta: torso + pi
    v = dense(x_v, 1, "v", tf.identity)[:, 0]              # theta_v: torso (shared or own) + v
    return pi, v, state if state is not None else ()      # () = no recurrent state to carry


def placeholders(obs_shape, lstm_on, n=None):
    s_ph = tf.placeholder(tf.uint8 if len(obs_shape) == 3 else tf.float32, [n, *obs_shape], "s")
    state_ph = (tf.placeholder(tf.float32, [1, CELLS], "c"), tf.placeholder(tf.float32, [1, CELLS], "h")) \
        if lstm_on else None
    return s_ph, state_ph


def build_global(obs_shape, n_actions, args):
    """theta, theta_v; the global step T; RMSProp whose statistics all threads share (Section 4)."""
    with tf.variable_scope("global"):
        s_ph, state_ph = placeholders(obs_shape, args.lstm)
        network(s_ph, n_actions, state_ph, args.value_torso == "own", args.method != "a3c", args)
        T = tf.get_variable("T", [], tf.int64, tf.zeros_initializer(), trainable=False)
        lr_ph = tf.placeholder(tf.float32, [], "lr")      # fed each update: linear annealing to 0
        # One optimizer applied to the global variables from every thread = shared statistics.
        # TF starts its mean-square slot at ones (the reference: zeros); epsilon sits inside the root.
        opt = tf.train.RMSPropOptimizer(lr_ph, decay=args.rms_decay, momentum=0.0, epsilon=args.rms_eps)
    g = types.SimpleNamespace(theta=tf.trainable_variables("global/"), T=T, lr_ph=lr_ph, opt=opt, target_T=None)
    if args.method != "a3c":                               # the target network theta^-: not trained, not saved
        with tf.variable_scope("target"):
            g.s_next_ph = placeholders(obs_shape, False)[0]
            g.q_target = network(g.s_next_ph, n_actions, q=True)[0]  # Q(s', .; theta^-)  [n, A]
        g.update_target = tf.group(*[w_.assign(w) for w_, w in zip(tf.trainable_variables("target/"), g.theta)])
    return g


def build_local(scope, g, obs_shape, n_actions, args, learner=True):
    """A thread's theta', theta'_v: acting ([1, ...]) and, for a learner, the update from a rollout's states."""
    value = args.method != "a3c"
    with tf.variable_scope(scope):
        s_ph, state_ph = placeholders(obs_shape, args.lstm)
        out, v, state = network(s_ph, n_actions, state_ph, args.value_torso == "own", value, args)
        theta_local = tf.trainable_variables(scope + "/")  # out: logits, (mu, sigma^2), or Q
        copy_from_global = tf.group(*[l.assign(w) for l, w in zip(theta_local, g.theta)])  # theta' <- theta
        net = types.SimpleNamespace(s_ph=s_ph, state_ph=state_ph, v=v, state=state, copy_from_global=copy_from_global)
        if args.continuous:                                # N(mu, sigma^2): what sample() draws from
            net.mu, net.sigma2 = net.policy = out          # [n, A] each
        elif value:  # epsilon-greedy on Q(s, .; theta'), as a distribution: sample() and play_games serve all four
            net.q = out                                    # Q(s, .; theta')  [n, A]
            net.eps_ph = tf.placeholder_with_default(np.float32(args.eval_eps), [], "eps")
            net.pi = net.eps_ph / n_actions + (1 - net.eps_ph) * tf.one_hot(tf.argmax(out, 1), n_actions)
        else:
            net.pi = tf.nn.softmax(out)                    # pi(. | s; theta')  [n, A]
        if not args.continuous:
            net.policy = (net.pi,)
        if learner:
            net.a_ph = tf.placeholder(tf.float32, [None, n_actions], "a") if args.continuous else \
                tf.placeholder(tf.int32, [None], "a")
            net.R_ph = tf.placeholder(tf.float32, [None], "R")  # A3C's and n-step Q's R, the one-step methods' y
            if value:
                loss, stats, n = q_loss(out, net.a_ph, net.R_ph)
            else:                                          # log pi(a_i|s_i; theta') [n], H(pi(s_i; theta')) [n]
                log_pi_a, H = gaussian(*out, net.a_ph) if args.continuous else categorical(out, net.a_ph)
                loss, stats, n = a3c_loss(log_pi_a, H, v, net.R_ph, args)
                if args.continuous:                        # TensorBoard losses/sigma
                    stats["sigma"] = tf.reduce_mean(tf.sqrt(net.sigma2))
            stats.update(torso_stats(scope))               # machinery: TensorBoard losses/live_units (CNN)
            net.train, net.grads, net.clipped = clipped_update(loss, stats, n, theta_local, g, args)
    net.pr = build_partial_run(scope, g, obs_shape, n_actions, args, sys.modules[__name__]) \
        if learner and args.partial_run else None
    return net


def categorical(logits, a_ph):
    """Discrete actions: log pi(a_i|s_i; theta') and H(pi(s_i; theta')), each [n], from logits [n, A]."""
    log_pi = tf.nn.log_softmax(logits)                     # log_softmax, not log(softmax): no NaN on underflow
    log_pi_a = tf.reduce_sum(log_pi * tf.one_hot(a_ph, logits.shape[-1]), 1)
    return log_pi_a, -tf.reduce_sum(tf.exp(log_pi) * log_pi, 1)


def gaussian(mu, sigma2, a_ph):
    """Box actions (Section 9): the same two for N(mu, sigma^2), mu, sigma2, a [n, A], summed over dimensions.
    a is the unclipped sample: the env clips what it is sent, the gradient follows what was drawn."""
    log_pi_a = -0.5 * tf.reduce_sum(tf.square(a_ph - mu) / sigma2 + tf.log(2 * np.pi * sigma2), 1)
    H = 0.5 * tf.reduce_sum(tf.log(2 * np.pi * sigma2) + 1.0, 1)  # the paper's cost -1/2 (log 2 pi sigma^2 + 1)
    return log_pi_a, H                                     # with the sign of an entropy


def a3c_loss(log_pi_a, entropy, v, R_ph, args, mask=1.0):
    """Algorithm 3's loss from one rollout: log pi(a_i|s_i) [n], H [n], v [n] of s_t_start .. s_t-1, R [n]."""
    advantage = tf.stop_gradient(R_ph - v)                 # R - V(s_i; theta'_v): a constant for the policy
    # Algorithm 3 ascends log pi * (R - V) + beta H; we minimise, so both enter with a minus (else H shrinks)
    policy_loss = -tf.reduce_sum(mask * (log_pi_a * advantage + args.beta * entropy))
    value_loss = tf.reduce_sum(mask * tf.square(R_ph - v))  # (R - V(s_i; theta'_v))^2
    n = tf.reduce_sum(mask * tf.ones_like(R_ph))
    return policy_loss + args.value_coef * value_loss, dict(
        policy_loss=policy_loss / n, value_loss=value_loss / n, entropy=tf.reduce_sum(mask * entropy) / n), n


def q_loss(q, a_ph, y_ph):
    """Algorithms 1 and S2: sum_i (y_i - Q(s_i, a_i; theta'))^2, q [n, A]; the three methods differ in y (TARGETS)."""
    q_a = tf.reduce_sum(q * tf.one_hot(a_ph, q.shape[-1]), 1)  # Q(s_i, a_i; theta')  [n]
    loss = tf.reduce_sum(tf.square(y_ph - q_a))            # y is fed: a constant, as the algorithms' target
    n = tf.cast(tf.size(y_ph), tf.float32)
    return loss, dict(q_loss=loss / n), n


def clipped_update(loss, stats, n, theta_local, g, args):
    # The slides' three steps. The gradient of the rollout's summed loss is the sum of the
    # per-step gradients: Algorithm 3's accumulated d theta, d theta_v (tested against per-step).
    grads_and_vars = g.opt.compute_gradients(loss, theta_local)
    d_theta, norm = tf.clip_by_global_norm([d for d, _ in grads_and_vars], args.max_grad_norm)
    update = g.opt.apply_gradients(zip(d_theta, g.theta))  # onto the *global* theta: Hogwild, no lock
    with tf.control_dependencies([update]):                # partial_run cannot fetch ops: fetch a tensor
        T = tf.identity(g.T.assign_add(tf.cast(n, tf.int64)))  # T <- T + n
    return dict(T=T, grad_norm=norm, **stats), [d for d, _ in grads_and_vars], d_theta  # norm before clipping


# ---------------------------------------------------------------- Algorithm 3, one actor-learner thread
def n_step_returns(rewards, R, gamma):
    """R <- r_i + gamma R for i = t-1 down to t_start (Algorithm 3). R: 0 or V(s_t)."""
    out = np.zeros(len(rewards), np.float32)
    for i in reversed(range(len(rewards))):
        R = rewards[i] + gamma * R
        out[i] = R
    return out


def sample(rng, policy):
    """a ~ pi(. | s): policy = (pi [A],) for discrete actions, (mu [A], sigma^2 [A]) for a Box."""
    if len(policy) == 2:                                   # unclipped: the env clips (atari_env.VectorObsEnv)
        return rng.normal(policy[0], np.sqrt(policy[1])).astype(np.float32)
    pi, = policy
    return min(int(np.searchsorted(np.cumsum(pi), rng.random() * pi.sum())), len(pi) - 1)


def zero_state(args):
    return (np.zeros((1, CELLS), np.float32),) * 2 if args.lstm else ()


def feed(net, s, state):
    return {net.s_ph: s, **dict(zip(net.state_ph or (), state))}  # the LSTM's (c, h) too, if it has one


def learning_rate(args, T):
    return args.lr * max(0.0, 1.0 - T / args.max_steps)  # annealed linearly to 0 over --max-steps


def actor_learner(i, sess, net, g, env, args, shared, stop):
    rng = np.random.default_rng(args.seed + shared.first + i)  # as thread i's env (first: this process's first)
    s = env.reset()
    state = zero_state(args)                               # the LSTM's (c, h), carried across rollouts
    while not stop.is_set() and shared.T < args.max_steps:
        lr = learning_rate(args, shared.T)
        with shared.cores:                                 # one rollout per core at a time (a3c_log.Shared)
            if args.partial_run:                           # same algorithm, the slides' way (below)
                s = partial_run_rollout(sess, net.pr, net, g, env, s, rng, lr, args, shared, i, sys.modules[__name__])
                continue
            sess.run(net.copy_from_global)                 # synchronise theta' <- theta, theta'_v <- theta_v
            state_start = state                            # the update unrolls the LSTM from here
            states, actions, rewards = [], [], []
            for t in range(args.t_max):                    # t_start .. t_start + t_max - 1
                policy, state = sess.run((net.policy, net.state), feed(net, s[None], state))
                a = sample(rng, [p[0] for p in policy])    # a_t ~ pi(a_t | s_t; theta')
                states.append(s)
                actions.append(a)
                s, r, done, info = env.step(a)
                rewards.append(args.reward_scale * r)       # 1 but for continuous actions (DEFAULTS)
                shared.record(i, info)
                if done:
                    break
            if done and not info["truncated"]:
                R = 0.0                                    # terminal s_t
            else:                                          # bootstrap from V(s_t; theta'_v): a time limit is no end
                R = sess.run(net.v, feed(net, (info["final_obs"] if done else s)[None], state))[0]
            fd = feed(net, np.array(states), state_start)  # the rollout's states, from the state it began with
            fd.update({net.a_ph: actions, net.R_ph: n_step_returns(rewards, R, args.gamma), g.lr_ph: lr})
            shared.update(sess.run(net.train, fd))         # one asynchronous update of theta, theta_v
        if done:
            state = zero_state(args)                       # a new training episode starts with a fresh LSTM state


# ---------------------------------------------------------------- Algorithms 1 and S2, one value-based thread
def y_one_step_q(r, terminal, q_next, a_next, gamma):       # Algorithm 1: y = r + gamma max_a' Q(s', a'; theta^-)
    return r + gamma * (1.0 - terminal) * q_next.max(1)


def y_one_step_sarsa(r, terminal, q_next, a_next, gamma):   # y = r + gamma Q(s', a'; theta^-), a' taken in s'
    return r + gamma * (1.0 - terminal) * q_next[np.arange(len(r)), a_next]


def R_n_step_q(r, terminal, q_next, a_next, gamma):         # Algorithm S2: R = 0 or max_a Q(s_t, a; theta^-),
    return n_step_returns(r, 0.0 if terminal[-1] else q_next[-1].max(), gamma)  # then R <- r_i + gamma R


TARGETS = {"nstep-q": R_n_step_q, "1step-q": y_one_step_q, "1step-sarsa": y_one_step_sarsa}


def epsilon(eps_final, T, args):
    return eps_final + (1.0 - eps_final) * max(0.0, 1.0 - T / args.eps_steps)  # 1 -> eps_final, then constant


def value_learner(i, sess, net, g, env, args, shared, stop):
    """Algorithm 1 (one-step Q, and Sarsa with its own y) and Algorithm S2 (n-step Q): t_max steps epsilon-greedy
    on Q(s, .; theta'), targets from theta^-, one asynchronous update (I_AsyncUpdate = t_max for all three)."""
    rng = np.random.default_rng(args.seed + shared.first + i)
    eps_final = rng.choice([0.1, 0.01, 0.5], p=[0.4, 0.3, 0.3])  # each thread's own (Section 8)
    y_of = TARGETS[args.method]
    s, a = env.reset(), None
    while not stop.is_set() and shared.T < args.max_steps:
        lr, eps = learning_rate(args, shared.T), epsilon(eps_final, shared.T, args)
        with shared.cores:
            if g.target_T is None or shared.T >= g.target_T + args.target_every:  # I_target: the first thread
                g.target_T = shared.T                      # to see T pass it copies (one copy per process)
                sess.run(g.update_target)                  # theta^- <- theta
            sess.run(net.copy_from_global)                 # theta' <- theta
            act = lambda s_: sample(rng, (sess.run(net.pi, {net.s_ph: s_[None], net.eps_ph: eps})[0],))  # noqa: E731
            a = act(s) if a is None else a                 # else chosen in s, with the previous theta'
            states, actions, rewards, nexts, next_actions = [], [], [], [], []
            for t in range(args.t_max):
                states.append(s)
                actions.append(a)
                s, r, done, info = env.step(a)
                rewards.append(args.reward_scale * r)
                shared.record(i, info)
                nexts.append(info["final_obs"] if info["game_over"] else s)  # a lost life: the game goes on in s
                a = act(nexts[-1])                         # a' in s': the next action (Sarsa's a')
                next_actions.append(a)
                if done:
                    break
            terminal = np.zeros(len(rewards), np.float32)
            terminal[-1] = done and not info["truncated"]  # a time limit is no end: y bootstraps
            q_next = sess.run(g.q_target, {g.s_next_ph: np.array(nexts)})  # Q(s', .; theta^-)  [n, A]
            y = y_of(np.array(rewards, np.float32), terminal, q_next, np.array(next_actions), args.gamma)
            fd = {net.s_ph: np.array(states), net.a_ph: actions, net.R_ph: y, g.lr_ph: lr}
            shared.update(sess.run(net.train, fd))         # one asynchronous update of theta
        if done:
            a = None                                       # a new game: its first action from its own first state


LEARNERS = dict(a3c=actor_learner, **{method: value_learner for method in TARGETS})  # --method -> a thread's loop


# ---------------------------------------------------------------- evaluation (the protocol of --play)
def play_games(sess, net, env, n, rng, args, stop=None, on_step=None):
    """n full games (up to 30 no-op starts, at most 108,000 frames, a lost life ends nothing),
    actions sampled from pi as in training; for continuous actions the mean mu, the policy's own choice
    without the exploration noise sigma (as continuous-control papers report). Returns (raw score, steps) per game."""
    scores = []
    s = env.reset()
    state = zero_state(args)
    while len(scores) < n and not (stop and stop.is_set()):
        policy, state = sess.run((net.policy, net.state), feed(net, s[None], state))
        a = policy[0][0] if args.continuous else sample(rng, [p[0] for p in policy])  # continuous: the mean mu
        s, _, _, info = env.step(a)
        if on_step:
            on_step(info)
        if info["game_over"] or info.get("life_lost"):
            state = zero_state(args)                       # as in training: a fresh LSTM state per life
        if info["game_over"]:
            scores.append((info["episode_return"], info["episode_length"]))  # a game at the cap idled: 27,000 steps
    return scores


def evaluator(sess, net, env, args, shared, stop):
    """Every --eval-every steps: snapshot theta (copy_from_global) and play --eval-episodes games with it."""
    rng = np.random.default_rng(args.seed + 10_000)
    next_T = (shared.T // args.eval_every + 1) * args.eval_every
    while not stop.is_set() and shared.T < args.max_steps:  # the final theta is scored after training
        if shared.T < next_T:
            stop.wait(0.5)
            continue
        T = shared.T
        sess.run(net.copy_from_global)
        scores = play_games(sess, net, env, args.eval_episodes, rng, args, stop)
        if len(scores) == args.eval_episodes:              # a stopped evaluation is not reported
            shared.evals.append((T, scores))
        next_T = (shared.T // args.eval_every + 1) * args.eval_every


# ---------------------------------------------------------------- main: envs, graph, train, test, RESULT
@entry_point                                               # machinery: one-line errors, Ctrl-C handlers, a fresh graph
def main(argv, signals):
    args = parse_args(argv)
    if args.play:                                          # machinery: a checkpoint's theta plays full games
        return play(args, sys.modules[__name__])
    fill_dirs(args)                                        # machinery: --env, folders, --vector-env by default
    # envs: thread i plays its own, seeded seed + i (in cluster mode: in the worker processes); the evaluator's
    env_kw = dict(vector=args.vector_env, **atari_env.flags_of(args))  # FIRE at reset and after a lost life
    threads = 0 if args.workers else args.threads
    envs = [make_env(args.env, args.seed + i, **env_kw) for i in range(threads)]
    eval_env = make_env(args.env, args.seed + 10_000, training=False, **env_kw)
    obs_shape, n_actions = eval_env.observation_space.shape, read_actions(args, eval_env.action_space)  # Box: Gaussian
    kind = fill_defaults(args, obs_shape, DEFAULTS, MLP_LSTM)  # the network's own defaults, unless given
    checkpoint = Checkpoints(args, obs_shape, n_actions, eval_env.action_space, kind)  # machinery: --resume, or refused
    print(atari_env.describe(args.env, **env_kw), flush=True)
    # graph: theta, theta_v, T; each thread's theta'; the evaluator's copy
    tf.set_random_seed(args.seed)
    g = build_global(obs_shape, n_actions, args)
    nets = [build_local(f"thread_{i}", g, obs_shape, n_actions, args) for i in range(threads)]
    evaluator_net = build_local("eval", g, obs_shape, n_actions, args, learner=False)
    cluster = Cluster(args, g, obs_shape, n_actions, tf) if args.workers else None  # machinery: Ray, the ps
    sess = session(args.threads)
    checkpoint.start(sess, g)                              # machinery: theta, T initialised or restored
    # train: Algorithm 3 in args.threads threads, the evaluator beside them
    shared = Shared(int(sess.run(g.T)), args.threads)
    stop = threading.Event()
    log = Log(tf.summary.FileWriter(args.logdir), args, shared, learning_rate)
    learners = [threading.Thread(target=LEARNERS[args.method], args=(i, sess, nets[i], g, envs[i], args, shared, stop),
                                 name=f"actor-learner {i}", daemon=True) for i in range(threads)]
    if cluster:                                            # machinery: the threads run in the workers; one here
        sess, learners = cluster.start(sess, [evaluator_net], shared, stop, checkpoint)  # follows them
    others = [threading.Thread(target=evaluator, name="evaluator", daemon=True,
                               args=(sess, evaluator_net, eval_env, args, shared, stop))] if args.eval_every else []
    interrupted = run_threads(learners, others, stop, args.log_interval, [log, checkpoint.when_due], signals,
                              checkpoint)                  # machinery
    shared.T = int(sess.run(g.T))
    wall = time.time() - log.t0
    # test: the final theta, scored the way papers score, on the games --play with this seed replays
    if args.eval_every and not interrupted:
        with ctrl_c_skips():                               # machinery: Ctrl-C skips it, not the save
            sess.run(evaluator_net.copy_from_global)
            env = make_env(args.env, args.seed + PLAY_SEED, training=False, **env_kw)
            rng = np.random.default_rng(args.seed + PLAY_SEED)
            shared.evals.append((shared.T, play_games(sess, evaluator_net, env, args.eval_episodes, rng, args)))
    signals.ignore()                                       # nothing may break the final save
    saved_ok = checkpoint()                                # theta, theta_v, T, RMSProp's slots
    mean = log(final=True)
    print(f"RESULT env={args.env} method={args.method} global_step={shared.T} episodes={log.games} "
          f"mean_return={mean:.2f} eval_return={log.last_eval:.2f} fps={sum(shared.frames) / wall:.0f} "
          f"wall_s={wall:.1f}", flush=True)
    if not saved_ok:
        raise UserError("the final checkpoint could not be written (see the warning above)", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
