"""a3c.py --partial-run: the slides' variant of Algorithm 3's rollout, with Session.partial_run.

The same algorithm as a3c.actor_learner, another way to run it: t_max + 1 batch-1 copies of the
thread's network (shared weights), so that partial_run keeps the forward passes that chose the
actions and the update reuses them. Not the default: TF 2.21 keeps part of every fed tensor,
about 120 KB per update (docs/a3c-results.md). `paper` is the a3c module, whose network, loss and
update this builds."""
import numpy as np


def build(scope, g, obs_shape, n_actions, args, paper):
    tf = paper.tf
    with tf.variable_scope(scope, reuse=True):
        s = [paper.placeholders(obs_shape, False, 1)[0] for _ in range(args.t_max + 1)]
        out = [paper.network(s_k, n_actions, None, args.value_torso == "own") for s_k in s]
        pr = paper.types.SimpleNamespace(s=s, pi=[tf.nn.softmax(o[0]) for o in out[:-1]], v_boot=out[-1][1],
                                         a_ph=tf.placeholder(tf.int32, [args.t_max]),
                                         R_ph=tf.placeholder(tf.float32, [args.t_max]),
                                         mask_ph=tf.placeholder(tf.float32, [args.t_max]))  # 0: padding after a terminal
        logits = tf.concat([o[0] for o in out[:-1]], 0)    # the acting copies' outputs, as one rollout's
        v = tf.concat([o[1] for o in out[:-1]], 0)
        theta_local = tf.trainable_variables(scope + "/")
        log_pi_a, entropy = paper.categorical(logits, pr.a_ph)
        loss, stats, n = paper.a3c_loss(log_pi_a, entropy, v, pr.R_ph, args, pr.mask_ph)
        pr.train, pr.grads, pr.clipped = paper.clipped_update(loss, stats, n, theta_local, g, args)
    return pr


def rollout(sess, pr, net, g, env, s, rng, lr, args, shared, i, paper):
    """One rollout and update: each step runs only its own copy of the network; the update reuses
    those activations. Returns the state to continue from."""
    t_max = args.t_max
    sess.run(net.copy_from_global)
    fetches = pr.pi + [pr.v_boot] + list(pr.train.values())
    h = sess.partial_run_setup(fetches, pr.s + [pr.a_ph, pr.R_ph, pr.mask_ph, g.lr_ph])
    actions, rewards = [], []
    for k in range(t_max):
        a = paper.sample(rng, (sess.partial_run(h, pr.pi[k], {pr.s[k]: s[None]})[0],))
        actions.append(a)
        s, r, done, info = env.step(a)
        rewards.append(args.reward_scale * r)
        shared.record(i, info)
        if done:
            break
    n = len(rewards)
    zero = np.zeros((1, *s.shape), s.dtype)
    fd = {pr.s[k]: zero for k in range(n, t_max)}          # padded, masked steps finish the handle
    if done and not info["truncated"]:
        R = 0.0                                            # terminal s_t
        fd[pr.s[t_max]] = zero                             # the unused bootstrap copy, fed to finish the handle
    else:
        R = sess.partial_run(h, pr.v_boot, {pr.s[t_max]: (info["final_obs"] if done else s)[None]})[0]
    returns = paper.n_step_returns(rewards, R, args.gamma)
    fd.update({pr.a_ph: np.pad(actions, (0, t_max - n)), pr.R_ph: np.pad(returns, (0, t_max - n)),
               pr.mask_ph: (np.arange(t_max) < n).astype(np.float32), g.lr_ph: lr})
    left = pr.pi[n:] + ([pr.v_boot] if pr.s[t_max] in fd else [])  # fetches the handle has not given yet
    vals = sess.partial_run(h, left + list(pr.train.values()), fd)[len(left):]
    shared.update(dict(zip(pr.train, vals)))
    return s
