"""Environments for a3c.py: Atari with the DQN/A3C preprocessing, and vector-observation envs.

Mnih et al. 2016, "Asynchronous Methods for Deep Reinforcement Learning" (arXiv 1602.01783),
Section 8 uses the DQN preprocessing: max over the last two raw frames, luminance, 84x84,
a stack of 4 frames, action repeat 4, rewards clipped to [-1, 1].

Every env made here has the same small interface, so a3c.py does not care which path runs:
    obs = env.reset(seed)                       # Atari: (84, 84, 4) uint8; CartPole: (4,) float32
    obs, reward, done, info = env.step(action)
      reward   clipped to its sign for Atari training (info["raw_reward"] keeps the game score)
      done     end of the *training* episode: a lost life or game over (or time limit)
      info     game_over, truncated (the time limit, not a real end, ended the game: bootstrap),
               raw_reward, frames (raw emulator frames this step), final_obs (last obs of a
               finished episode), episode_return / episode_length (raw score and agent steps
               of a finished game)
    The env resets itself when a game is over (gymnasium's "same step" autoreset), so the
    returned obs is already the first obs of the next game; bootstrap from info["final_obs"].

Env ids (gymnasium 1.4 + ale-py 0.12):
    Breakout-v0             ALE skips 2-4 frames at random per step, sticky actions p=0.25
    ALE/Breakout-v5         ALE skips 4 frames, sticky actions p=0.25
    BreakoutNoFrameskip-v4  no skipping, no sticky actions: the paper's setting once the
                            wrapper adds the action repeat 4 and the two-frame max (use this
                            to compare with the paper)
Where ALE skips frames itself only the last frame is visible, so the wrapper does no repeat
and no two-frame max; it still grayscales, resizes, stacks and clips.
"""
import difflib
import functools

import ale_py
import cv2
import gymnasium as gym
import numpy as np

gym.register_envs(ale_py)  # importing ale_py registers the ids; this makes it explicit

FRAMES = 4          # stack depth (Section 8)
SIZE = 84           # 84x84 (Section 8)
ACTION_REPEAT = 4   # only where ALE does not skip frames itself
NOOP_MAX = 30       # up to 30 no-ops at reset (DQN / evaluation protocol)
MAX_FRAMES = 108_000  # 30 min of play at 60 Hz: the usual cap per game


class EnvError(ValueError):
    """Bad env id or unsupported env; a3c.py turns it into a one-line error."""


def check_env_id(env_id):
    """Raise EnvError (with close matches) for an unknown id."""
    if env_id in gym.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise EnvError(f"unknown env id {env_id!r}{hint}")


def is_atari(env_id):
    check_env_id(env_id)
    return gym.spec(env_id).entry_point == "ale_py.env:AtariEnv"


@functools.lru_cache(maxsize=None)
def has_fire(env_id):
    """Does this game have a FIRE action? (It is action 1 in every minimal action set that has one.)"""
    env = gym.make(env_id)
    try:
        meanings = env.unwrapped.get_action_meanings()
    finally:
        env.close()
    assert "FIRE" not in meanings or meanings[1] == "FIRE", meanings
    return "FIRE" in meanings


def describe(env_id, vector=False, fire_reset=True, fire_life=True):
    """One line saying what this id does, printed at start-up."""
    if not is_atari(env_id):
        return f"env {env_id}: vector observations, passed through unchanged"
    kw = gym.spec(env_id).kwargs
    skip, sticky = kw.get("frameskip", 4), kw.get("repeat_action_probability", 0.25)
    if vector:
        how = "ale_py AtariVectorEnv (native preprocessing, releases the GIL)"
    else:
        how = "OpenCV preprocessing"
    if skip == 1:
        frames = f"no ALE frameskip, wrapper repeats each action {ACTION_REPEAT}x and max-pools the last 2 frames (paper setting)"
    elif isinstance(skip, tuple):
        frames = f"ALE skips {skip[0]}-{skip[1] - 1} frames at random, no two-frame max"
    else:
        frames = f"ALE skips {skip} frames, no two-frame max"
    return (f"env {env_id}: {frames}; sticky actions p={sticky}; 84x84x4 uint8, "
            f"0-{NOOP_MAX} no-ops, {'FIRE' if fire_reset else 'no FIRE'} at reset, "
            f"{'FIRE' if fire_life else 'no FIRE'} after a lost life, life loss ends training episodes, rewards clipped; {how}")


