"""a3c.py --play: a checkpoint's theta plays full games, the evaluation protocol of a3c.play_games,
seeded as a run's final evaluation is (the same seed replays its games); --record writes a video."""
import numpy as np

import atari_env
from a3c_checkpoints import check_meta, for_play, restore
from a3c_cli import make_env, read_actions
from tf_session import session
from video import open_video, write_frame


def open_play(args, seed):
    """The checkpoint's latest.json (checked against the env), the env seeded `seed`, the video (or
    None), and the number of actions (read_actions sets args.continuous). Prints the env line, as training does."""
    meta = for_play(args)                                  # the network flags follow the checkpoint
    env = make_env(args.env, seed, training=False, render=bool(args.record), **atari_env.flags_of(args))
    n_actions = read_actions(args, env.action_space)
    check_meta(meta, args.play, args.env, env.observation_space.shape, n_actions, args.lstm, method=args.method,
               action_space=str(env.action_space))
    video = open_video(args.record, env, args.env) if args.record else None
    print(atari_env.describe(args.env, **atari_env.flags_of(args)), flush=True)
    return env, meta, video, n_actions


class Games:
    """play_games' on_step: a line per finished game, each frame to the video; then the RESULT line."""

    def __init__(self, env, video):
        self.env, self.video, self.scores = env, video, []

    def __call__(self, info):
        write_frame(self.video, self.env)
        if info["game_over"]:
            self.scores.append(info["episode_return"])
            print(f"episode={len(self.scores)} return={self.scores[-1]:.1f} length={info['episode_length']}",
                  flush=True)

    def result(self, env_id):
        if self.video is not None:
            self.video.release()
        print(f"RESULT env={env_id} episodes={len(self.scores)} mean_return={np.mean(self.scores):.2f} "
              f"std_return={np.std(self.scores):.2f}", flush=True)


def play(args, paper):
    """`paper`: the a3c module, whose network and play_games this runs."""
    tf = paper.tf
    env, meta, video, n_actions = open_play(args, args.seed + paper.PLAY_SEED)
    obs_shape = env.observation_space.shape
    tf.set_random_seed(args.seed)
    args.rms_eps = 0.1                                     # build_global makes an optimizer; --play never uses it
    g = paper.build_global(obs_shape, n_actions, args)
    net = paper.build_local("play", g, obs_shape, n_actions, args, learner=False)
    sess = session(args.threads)
    restore(sess, tf.train.Saver(g.theta + [g.T]), meta)
    sess.run(net.copy_from_global)
    games = Games(env, video)
    rng = np.random.default_rng(args.seed + paper.PLAY_SEED)
    paper.play_games(sess, net, env, args.episodes, rng, args, on_step=games)
    games.result(args.env)
    return 0
