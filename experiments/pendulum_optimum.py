"""How high can a Pendulum-v1 return go? A near-optimal controller by dynamic programming.

gymnax's Pendulum-v1 (the same dynamics as Gym's: g=10, dt=0.05, |torque| <= 2, |speed| <= 8,
reward -(angle^2 + 0.1 speed^2 + 0.001 torque^2), 200 steps, start angle uniform in
[-pi, pi] and speed in [-1, 1]) is small enough to solve almost exactly: backward induction
over the 200 steps on a fine (angle, speed) grid with bilinear interpolation, then the
time-dependent greedy controller is run on the *true* continuous dynamics from random starts.

The controller's mean return is an achievable return (a lower bound on the optimum), and
the grid value ``V_0`` averaged over the start distribution estimates the optimum itself; when
the two agree the optimum is pinned down. It is the ceiling against which a PPO result
(and the published -130 of gymnax's PPO baseline) should be read.

    python experiments/pendulum_optimum.py                     # about 2.5 minutes on 2 CPU cores
    python experiments/pendulum_optimum.py --angles 721 --speeds 641 --episodes 4000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

G, DT, MAX_TORQUE, MAX_SPEED, STEPS = 10.0, 0.05, 2.0, 8.0, 200


def angle_normalize(x):
    return ((x + np.pi) % (2 * np.pi)) - np.pi


def step(th, thdot, u):
    """One step of the dynamics; returns (reward, th', thdot')."""
    u = np.clip(u, -MAX_TORQUE, MAX_TORQUE)
    reward = -(angle_normalize(th) ** 2 + 0.1 * thdot**2 + 0.001 * u**2)
    thdot2 = np.clip(thdot + (3 * G / 2 * np.sin(th) + 3.0 * u) * DT, -MAX_SPEED, MAX_SPEED)
    return reward, th + thdot2 * DT, thdot2


class Grid:
    def __init__(self, n_th: int, n_v: int):
        self.th = np.linspace(-np.pi, np.pi, n_th, endpoint=False)  # periodic
        self.v = np.linspace(-MAX_SPEED, MAX_SPEED, n_v)
        self.dth = 2 * np.pi / n_th
        self.dv = 2 * MAX_SPEED / (n_v - 1)

    def interp(self, values, th, v):
        """Bilinear interpolation of ``values [n_th, n_v]`` at angles ``th`` and speeds ``v``."""
        n_th, n_v = values.shape
        x = (angle_normalize(th) + np.pi) / self.dth
        i0 = np.floor(x).astype(np.int64)
        fx = x - i0
        i0 %= n_th
        i1 = (i0 + 1) % n_th
        y = np.clip((v + MAX_SPEED) / self.dv, 0, n_v - 1 - 1e-9)
        j0 = np.floor(y).astype(np.int64)
        fy = y - j0
        j1 = j0 + 1
        return ((1 - fx) * ((1 - fy) * values[i0, j0] + fy * values[i0, j1])
                + fx * ((1 - fy) * values[i1, j0] + fy * values[i1, j1]))


def solve(grid: Grid, actions: np.ndarray) -> np.ndarray:
    """Backward induction: ``V[k]`` = best return of the remaining ``STEPS - k`` steps, ``[STEPS + 1, n_th, n_v]``."""
    th, v = np.meshgrid(grid.th, grid.v, indexing="ij")
    values = np.zeros((STEPS + 1,) + th.shape, np.float32)
    rewards, nexts = [], []
    for u in actions:  # the transitions do not depend on k: compute them once
        r, th2, v2 = step(th, v, u)
        rewards.append(r)
        nexts.append((th2, v2))
    for k in range(STEPS - 1, -1, -1):
        best = np.full(th.shape, -np.inf)
        for r, (th2, v2) in zip(rewards, nexts):
            best = np.maximum(best, r + grid.interp(values[k + 1], th2, v2))
        values[k] = best
    return values


def run_controller(grid: Grid, values: np.ndarray, actions: np.ndarray, episodes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    th = rng.uniform(-np.pi, np.pi, episodes)
    v = rng.uniform(-1.0, 1.0, episodes)
    total = np.zeros(episodes)
    for k in range(STEPS):
        q = np.stack([step(th, v, u)[0] + grid.interp(values[k + 1], *step(th, v, u)[1:]) for u in actions])
        u = actions[np.argmax(q, axis=0)]
        r, th, v = step(th, v, u)
        total += r
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--angles", type=int, default=361)
    parser.add_argument("--speeds", type=int, default=321)
    parser.add_argument("--actions", type=int, default=41)
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    grid = Grid(args.angles, args.speeds)
    actions = np.linspace(-MAX_TORQUE, MAX_TORQUE, args.actions)
    t0 = time.perf_counter()
    values = solve(grid, actions)
    solve_s = time.perf_counter() - t0
    returns = run_controller(grid, values, actions, args.episodes, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    starts_th, starts_v = rng.uniform(-np.pi, np.pi, 100_000), rng.uniform(-1.0, 1.0, 100_000)
    v0 = grid.interp(values[0], starts_th, starts_v)
    se = returns.std() / np.sqrt(len(returns))
    print(f"grid {args.angles} angles x {args.speeds} speeds x {args.actions} torques, solved in {solve_s:.0f} s")
    print(f"grid optimum V_0 averaged over the start distribution: {v0.mean():.1f}")
    print(f"DP controller on the true dynamics, {args.episodes} episodes: mean {returns.mean():.1f} "
          f"(+- {1.96 * se:.1f}, 95%), median {np.median(returns):.1f}, best {returns.max():.1f}, worst {returns.min():.1f}")
    for n in (10, 32, 100):
        means = returns[: (len(returns) // n) * n].reshape(-1, n).mean(axis=1)
        print(f"  mean of {n:>3} episodes ranges over {means.min():.1f} .. {means.max():.1f}")


if __name__ == "__main__":
    main()