def preprocess(frame_prev, frame_last):
    """Two raw grayscale frames (210, 160) -> one (84, 84) uint8 frame.
    Max over the two removes the flicker of sprites drawn every other frame."""
    frame = np.maximum(frame_prev, frame_last)
    return cv2.resize(frame, (SIZE, SIZE), interpolation=cv2.INTER_AREA)


class AtariEnv:
    """The readable path: gymnasium AtariEnv + numpy/OpenCV preprocessing, one step at a time."""

    def __init__(self, env_id, seed=0, training=True, noop_max=NOOP_MAX, render=False, fire_reset=True, fire_life=True):
        # obs_type="grayscale" gives ALE's luminance (the same palette AtariVectorEnv uses)
        self.env = gym.make(env_id, obs_type="grayscale", max_num_frames_per_episode=MAX_FRAMES,
                            render_mode="rgb_array" if render else None)
        self.ale = self.env.unwrapped.ale
        skip = gym.spec(env_id).kwargs.get("frameskip", 4)
        self.repeat = ACTION_REPEAT if skip == 1 else 1   # repeat only where ALE does not skip
        self.training, self.noop_max = training, noop_max
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.fire = fire_reset and has_fire(env_id)
        self.fire_life = fire_life and has_fire(env_id)
        self.observation_space = gym.spaces.Box(0, 255, (SIZE, SIZE, FRAMES), np.uint8)
        self.action_space = self.env.action_space
        self.stack = np.zeros((SIZE, SIZE, FRAMES), np.uint8)

    def _raw_step(self, action):
        """Action repeat with a max over the last two raw frames. Returns frame, reward, terminated, truncated, info."""
        total, frames = 0.0, []
        for _ in range(self.repeat):
            frame, r, terminated, truncated, info = self.env.step(action)
            total += r
            frames = (frames + [frame])[-2:]
            if terminated or truncated:
                break
        return preprocess(frames[0], frames[-1]), total, terminated, truncated, info

    def _push(self, frame):
        self.stack = np.concatenate([self.stack[:, :, 1:], frame[:, :, None]], axis=2)  # newest last
        return self.stack

    def reset(self, seed=None):
        frame, info = self.env.reset(seed=self.seed if seed is None else seed)
        self.seed = None                                    # seed only the first game
        frame = preprocess(frame, frame)
        self.noops = int(self.rng.integers(0, self.noop_max + 1))  # 0-30 random no-ops
        for _ in range(self.noops):
            frame, _, terminated, truncated, info = self._raw_step(0)
            if terminated or truncated:
                frame, info = self.env.reset()
                frame = preprocess(frame, frame)
        if self.fire:                                       # Breakout idles until FIRE
            frame, _, _, _, info = self._raw_step(1)
        self.lives = info["lives"]
        self.frame_number = info["frame_number"]
        self.episode_return, self.episode_length = 0.0, 0
        self.stack[:] = frame[:, :, None]                   # first obs: the frame repeated 4 times
        return self.stack.copy()

    def step(self, action):
        frame, raw, terminated, truncated, info = self._raw_step(action)
        if self.fire_life and info["lives"] < self.lives and not (terminated or truncated):
            self._push(frame)                               # Breakout serves the next ball only after FIRE:
            frame, r, terminated, truncated, info = self._raw_step(1)  # press it, as at reset (--fire-life-loss)
            raw += r
        obs = self._push(frame).copy()
        out = {"raw_reward": raw, "game_over": terminated or truncated,
               "truncated": truncated and not terminated,
               "frames": info["frame_number"] - self.frame_number, "lives": info["lives"]}
        self.frame_number = info["frame_number"]
        self.episode_return += raw
        self.episode_length += 1
        life_lost = out["life_lost"] = info["lives"] < self.lives
        self.lives = info["lives"]
        # Life loss ends the *training* episode (R = 0 there) but the game goes on: no reset.
        done = out["game_over"] or (self.training and life_lost)
        if out["game_over"]:
            out.update(final_obs=obs, episode_return=self.episode_return, episode_length=self.episode_length)
            obs = self.reset()                              # autoreset in the same step
            out["frames"] += max(0, self.frame_number - info["frame_number"])  # its no-ops and FIRE, as the vector path counts
        reward = float(np.sign(raw)) if self.training else raw  # clip to sign for training only
        return obs, reward, done, out

    def render(self):
        return self.env.render()

    def close(self):
        self.env.close()


