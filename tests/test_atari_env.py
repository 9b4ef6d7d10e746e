"""atari_env.py: the DQN preprocessing on both env paths."""
import numpy as np
import pytest

import atari_env

PAPER_ENV = "BreakoutNoFrameskip-v4"


# ---------------------------------------------------------------- preprocessing
def test_obs_shape_dtype_and_stacking_order():
    env = atari_env.AtariEnv(PAPER_ENV, seed=0)
    obs = env.reset()
    assert obs.shape == (84, 84, 4) and obs.dtype == np.uint8
    prev = obs
    for t in range(8):
        obs, _, _, info = env.step(t % 4)
        assert obs.shape == (84, 84, 4) and obs.dtype == np.uint8
        assert np.array_equal(obs[:, :, :3], prev[:, :, 1:])  # oldest frame drops out, newest goes last
        assert info["frames"] == 4                             # action repeat 4 on a NoFrameskip id
        prev = obs
    assert obs.max() > 0


def test_max_over_two_frames():
    a = np.zeros((210, 160), np.uint8)
    b = np.zeros((210, 160), np.uint8)
    a[:100, :] = 200    # a sprite drawn only on the earlier frame (flicker)
    b[150:, :] = 100    # another drawn only on the later one
    out = atari_env.preprocess(a, b)
    assert out.shape == (84, 84) and out.dtype == np.uint8
    assert out[10, 40] == 200 and out[80, 40] == 100 and out[50, 40] == 0
    assert not np.array_equal(out, atari_env.preprocess(b, b))  # b alone loses the first sprite


def test_noop_reset():
    frames = set()
    for seed in range(6):
        env = atari_env.AtariEnv(PAPER_ENV, seed=seed)
        env.reset()
        assert 0 <= env.noops <= 30
        assert env.frame_number == 4 * (env.noops + 1)      # no-ops then FIRE, 4 raw frames each
        frames.add(env.noops)
    assert len(frames) > 1                                  # random, not a fixed count
    env = atari_env.AtariEnv(PAPER_ENV, seed=0, noop_max=0)
    env.reset()
    assert env.noops == 0 and env.frame_number == 4


def _play_until_done(env, max_steps=2000):
    env.reset()
    for t in range(max_steps):
        obs, reward, done, info = env.step(0)               # NOOP after FIRE: the ball is missed
        if done or info["lives"] < 5:
            return t, done, info
    raise AssertionError("no life lost")


def test_life_loss_ends_training_episode_only():
    env = atari_env.AtariEnv(PAPER_ENV, seed=0, noop_max=0)
    t, done, info = _play_until_done(env)
    assert done and not info["game_over"] and info["lives"] == 4
    frame_number = env.frame_number
    env.step(1)
    assert env.frame_number == frame_number + 4 and env.lives == 4  # the game went on, no reset
    ev = atari_env.AtariEnv(PAPER_ENV, seed=0, noop_max=0, training=False)
    t2, done2, info2 = _play_until_done(ev)
    assert t2 == t and info2["lives"] == 4 and not done2    # evaluation: a life lost ends nothing


def test_reward_clipping_keeps_raw_score():
    env = atari_env.AtariEnv("SpaceInvadersNoFrameskip-v4", seed=0)  # kills score 5-30 points
    env.reset()
    rng = np.random.default_rng(0)
    total_raw, total_clipped, game_over = 0.0, 0.0, False
    for _ in range(5000):
        _, reward, _, info = env.step(int(rng.integers(env.action_space.n)))
        assert reward == np.sign(info["raw_reward"])
        total_raw += info["raw_reward"]
        total_clipped += reward
        if info["game_over"]:
            game_over = True
            break
    assert game_over, "no game over in 5000 steps: the raw score was never reported"
    assert info["episode_return"] == total_raw              # the reported score is the raw one
    assert total_raw > total_clipped > 0


