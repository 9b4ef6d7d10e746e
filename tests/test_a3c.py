"""a3c.py, the paper: n-step returns, the policy gradient and entropy signs, batched against per-step gradients, the LSTM, learning."""
import os
import subprocess
import sys
import threading

import gymnasium as gym
import numpy as np
import tensorflow.compat.v1 as tf

import a3c
from helpers import HERE


# =========================================================================== A3C and Atari
PAPER_ENV = "BreakoutNoFrameskip-v4"


def run_a3c(*argv, timeout=300, cwd=None):
    return subprocess.run([sys.executable, os.path.join(HERE, "a3c.py"), *argv], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def result(stdout):
    line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return dict(kv.split("=", 1) for kv in line.split()[1:])


def test_n_step_returns():
    r, gamma = [1.0, 0.0, -1.0, 2.0], 0.9
    for R_boot in (0.0, 5.0):                              # terminal, bootstrap from V(s_t)
        ref = [sum(gamma ** (k - i) * r[k] for k in range(i, len(r))) + gamma ** (len(r) - i) * R_boot
               for i in range(len(r))]
        np.testing.assert_allclose(a3c.n_step_returns(r, R_boot, gamma), ref, rtol=1e-6)


class FixedLengthEnv:
    """Vector-observation env whose episodes last `length` steps; observations depend on the actions."""
    observation_space = gym.spaces.Box(-1, 1, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length, seed=0):
        self.length, self.rng = length, np.random.default_rng(seed)

    def reset(self, seed=None):
        self.t, self.obs = 0, self.rng.normal(size=4).astype(np.float32)
        return self.obs

    def step(self, a):
        self.t += 1
        self.obs = (self.obs * 0.9 + (a - 0.5) + self.rng.normal(size=4) * 0.1).astype(np.float32)
        info = dict(raw_reward=float(a), game_over=self.t >= self.length, truncated=False, frames=1)
        obs = self.obs
        if info["game_over"]:
            info.update(final_obs=obs, episode_return=0.0, episode_length=self.t)
            obs = self.reset()
        return obs, float(a), info["game_over"], info


class Bandit(FixedLengthEnv):
    """Two arms, one-step episodes: arm 1 pays 1, arm 0 pays 0."""

    def __init__(self):
        super().__init__(1)

    def reset(self, seed=None):
        self.t, self.obs = 0, np.ones(4, np.float32)
        return self.obs

    def step(self, a):
        obs, _, done, info = super().step(a)
        return self.reset(), float(a), done, info


def _graph(*flags, obs_shape=(4,), n_actions=2, threads=1, partial_run=False):
    """a3c.py's graph for a vector env, in the current default graph, with a fresh session."""
    args = a3c.parse_args(["--env", "CartPole-v1", *flags])
    a3c.fill_defaults(args, obs_shape)
    g = a3c.build_global(obs_shape, n_actions, args)
    nets = [a3c.build_local(f"thread_{i}", g, obs_shape, n_actions, args) for i in range(threads)]
    prs = [a3c.build_partial_run(f"thread_{i}", g, obs_shape, n_actions, args) for i in range(threads)] \
        if partial_run else None
    probe = a3c.build_local("probe", g, obs_shape, n_actions, args, learner=False)  # reads theta after a copy
    sess = a3c.session(args)
    sess.run(tf.global_variables_initializer())
    return args, g, nets, prs, probe, sess


def _run_learner(args, sess, net, g, env, max_steps, prs=None):
    args.max_steps = max_steps
    shared = a3c.Shared(int(sess.run(g.T)), 1, prs)
    a3c.actor_learner(0, sess, net, g, env, args, shared, threading.Event())
    return shared


def test_policy_gradient_moves_toward_the_better_arm():
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        args, g, (net,), _, probe, sess = _graph("--lr", "1e-2", "--t-max", "1")
        obs = np.ones((1, 4), np.float32)
        sess.run(probe.copy_from_global)
        before = sess.run(probe.pi, {probe.s_ph: obs})[0, 1]
        _run_learner(args, sess, net, g, Bandit(), 300)
        sess.run(probe.copy_from_global)
        after = sess.run(probe.pi, {probe.s_ph: obs})[0, 1]
    assert 0.3 < before < 0.7 and after > 0.9, (before, after)   # a wrong sign drives it to 0


def test_entropy_bonus_raises_entropy_when_advantage_is_zero():
    with tf.Graph().as_default():
        args, g, (net,), _, probe, sess = _graph("--beta", "1.0")
        pi_b = [v for v in g.theta if v.name == "global/pi/b:0"][0]
        sess.run(pi_b.assign([2.0, -2.0]))                 # a confident policy: low entropy
        sess.run(net.copy_from_global)
        S = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
        H = lambda p: -(p * np.log(p)).sum(1).mean()  # noqa: E731
        before = H(sess.run(net.pi, {net.s_ph: S}))
        for _ in range(30):                                # R = V(s): advantage and value loss are zero
            v = sess.run(net.v, {net.s_ph: S})
            sess.run(net.train, {net.s_ph: S, net.a_ph: [0] * 5, net.R_ph: v, g.lr_ph: 0.1})
            sess.run(net.copy_from_global)
        after = H(sess.run(net.pi, {net.s_ph: S}))
    assert after > 1.5 * before, (before, after)           # the wrong sign would lower it


def test_gradients_batched_equal_per_step_and_numpy_reference():
    """The default update (one batch of n states through one copy) against the slides' t_max
    copies (per-step graph) and, for the heads' biases, against the loss differentiated by hand."""
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        args, g, (net,), (pr,), _, sess = _graph("--partial-run", "--beta", "0.3", partial_run=True)
        sess.run(net.copy_from_global)
        rng = np.random.default_rng(1)
        for n in (5, 3):                                   # a full rollout and one cut short by a terminal
            S = rng.normal(size=(n, 4)).astype(np.float32)
            a, R = rng.integers(0, 2, n), rng.normal(size=n).astype(np.float32)
            batched = sess.run(net.grads, {net.s_ph: S, net.a_ph: a, net.R_ph: R})
            fd = {pr.s[k]: (S[k] if k < n else np.zeros(4, np.float32))[None] for k in range(args.t_max)}
            fd.update({pr.a_ph: np.pad(a, (0, 5 - n)), pr.R_ph: np.pad(R, (0, 5 - n)),
                       pr.mask_ph: (np.arange(5) < n).astype(np.float32)})
            per_step = sess.run(pr.grads, fd)
            for x, y in zip(batched, per_step):
                np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
            # NumPy: dL/dz_i = -(R_i - V_i)(onehot(a_i) - p_i) + beta p_i (log p_i + H_i);  dL/dV_i = 2 c (V_i - R_i)
            p, V = sess.run([net.pi, net.v], {net.s_ph: S})
            Hs = -(p * np.log(p)).sum(1, keepdims=True)
            dz = -(R - V)[:, None] * (np.eye(2)[a] - p) + args.beta * p * (np.log(p) + Hs)
            names = [v.name for v in tf.trainable_variables("thread_0/")]
            np.testing.assert_allclose(batched[names.index("thread_0/pi/b:0")], dz.sum(0), rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(batched[names.index("thread_0/v/b:0")], [2 * args.value_coef * (V - R).sum()],
                                       rtol=1e-4)


def test_update_changes_global_not_local_until_copy():
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        args, g, (net,), _, _, sess = _graph()
        local = tf.trainable_variables("thread_0/")
        shared = _run_learner(args, sess, net, g, FixedLengthEnv(50), 5)
        assert sess.run(g.T) == shared.T == 5              # T counts agent steps
        changed = [not np.array_equal(lv, gv) for lv, gv in zip(sess.run(local), sess.run(g.theta))]
        assert any(changed)                                # the update went to the global weights only
        sess.run(net.copy_from_global)
        for lv, gv in zip(sess.run(local), sess.run(g.theta)):
            np.testing.assert_array_equal(lv, gv)


def test_lstm_update_unrolls_as_acting_did():
    """Acting one step at a time, carrying (c, h), gives the same pi and V as the update's unroll of
    the rollout's states from the state it began with."""
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        args, g, (net,), _, _, sess = _graph("--lstm")
        sess.run(net.copy_from_global)
        S = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
        state = start = (np.random.default_rng(1).normal(size=(1, 256)).astype(np.float32),) * 2
        step_pi, step_v = [], []
        for s in S:
            (pi, v, state) = sess.run((net.pi, net.v, net.state), a3c.feed(net, s[None], state))
            step_pi.append(pi[0])
            step_v.append(v[0])
        pi, v = sess.run((net.pi, net.v), a3c.feed(net, S, start))
        np.testing.assert_allclose(pi, step_pi, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(v, step_v, rtol=1e-5, atol=1e-6)


def test_lstm_state_carried_across_rollouts_and_reset_on_episode_end():
    fed = []

    class Spy(a3c.Session):
        def run(self, fetches, feed_dict=None, **kw):
            if isinstance(fetches, tuple) and len(fetches) == 2:  # acting: (pi, state)
                fed.append(float(np.abs(feed_dict[net.state_ph[1]]).sum()))
            return super().run(fetches, feed_dict, **kw)

    with tf.Graph().as_default():
        args, g, (net,), _, _, sess = _graph("--lstm")
        sess.__class__ = Spy
        _run_learner(args, sess, net, g, FixedLengthEnv(7), 21)   # 3 episodes of 7 steps, rollouts of 5
    # steps 0..6 of each episode: fresh (zero) state at step 0 only, carried into the second rollout (step 5)
    assert len(fed) == 21
    for k, h in enumerate(fed):
        assert (h == 0) == (k % 7 == 0), (k, fed)


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def test_partial_run_memory_flat_over_short_episodes():
    with tf.Graph().as_default():
        args, g, (net,), (pr,), _, sess = _graph("--partial-run", partial_run=True)
        env = FixedLengthEnv(1)                             # every rollout ends after 1 of t_max=5 steps
        shared = a3c.Shared(0, 1, [pr])
        obs, rng = env.reset(), np.random.default_rng(0)
        for _ in range(300):
            obs = a3c.partial_run_rollout(sess, pr, net, g, env, obs, rng, 1e-3, args, shared, 0)
        start = _rss_mb()
        for _ in range(1500):
            obs = a3c.partial_run_rollout(sess, pr, net, g, env, obs, rng, 1e-3, args, shared, 0)
        finished = _rss_mb() - start
        # control: the same number of handles left unfinished does leak (~48 KB each here)
        start = _rss_mb()
        feeds = pr.s + [pr.a_ph, pr.R_ph, pr.mask_ph, g.lr_ph]
        for _ in range(1500):
            h = sess.partial_run_setup(pr.pi + [pr.v_boot] + list(pr.train.values()), feeds)
            sess.partial_run(h, pr.pi[0], {pr.s[0]: obs[None]})
        abandoned = _rss_mb() - start
    assert shared.T == 1800
    assert finished < 10, finished
    assert abandoned > 3 * max(finished, 5), (finished, abandoned)
