"""Drawing recorded episodes as animated GIFs (Pillow only; no display or game engine).

Frames are drawn from observations, which for the supported environments carry the whole
visible state: CartPole, Acrobot, Pendulum, MountainCar (discrete and continuous) and the
MinAtar games. Brax tasks are drawn from their bodies' world positions, as a side view of the
skeleton following the first body. Each frame carries, in its top-left corner, the step and the return so far
(the step number also keeps consecutive frames distinct, so no GIF writer merges two steps).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from purejaxppo.errors import RunError
from purejaxppo.naming import is_brax

W, H = 320, 240
BG, FG, ACCENT, BAR = (255, 255, 255), (40, 40, 40), (200, 80, 40), (120, 160, 220)


def _cartpole(draw: ImageDraw.ImageDraw, obs: np.ndarray) -> None:
    x, theta = float(obs[0]), float(obs[2])
    scale = W / 4.8
    ground = H * 0.7
    cx = W / 2 + x * scale
    draw.line([(0, ground), (W, ground)], fill=FG, width=1)
    draw.rectangle([cx - 25, ground - 15, cx + 25, ground + 5], fill=FG)
    pole = 1.0 * scale  # the pole is 2 x 0.5 m long
    tip = (cx + pole * math.sin(theta), ground - 15 - pole * math.cos(theta))
    draw.line([(cx, ground - 15), tip], fill=ACCENT, width=6)


def _pendulum(draw: ImageDraw.ImageDraw, obs: np.ndarray) -> None:
    theta = math.atan2(float(obs[1]), float(obs[0]))  # 0 = upright
    c, r = (W / 2, H / 2), H * 0.38
    tip = (c[0] + r * math.sin(theta), c[1] - r * math.cos(theta))
    draw.line([c, tip], fill=ACCENT, width=8)
    draw.ellipse([c[0] - 4, c[1] - 4, c[0] + 4, c[1] + 4], fill=FG)


def _acrobot(draw: ImageDraw.ImageDraw, obs: np.ndarray) -> None:
    th1 = math.atan2(float(obs[1]), float(obs[0]))  # 0 = hanging down
    th2 = math.atan2(float(obs[3]), float(obs[2]))
    c, link = (W / 2, H / 2), H * 0.22
    p1 = (c[0] + link * math.sin(th1), c[1] + link * math.cos(th1))
    p2 = (p1[0] + link * math.sin(th1 + th2), p1[1] + link * math.cos(th1 + th2))
    draw.line([(0, c[1] - link), (W, c[1] - link)], fill=BAR, width=1)  # the goal height
    draw.line([c, p1], fill=FG, width=6)
    draw.line([p1, p2], fill=ACCENT, width=6)


def _mountain_car(draw: ImageDraw.ImageDraw, obs: np.ndarray) -> None:
    lo, hi = -1.2, 0.6
    sx = lambda p: (p - lo) / (hi - lo) * W  # noqa: E731
    sy = lambda p: H * 0.8 - (math.sin(3 * p) + 1) * H * 0.3  # noqa: E731
    xs = np.linspace(lo, hi, 100)
    draw.line([(sx(p), sy(p)) for p in xs], fill=FG, width=2)
    draw.line([(sx(0.45), sy(0.45)), (sx(0.45), sy(0.45) - 20)], fill=BAR, width=3)  # the flag
    p = float(obs[0])
    draw.ellipse([sx(p) - 7, sy(p) - 14, sx(p) + 7, sy(p)], fill=ACCENT)


def _minatar(shape: tuple[int, ...]) -> Callable[[ImageDraw.ImageDraw, np.ndarray], None]:
    h, w, c = shape
    rng = np.random.default_rng(0)
    colours = [tuple(int(v) for v in rng.integers(40, 255, 3)) for _ in range(c)]
    cell = min(W // w, H // h)

    def draw_grid(draw: ImageDraw.ImageDraw, obs: np.ndarray) -> None:
        grid = np.asarray(obs).reshape(shape)
        for i in range(h):
            for j in range(w):
                on = np.flatnonzero(grid[i, j] > 0.5)
                if on.size:
                    draw.rectangle([j * cell, i * cell, (j + 1) * cell - 1, (i + 1) * cell - 1], fill=colours[on[-1]])

    return draw_grid


def _brax_side_view(parents: list[int]) -> Callable[[ImageDraw.ImageDraw, np.ndarray], None]:
    """A side view (x right, z up) of a Brax task's bodies ``[bodies, 3]``: a line from each body
    to its parent, a dot per body, the ground, and the camera following the first body."""

    def draw_bodies(draw: ImageDraw.ImageDraw, pos: np.ndarray) -> None:
        pos = np.asarray(pos, np.float64).reshape(-1, 3)
        scale = H / 3.0  # 3 m of height in view
        cx, ground = float(pos[0, 0]), H * 0.85
        px = lambda p: (W / 2 + (p[0] - cx) * scale, ground - p[2] * scale)  # noqa: E731
        draw.line([(0, ground), (W, ground)], fill=FG, width=1)
        for mark in np.arange(np.floor(cx - 2), cx + 2, 0.5):  # ground ticks show the motion
            x = W / 2 + (mark - cx) * scale
            draw.line([(x, ground), (x - 6, ground + 6)], fill=BAR, width=1)
        for i, parent in enumerate(parents):
            if 0 <= parent < len(pos):
                draw.line([px(pos[parent]), px(pos[i])], fill=ACCENT, width=5)
        for p in pos:
            x, y = px(p)
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=FG)

    return draw_bodies


def renderer(env_name: str, obs_shape: tuple[int, ...], parents: list[int] | None = None):
    """The frame drawer for ``env_name``; raises ``ValueError`` naming the supported ones.
    Brax environments (``brax/...``) are drawn from body positions, with ``parents`` their skeleton."""
    if is_brax(env_name):
        return _brax_side_view(parents or [])
    if env_name == "CartPole-v1":
        return _cartpole
    if env_name == "Pendulum-v1":
        return _pendulum
    if env_name == "Acrobot-v1":
        return _acrobot
    if env_name in ("MountainCar-v0", "MountainCarContinuous-v0"):
        return _mountain_car
    if env_name.endswith("-MinAtar") and len(obs_shape) == 3:
        return _minatar(obs_shape)
    raise ValueError(
        f"cannot draw {env_name}; accepted: CartPole-v1, Acrobot-v1, Pendulum-v1, MountainCar-v0, "
        "MountainCarContinuous-v0, the MinAtar games and the Brax tasks (brax/...)"
    )


def check_renderable(env_name: str, obs_shape: tuple[int, ...], path: str) -> None:
    """Refuse, before anything runs, an environment that cannot be drawn, a path that is not a
    GIF, or a folder that does not exist or cannot be written."""
    try:
        renderer(env_name, obs_shape)
    except ValueError as e:
        raise RunError(f"--render: {e}") from None
    if not path.lower().endswith(".gif"):
        raise RunError(f"--render: {path} is not a .gif file name; accepted: a path ending in .gif")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        what = "is a file, not a folder" if os.path.exists(folder) else "does not exist"
        raise RunError(f"--render: the folder {os.path.dirname(path)} {what}; accepted: a path in an existing folder")
    if not os.access(folder, os.W_OK) or os.path.isdir(path):
        raise RunError(f"--render: cannot write {path}; accepted: a file path in a folder you can write to")


def write_gif(path: str, env_name: str, obs_shape: tuple[int, ...], observations: np.ndarray,
              rewards: np.ndarray | None = None, fps: int = 25, parents: list[int] | None = None) -> int:
    """Draw every observation as one frame of an animated GIF; returns the number of frames.

    ``observations [T+1]`` from the first to the last reached; ``rewards [T]`` (optional) give
    the return so far shown on each frame.
    """
    draw_frame = renderer(env_name, obs_shape, parents)
    n = len(observations)
    so_far = np.concatenate([[0.0], np.cumsum(rewards)]) if rewards is not None else None
    frames = []
    for t, obs in enumerate(observations):
        img = Image.new("RGB", (W, H), BG)
        draw = ImageDraw.Draw(img)
        draw_frame(draw, obs)
        label = f"step {t}" + (f"  return {so_far[t]:.1f}" if so_far is not None else "")
        draw.rectangle([2, 2, 8 + 6 * len(label), 14], fill=BG)
        draw.text((5, 3), label, fill=FG)
        frames.append(img.convert("P", palette=Image.Palette.ADAPTIVE, colors=32))
    try:
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0,
                       optimize=False, disposal=1)
    except OSError as e:
        raise RunError(f"--render: cannot write {path}: {e.strerror or e}") from None
    return n