def test_vector_env_same_shape_dtype_meaning():
    a = atari_env.AtariEnv(PAPER_ENV, seed=3, noop_max=0)
    b = atari_env.VectorAtariEnv(PAPER_ENV, seed=3, noop_max=0)
    oa, ob = a.reset(), b.reset()
    assert oa.shape == ob.shape == (84, 84, 4) and oa.dtype == ob.dtype == np.uint8
    diffs, lives_lost = [], []
    for t in range(60):
        act = [1, 2, 3, 0][t % 4]
        oa, ra, da, ia = a.step(act)
        ob, rb, db, ib = b.step(act)
        assert ia["frames"] == ib["frames"] == (8 if da else 4) and ra == rb  # a lost life: its FIRE's 4 frames too
        diffs.append(np.abs(oa.astype(int) - ob).mean())
        lives_lost.append((da, db, ia["lives"], ib["lives"]))
    # same game, same actions: the same picture up to a one-frame FIRE offset at reset
    assert np.mean(diffs[10:]) < 1.0, np.mean(diffs[10:])
    assert all(x[0] == x[1] and x[2] == x[3] for x in lives_lost) and any(x[0] for x in lives_lost)
    with pytest.raises(atari_env.EnvError):
        atari_env.VectorAtariEnv("Breakout-v0")             # random frameskip has no native equivalent


@pytest.mark.parametrize("vector", [False, True], ids=["opencv", "vector"])
def test_a_lost_life_is_followed_by_a_served_ball(vector):
    """Breakout serves the ball only after FIRE, also after a lost life. A random policy that never
    presses FIRE: with --fire-life-loss (the default) every ball is served, so every life is lost in
    turn and the game ends; without it the game idles after the first lost life, to the frame cap."""
    def play(fire_life, steps=400):
        env = atari_env.make_env(PAPER_ENV, seed=3, vector=vector, fire_life=fire_life)
        env.reset()
        rng, lost = np.random.default_rng(0), []
        for t in range(steps):
            _, _, done, info = env.step(int(rng.choice([0, 2, 3])))  # NOOP, RIGHT, LEFT: never FIRE
            if done:
                lost.append(t)
            if info["game_over"]:
                break
        env.close()
        return lost, info["game_over"]

    lost, game_over = play(fire_life=True)
    assert game_over and len(lost) == 5, lost              # 5 lives, each ball served and missed
    assert all(b - a < 60 for a, b in zip(lost, lost[1:])), lost  # a missed ball takes about 24 steps
    lost, game_over = play(fire_life=False)
    assert len(lost) == 1 and not game_over, lost          # the reset's FIRE served one ball; then it idles


@pytest.mark.parametrize("make", [lambda: atari_env.AtariEnv(PAPER_ENV, seed=5),
                                  lambda: atari_env.VectorAtariEnv(PAPER_ENV, seed=5),
                                  lambda: atari_env.VectorObsEnv("CartPole-v1", seed=5)], ids=["opencv", "vector", "obs"])
def test_reset_seeds_only_the_first_game(make):
    """The evaluator resets its env before every evaluation: a reseed would replay the same starts."""
    env, seeds = make(), []
    real = env.env.reset
    env.env.reset = lambda seed=None, **kw: (seeds.append(seed), real(seed=seed, **kw))[1]
    env.reset()
    env.reset()
    assert seeds == [5, None], seeds


@pytest.mark.parametrize("vector", [False, True], ids=["opencv", "vector"])
def test_game_over_on_the_time_limit_step_is_terminal(vector):
    """A game that ends (terminated) on the step that also hits the frame limit is a real end: R = 0."""
    env = (atari_env.VectorAtariEnv if vector else atari_env.AtariEnv)(PAPER_ENV, seed=0)
    env.reset()
    real = env.env.step

    def step(a):                                           # the emulator says: game over and time limit, at once
        obs, r, term, trunc, info = real(a)
        if vector:
            return obs, r, np.array([True]), np.array([True]), dict(info, final_obs=obs)
        return obs, r, True, True, info

    env.env.step = step
    _, _, done, info = env.step(0)
    assert done and info["game_over"] and not info["truncated"]