class VectorAtariEnv:
    """The fast path: ale_py's AtariVectorEnv with one env, which preprocesses in C++ and
    releases the GIL while it runs, so Python threads scale with cores. Same settings as
    AtariEnv; reward clipping and life-loss bookkeeping are done here, identically."""

    def __init__(self, env_id, seed=0, training=True, noop_max=NOOP_MAX, fire_reset=True, fire_life=True):
        from ale_py.vector_env import AtariVectorEnv
        kw = gym.spec(env_id).kwargs
        skip = kw.get("frameskip", 4)
        if isinstance(skip, tuple):
            raise EnvError(f"--vector-env needs a fixed frameskip; {env_id} skips frames at random "
                           f"(use ALE/{kw['game'].capitalize()}-v5 or {kw['game'].capitalize()}NoFrameskip-v4)")
        self.env = AtariVectorEnv(
            kw["game"], num_envs=1, num_threads=1,
            frameskip=ACTION_REPEAT if skip == 1 else skip, maxpool=skip == 1,
            repeat_action_probability=kw.get("repeat_action_probability", 0.25),
            max_num_frames_per_episode=MAX_FRAMES, noop_max=noop_max, use_fire_reset=fire_reset,
            img_height=SIZE, img_width=SIZE, grayscale=True, stack_num=FRAMES,
            reward_clipping=False,            # we clip ourselves so the raw score stays visible
            episodic_life=False, life_loss_info=False,  # life loss detected from info["lives"], as in AtariEnv
            autoreset_mode="SameStep")        # obs after game over is already the next game's first obs
        self.training, self.seed = training, seed
        self.fire_life = fire_life and has_fire(env_id)
        self.observation_space = gym.spaces.Box(0, 255, (SIZE, SIZE, FRAMES), np.uint8)
        self.action_space = self.env.single_action_space

    @staticmethod
    def _hwc(obs):
        return np.ascontiguousarray(obs[0].transpose(1, 2, 0))  # (1, 4, 84, 84) -> (84, 84, 4)

    def reset(self, seed=None):
        obs, info = self.env.reset(seed=self.seed if seed is None else seed)
        self.seed = None                                    # seed only the first game
        self.lives, self.frame_number = int(info["lives"][0]), int(info["frame_number"][0])
        self.episode_return, self.episode_length = 0.0, 0
        return self._hwc(obs)

    def step(self, action):
        obs, raw, terminated, truncated, info = self.env.step(np.array([action]))
        if self.fire_life and int(info["lives"][0]) < self.lives and not (terminated[0] or truncated[0]):
            obs, r, terminated, truncated, info = self.env.step(np.array([1]))  # FIRE serves the next ball, as above
            raw = raw + r
        raw, game_over = float(raw[0]), bool(terminated[0] or truncated[0])
        frame_number = int(info["frame_number"][0])
        out = {"raw_reward": raw, "game_over": game_over, "truncated": bool(truncated[0] and not terminated[0]),
               "frames": frame_number - self.frame_number, "lives": int(info["lives"][0])}
        self.frame_number = frame_number
        self.episode_return += raw
        self.episode_length += 1
        life_lost = out["life_lost"] = not game_over and out["lives"] < self.lives
        self.lives = out["lives"]
        done = game_over or (self.training and life_lost)
        if game_over:
            out.update(final_obs=self._hwc(info["final_obs"]), episode_return=self.episode_return,
                       episode_length=self.episode_length)
            self.episode_return, self.episode_length = 0.0, 0
        reward = float(np.sign(raw)) if self.training else raw
        return self._hwc(obs), reward, done, out

    def close(self):
        self.env.close()


