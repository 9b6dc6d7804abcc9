"""A procedurally rendered dense dataset: textured scenes of spheres and boxes on a floor before a wall,
ray-cast in numpy with exact per-pixel depth and class labels, deterministic from a seed. No downloads.

Each scene: a pinhole camera at the origin looking down +z; a floor plane below it and a (slightly tilted)
back wall; 2–5 spheres and boxes (boxes rotated about the vertical axis) standing on the floor. Every surface
gets its own random solid texture (checker, stripes or smooth noise in two random colours) and Lambertian
shading from a random light, plus sensor noise — so colour says little about depth, and depth must come from
geometry (occlusion, perspective, contact with the floor, shading).

Depth is the z-distance along the optical axis (what depth sensors report); labels are `SHAPE_CLASSES`.
"""

from __future__ import annotations

import numpy as np

SHAPE_CLASSES: tuple[str, ...] = ("wall", "floor", "sphere", "box")
_FOV_DEG = 60.0


def _rays(size: int) -> np.ndarray:
    """Ray directions (H, W, 3) with d_z = 1, so the hit distance t along a ray is its depth."""
    f = 0.5 * size / np.tan(np.radians(_FOV_DEG) / 2)
    c = (np.arange(size) + 0.5 - size / 2) / f
    x, y = np.meshgrid(c, -c)  # image rows go down, world y goes up
    return np.stack([x, y, np.ones_like(x)], axis=-1)


def _plane(d: np.ndarray, normal: np.ndarray, offset: float) -> np.ndarray:
    """Hit distance of rays d with the plane n·p = offset (inf where missed or behind)."""
    denom = d @ normal
    with np.errstate(divide="ignore", invalid="ignore"):
        t = offset / denom
    return np.where((t > 1e-6) & np.isfinite(t), t, np.inf)


def _sphere(d: np.ndarray, centre: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Hit distance (H, W) and unit normals (H, W, 3) of rays d with a sphere."""
    a = (d * d).sum(-1)
    b = -2.0 * (d @ centre)
    c = centre @ centre - radius ** 2
    disc = b * b - 4 * a * c
    t = np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
    t = np.where(t > 1e-6, t, np.inf)
    normals = (d * np.where(np.isfinite(t), t, 0)[..., None] - centre) / radius
    return t, normals


def _box(d: np.ndarray, centre: np.ndarray, half: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Hit distance and normals of rays d with a box rotated by `angle` about the vertical axis (slab
    method)."""
    cos, sin = np.cos(angle), np.sin(angle)
    rot = np.array([[cos, 0, sin], [0, 1, 0], [-sin, 0, cos]])  # box frame → world
    o = rot.T @ (-centre)  # camera origin in the box frame
    dl = d @ rot  # (H, W, 3) directions in the box frame
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-half - o) / dl, (half - o) / dl
    near, far = np.minimum(t1, t2), np.maximum(t1, t2)
    near = np.nan_to_num(near, nan=-np.inf)
    far = np.nan_to_num(far, nan=np.inf)
    t_near, t_far = near.max(-1), far.min(-1)
    t = np.where((t_far >= t_near) & (t_near > 1e-6), t_near, np.inf)
    axis = near.argmax(-1)  # the slab entered last is the face hit
    normal_local = np.zeros_like(dl)
    np.put_along_axis(normal_local, axis[..., None], -np.sign(np.take_along_axis(dl, axis[..., None], -1)),
                      -1)
    return t, normal_local @ rot.T


def _texture(rng: np.random.Generator, points: np.ndarray) -> np.ndarray:
    """A random solid texture evaluated at points (..., 3) → RGB in [0, 1] (..., 3)."""
    colours = rng.uniform(0.05, 1.0, size=(2, 3))
    kind = rng.integers(3)
    freq = rng.uniform(1.0, 4.0)
    if kind == 0:  # 3-D checker
        mix = (np.floor(points * freq).sum(-1) % 2)[..., None]
    elif kind == 1:  # stripes along a random direction
        direction = rng.normal(size=3)
        mix = (0.5 + 0.5 * np.sin(freq * 3 * (points @ (direction / np.linalg.norm(direction)))))[..., None]
    else:  # smooth noise: a few random sinusoids
        waves = rng.normal(size=(4, 3)) * freq
        phases = rng.uniform(0, 2 * np.pi, 4)
        mix = (0.5 + 0.125 * np.sin(points @ waves.T + phases).sum(-1))[..., None]
    return colours[0] * (1 - mix) + colours[1] * mix


def render_scene(seed: int | tuple[int, ...], size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one scene.

    Returns:
        image uint8 (H, W, 3), depth float32 (H, W) (z-distance, all pixels valid), labels uint8 (H, W)
        indexing `SHAPE_CLASSES`.
    """
    rng = np.random.default_rng(seed)
    d = _rays(size)
    cam_height = rng.uniform(1.0, 2.0)
    wall_z, tilt = rng.uniform(9.0, 14.0), rng.uniform(-0.3, 0.3)
    wall_n = np.array([np.sin(tilt), 0.0, np.cos(tilt)])
    hits = [(_plane(d, wall_n, wall_z), np.broadcast_to(-wall_n, d.shape), 0),
            (_plane(d, np.array([0.0, 1.0, 0.0]), -cam_height), np.broadcast_to([0.0, 1.0, 0.0], d.shape), 1)]
    for _ in range(rng.integers(2, 6)):
        z, x = rng.uniform(3.0, 9.0), rng.uniform(-0.45, 0.45)
        if rng.random() < 0.5:
            r = rng.uniform(0.4, 1.1)
            t, n = _sphere(d, np.array([x * z, -cam_height + r, z]), r)
            hits.append((t, n, 2))
        else:
            half = rng.uniform(0.3, 0.9, size=3)
            t, n = _box(d, np.array([x * z, -cam_height + half[1], z]), half, rng.uniform(0, np.pi / 2))
            hits.append((t, n, 3))
    t_all = np.stack([h[0] for h in hits])  # (S, H, W)
    nearest = t_all.argmin(0)
    depth = np.take_along_axis(t_all, nearest[None], 0)[0]
    labels = np.array([h[2] for h in hits], dtype=np.uint8)[nearest]
    normals = np.stack([h[1] for h in hits])  # (S, H, W, 3)
    normal = np.take_along_axis(normals, nearest[None, ..., None], 0)[0]
    points = d * depth[..., None]
    light = rng.normal(size=3) * np.array([1.0, 0.5, 0.5]) + np.array([0.0, 1.0, -1.0])
    light /= np.linalg.norm(light)
    shade = 0.35 + 0.65 * np.clip(normal @ light, 0.0, 1.0)
    image = np.zeros(d.shape)
    for s in range(len(hits)):  # each surface its own texture
        sel = nearest == s
        if sel.any():
            image[sel] = _texture(rng, points[sel])
    image = image * shade[..., None] + rng.normal(0, 0.02, size=image.shape)
    image = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    return image, depth.astype(np.float32), labels


def render_scenes(count: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` scenes, scene i from seed (seed, i): images (N, H, W, 3) uint8, depth (N, H, W), labels (N, H,
    W)."""
    scenes = [render_scene((seed, i), size) for i in range(count)]
    return tuple(np.stack(parts) for parts in zip(*scenes, strict=False))  # type: ignore[return-value]