class VectorObsEnv:
    """CartPole-v1, Acrobot-v1, Pendulum-v1, ...: observations and rewards unchanged, same interface.
    A Box action is clipped to the space's bounds on its way in (gymnasium's ClipAction), so the
    agent's unclipped sample is what its log-probability is of; action_space keeps the bounds."""

    def __init__(self, env_id, seed=0, training=True, render=False):
        if "mujoco" in str(gym.spec(env_id).entry_point):
            quiet_mujoco()
        self.env = gym.make(env_id, render_mode="rgb_array" if render else None)
        self.seed = seed
        self.observation_space, self.action_space = self.env.observation_space, self.env.action_space
        if isinstance(self.action_space, gym.spaces.Box):
            self.env = gym.wrappers.ClipAction(self.env)   # its own action_space is unbounded

    def reset(self, seed=None):
        obs, _ = self.env.reset(seed=self.seed if seed is None else seed)
        self.seed = None
        self.episode_return, self.episode_length = 0.0, 0
        return np.asarray(obs, np.float32)

    def step(self, action):
        obs, r, terminated, truncated, _ = self.env.step(action)
        obs = np.asarray(obs, np.float32)
        self.episode_return += r
        self.episode_length += 1
        done = terminated or truncated
        out = {"raw_reward": r, "game_over": done, "truncated": truncated and not terminated, "frames": 1}
        if done:
            out.update(final_obs=obs, episode_return=self.episode_return, episode_length=self.episode_length)
            obs = self.reset()
        return obs, float(r), done, out

    def render(self):
        return self.env.render()

    def close(self):
        self.env.close()


_mujoco_said = set()


def quiet_mujoco():
    """MuJoCo's warnings go to stderr once each, not to a MUJOCO_LOG.TXT in the working directory
    (mujoco 4.0 warns at every load of gymnasium's models: 'settotalmass' is deprecated)."""
    import sys

    import mujoco

    def warn(msg):
        if msg not in _mujoco_said:
            _mujoco_said.add(msg)
            print(f"mujoco: {msg}", file=sys.stderr, flush=True)
    mujoco.set_mju_user_warning(warn)


def vector_ok(env_id):
    """Can AtariVectorEnv run this id? (It needs a fixed frameskip.)"""
    return env_id in gym.registry and is_atari(env_id) and not isinstance(gym.spec(env_id).kwargs.get("frameskip", 4), tuple)


def make_env(env_id, seed=0, vector=False, training=True, render=False, fire_reset=True, fire_life=True):
    """The env a3c.py uses. Raises EnvError for unknown ids and spaces a3c.py cannot handle."""
    if is_atari(env_id):
        env = VectorAtariEnv(env_id, seed, training, fire_reset=fire_reset, fire_life=fire_life) if vector else \
            AtariEnv(env_id, seed, training, render=render, fire_reset=fire_reset, fire_life=fire_life)
    else:
        if vector:
            raise EnvError(f"--vector-env is for Atari ids only, not {env_id}")
        env = VectorObsEnv(env_id, seed, training, render=render)
    obs_space, space = env.observation_space, env.action_space
    if not (isinstance(space, gym.spaces.Discrete) or isinstance(space, gym.spaces.Box) and len(space.shape) == 1
            and len(obs_space.shape) == 1 and np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        env.close()
        raise EnvError(f"{env_id} has action space {space}; a3c.py handles discrete actions (gymnasium.spaces."
                       f"Discrete) and, with vector observations, bounded 1-D Box actions only")
    if not isinstance(obs_space, gym.spaces.Box) or (len(obs_space.shape) != 1 and obs_space.shape != (SIZE, SIZE, FRAMES)):
        env.close()
        raise EnvError(f"{env_id} has observation space {obs_space}; a3c.py handles Atari frames and flat "
                       f"vector observations (a 1-D Box) only")
    return env


def actions(space):
    """(n, bounds): the number of discrete actions and None, or a Box's dimensions and its (low, high)."""
    if isinstance(space, gym.spaces.Box):
        return int(space.shape[0]), (space.low.astype(float).tolist(), space.high.astype(float).tolist())
    return int(space.n), None


def flags_of(args):
    """make_env's and describe's keywords from the flags add_flags declares."""
    return dict(fire_reset=args.fire_reset, fire_life=args.fire_life_loss)


def add_flags(p):
    """a3c.py's flags for the env paths, declared here beside what they switch."""
    import argparse
    p.add_argument("--vector-env", action=argparse.BooleanOptionalAction,
                   help="Atari: one ale_py AtariVectorEnv per thread (native preprocessing, releases the GIL); "
                        "default: on where it can run the id (a fixed frameskip), else the OpenCV path")
    p.add_argument("--fire-reset", action=argparse.BooleanOptionalAction, default=True,
                   help="press FIRE after each reset of a game, as DQN-era wrappers do (default on; docs/a3c-results.md)")
    p.add_argument("--fire-life-loss", action=argparse.BooleanOptionalAction, default=True,
                   help="press FIRE after each lost life too, so that Breakout serves the next ball whatever the "
                        "policy does; DQN-era wrappers do this in effect (default on; docs/a3c-results.md)")
