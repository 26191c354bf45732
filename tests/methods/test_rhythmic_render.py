"""Rhythmic Head's 3D-aware inputs: landmark face mesh re-rendering, motion matcher, edge-map labels."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from talkinghead.data import faces
from talkinghead.methods.rhythmic.render import (
    FaceMesh, landmark_edge_map, mesh_triangles, motion_distances, motion_matcher, rasterize, render_reposed,
    upper_face_points,
)

IOD = faces.POSE_REFERENCE_IOD
SIZE = 224


@pytest.fixture(scope="module")
def synth_frame():
    """One SynthTalk frame (slightly turned head) with its exact landmarks and fitted pose."""
    from talkinghead.data.synthtalk import puppet

    renderer = puppet.Renderer(puppet.make_identity(0, 0, candidates=1))
    frame, landmarks = renderer.render(np.array([0.0, 0.05, 0.0, 112.0, 96.0, 0.0]), np.array([0.4, 0.5, 0.2]), 0.0, np.zeros(2))
    pose = faces.estimate_head_pose(landmarks[None])[0]
    return frame, landmarks, pose


def _procedural_texture(spots: dict[int, tuple[float, float, float]], landmarks: np.ndarray, radius: float = 3.0):
    """(3, S, S) smooth low-contrast texture in [-0.3, 0.3] with pure-colour disks at landmarks."""
    yy, xx = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
    image = torch.stack([0.3 * torch.sin(xx / 9), 0.3 * torch.cos(yy / 7), 0.3 * torch.sin((xx + yy) / 13)])
    for k, colour in spots.items():
        disk = (xx - float(landmarks[k, 0])) ** 2 + (yy - float(landmarks[k, 1])) ** 2 <= radius**2
        image[:, disk] = torch.tensor(colour)[:, None]
    return image


SPOTS = {30: (1.0, -1.0, -1.0), 36: (-1.0, 1.0, -1.0), 45: (-1.0, -1.0, 1.0), 48: (1.0, 1.0, -1.0),
         54: (1.0, -1.0, 1.0), 8: (-1.0, 1.0, 1.0)}


def _spot_centroid(image: torch.Tensor, colour) -> torch.Tensor | None:
    close = (image - torch.tensor(colour)[:, None, None]).abs().amax(0) < 0.5
    if close.sum() == 0:
        return None
    ys, xs = torch.nonzero(close, as_tuple=True)
    return torch.stack([xs.float().mean(), ys.float().mean()])


def test_reference_pose_reproduces_reference(synth_frame):
    frame, landmarks, pose = synth_frame
    mesh = FaceMesh(landmarks, pose, frame)
    reference = torch.from_numpy(frame).permute(2, 0, 1).float() / 127.5 - 1
    image, mask = render_reposed(mesh, pose[None], SIZE)
    assert image.shape == (1, 3, SIZE, SIZE) and mask.shape == (1, 1, SIZE, SIZE)
    inside = mask[0, 0] > 0
    error = (image[0] - reference).abs()[:, inside]
    assert error.mean() < 1e-3 and error.max() < 1e-2
    assert (image[0][:, ~inside] == 0).all()
    # the mask covers the face and the forehead above the brows, not the image corners
    lm = np.round(landmarks).astype(int)
    assert inside[lm[:, 1], lm[:, 0]].all()
    forehead = np.round(upper_face_points(landmarks)[7]).astype(int)  # above the brows' centre
    assert inside[forehead[1] + 3, forehead[0]]
    assert not inside[0, 0] and not inside[-1, -1]
    # at another output size: the bilinearly resized reference
    image, mask = render_reposed(mesh, pose[None], 256)
    resized = F.interpolate(reference[None], size=(256, 256), mode="bilinear", align_corners=False)[0]
    inside = mask[0, 0] > 0
    assert inside.float().mean() > 0.2
    assert (image[0] - resized).abs()[:, inside].mean() < 1e-3
    # the mesh's landmarks at the reference pose are the reference's landmarks
    assert torch.allclose(mesh.reposed_landmarks(pose[None])[0], torch.from_numpy(landmarks), atol=1e-3)


def test_reposed_spots_land_where_project_says():
    template = faces.face_template()
    ref_pose = np.array([0.02, -0.03, 0.01, 110.0, 105.0, 0.0])
    landmarks = faces.project(template, ref_pose, IOD)
    mesh = FaceMesh(landmarks, ref_pose, _procedural_texture(SPOTS, landmarks))
    targets = np.array([
        [0.05, 0.45, 0.0, 118.0, 100.0, 0.1],  # turned one way, shifted, larger
        [-0.2, -0.4, 0.1, 100.0, 112.0, -0.1],  # pitched, turned the other way, rolled, smaller
    ])
    expected = np.stack([faces.project(template, p, IOD) for p in targets])
    assert torch.allclose(mesh.reposed_landmarks(targets), torch.from_numpy(expected).float(), atol=1e-3)
    images, _ = render_reposed(mesh, targets, SIZE)
    for t in range(len(targets)):
        for k, colour in SPOTS.items():
            centroid = _spot_centroid(images[t], colour)
            assert centroid is not None, (t, k)
            target = torch.from_numpy(expected[t, k]).float()
            if k == 30:
                # the nose tip is on the nose's silhouette once turned: the far half of its disk lies on
                # triangles turned away / behind, so the visible centroid shifts by up to the radius;
                # the tip itself must still be on the visible spot
                close = (images[t] - torch.tensor(colour)[:, None, None]).abs().amax(0) < 0.5
                ys, xs = torch.nonzero(close, as_tuple=True)
                gap = torch.linalg.norm(torch.stack([xs, ys], 1).float() - target, dim=1).min()
                assert gap < 1.0 and torch.linalg.norm(centroid - target) < 3.0, (t, k, centroid, target)
            else:
                assert torch.linalg.norm(centroid - target) < 1.0, (t, k, centroid, target)


def test_yaw_shrinks_mask_and_hides_the_far_side(synth_frame):
    _, landmarks, pose = synth_frame
    mesh = FaceMesh(landmarks, pose, _procedural_texture({}, landmarks))
    yaws = np.array([0.0, 0.4, 0.8, 1.2])
    poses = np.repeat(pose[None], len(yaws), 0)
    poses[:, 1] = yaws
    _, masks = render_reposed(mesh, poses, SIZE)
    area = masks.sum((1, 2, 3))
    assert (area[1:] < area[:-1]).all(), area

    vertices = mesh.posed_vertices(poses)
    tri_id, _ = rasterize(vertices, mesh.triangles, SIZE, mesh.facing)
    tris = mesh.triangles
    xy = vertices[..., :2][:, tris]  # (T, F, 3, 2)
    area2 = (xy[..., 1, 0] - xy[..., 0, 0]) * (xy[..., 2, 1] - xy[..., 0, 1]) - \
        (xy[..., 2, 0] - xy[..., 0, 0]) * (xy[..., 1, 1] - xy[..., 0, 1])
    turned_away = area2 * mesh.facing < 0
    assert turned_away[-1].sum() >= 5 and turned_away[0].sum() == 0  # a strong turn hides triangles
    for t in range(len(yaws)):
        drawn = torch.unique(tri_id[t][tri_id[t] >= 0])
        assert not turned_away[t, drawn].any()

    # a spot on the far cheek's outer border disappears under the strong turn, the near one stays
    far = 2 if vertices[-1, 2, 2] < vertices[-1, 14, 2] else 14
    near = 16 - far
    spot_at = {k: 0.8 * landmarks[k] + 0.2 * landmarks[30] for k in (far, near)}  # on the cheek, inside the jaw
    spot_lm = landmarks.copy()
    spot_lm[far], spot_lm[near] = spot_at[far], spot_at[near]
    colours = {far: (1.0, -1.0, -1.0), near: (-1.0, -1.0, 1.0)}
    textured = FaceMesh(landmarks, pose, _procedural_texture(colours, spot_lm, radius=2.5))
    images, _ = render_reposed(textured, poses[[0, -1]], SIZE)
    assert _spot_centroid(images[0], colours[far]) is not None and _spot_centroid(images[0], colours[near]) is not None
    assert _spot_centroid(images[1], colours[far]) is None
    assert _spot_centroid(images[1], colours[near]) is not None


def test_rasterize_depth_test_keeps_the_nearest_triangle():
    # two overlapping triangles; the second is nearer in frame 0 and farther in frame 1
    base = torch.tensor([[2.0, 2.0], [28.0, 2.0], [2.0, 28.0]])
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]])
    verts = []
    for near_second in (True, False):
        z0, z1 = (0.0, 5.0) if near_second else (5.0, 0.0)
        verts.append(torch.cat([torch.cat([base, torch.full((3, 1), z0)], 1),
                                torch.cat([base + 4, torch.full((3, 1), z1)], 1)]))
    tri_id, bary = rasterize(torch.stack(verts), tri, 32)
    assert tri_id[0, 10, 10] == 1 and tri_id[1, 10, 10] == 0
    assert tri_id[0, 3, 3] == 0 and tri_id[0, 31, 31] == -1
    covered = tri_id >= 0
    assert torch.allclose(bary[covered].sum(-1), torch.ones(int(covered.sum())), atol=1e-4)
    # a facing sign culls the triangle whose orientation differs
    tri_id, _ = rasterize(torch.stack(verts), tri, 32, facing=torch.tensor([1.0, -1.0]))
    assert (tri_id[tri_id >= 0] == 0).all() or (tri_id[tri_id >= 0] == 1).all()


def test_render_is_batched_and_deterministic(synth_frame):
    frame, landmarks, pose = synth_frame
    mesh = FaceMesh(landmarks, pose, frame)
    poses = np.repeat(pose[None], 3, 0)
    poses[:, 0] += np.array([0.0, 0.15, -0.15])
    a, ma = render_reposed(mesh, poses, 128)
    b, mb = render_reposed(mesh, torch.from_numpy(poses), 128)
    assert torch.equal(a, b) and torch.equal(ma, mb)
    single, _ = render_reposed(mesh, poses[1:2], 128)
    assert torch.equal(single[0], a[1])
    assert a.min() >= -1 and a.max() <= 1
    assert mesh_triangles().shape[1] == 3 and len(mesh_triangles()) > 150


def test_motion_matcher_picks_the_nearest_head_motion():
    rng = np.random.default_rng(0)
    refs = np.column_stack([rng.normal(0, 0.25, (8, 3)), rng.normal(112, 15, (8, 2)), rng.normal(0, 0.1, 8)])
    targets = refs[[3, 0, 7, 5]] + np.column_stack([rng.normal(0, 0.01, (4, 3)), rng.normal(0, 1.0, (4, 2)), np.zeros(4)])
    assert motion_matcher(refs, targets).tolist() == [3, 0, 7, 5]
    assert motion_matcher(torch.from_numpy(refs), torch.from_numpy(targets)).dtype == torch.long

    # rotation vs translation: 0.1 rad yaw moves the face ~0.1 IOD, a 20 px shift moves it 0.4 IOD
    target = np.array([[0.0, 0.0, 0.0, 112.0, 112.0, 0.0]])
    turned = target + [0, 0.1, 0, 0, 0, 0]
    shifted = target + [0, 0, 0, 20.0, 0, 0]
    assert motion_matcher(np.vstack([shifted, turned]), target).item() == 1
    d = motion_distances(np.vstack([shifted, turned]), target)
    assert abs(d[0, 0].item() - 20.0 / IOD) < 1e-4
    # without translation, only the rotation / scale part counts
    assert motion_matcher(np.vstack([turned, shifted]), target, translation_weight=0.0).item() == 1


def test_landmark_edge_map_draws_the_face_parts(synth_frame):
    _, landmarks, _ = synth_frame
    edges = landmark_edge_map(landmarks, SIZE)
    assert edges.shape == (1, SIZE, SIZE) and edges.dtype == torch.float32
    assert edges.min() >= 0 and edges.max() == 1
    lm = np.round(landmarks).astype(int)
    drawn = [k for k in range(68) if k not in (27, 29, 30)]  # the official nose is 28-31-..-35-28
    assert (edges[0, lm[drawn, 1], lm[drawn, 0]] > 0).all()
    upper = np.round(upper_face_points(landmarks)).astype(int)
    assert (edges[0, upper[:, 1], upper[:, 0]] > 0).all()
    # far from every drawn point: background 0; strokes are thin
    assert edges[0, :5].sum() == 0 and edges[0, :, :5].sum() == 0
    yy, xx = np.mgrid[:SIZE, :SIZE]
    pts = np.vstack([landmarks, upper_face_points(landmarks)])
    near = np.zeros((SIZE, SIZE), bool)
    for x, y in pts:
        near |= (xx - x) ** 2 + (yy - y) ** 2 < 20**2
    assert edges[0][torch.from_numpy(~near)].sum() == 0
    assert 0.01 < (edges > 0).float().mean() < 0.08
    # without the upper face nothing is drawn above the brows
    plain = landmark_edge_map(landmarks, SIZE, upper_face=False)
    top = int(landmarks[17:27, 1].min()) - 3
    assert plain[0, :top].sum() == 0 and edges[0, :top].sum() > 0


def test_landmark_edge_map_batches_and_rescales(synth_frame):
    _, landmarks, _ = synth_frame
    batch = np.stack([landmarks, landmarks + [5.0, -3.0]])[None]  # (1, 2, 68, 2)
    edges = landmark_edge_map(batch, 256, source_size=SIZE)
    assert edges.shape == (1, 2, 1, 256, 256)
    scaled = (landmarks + 0.5) * (256 / SIZE) - 0.5
    assert torch.equal(edges[0, 0], landmark_edge_map(scaled, 256))
    thick = landmark_edge_map(landmarks, SIZE, thickness=4.0)
    assert thick.sum() > 1.5 * landmark_edge_map(landmarks, SIZE).sum()


def test_rasterize_does_not_depend_on_how_triangle_windows_are_chunked(synth_frame, monkeypatch):
    # rasterize scans (frame, triangle) pairs in chunks; one pair per chunk must give the same z-buffer
    from talkinghead.methods.rhythmic import render

    _, landmarks, pose = synth_frame
    mesh = FaceMesh(landmarks, pose, _procedural_texture({}, landmarks))
    poses = np.repeat(pose[None], 3, 0)
    poses[:, 1] += np.array([0.0, 0.5, -0.3])
    vertices = mesh.posed_vertices(poses)
    tri_id, bary = rasterize(vertices, mesh.triangles, SIZE, mesh.facing)
    monkeypatch.setattr(render, "_RASTER_CHUNK", 1)
    tri_one, bary_one = rasterize(vertices, mesh.triangles, SIZE, mesh.facing)
    assert (tri_id >= 0).sum() > 10000
    assert torch.equal(tri_id, tri_one) and torch.equal(bary, bary_one)


def test_piece_curve_is_the_official_polynomial_fit():
    # the official piece curve is np.polyfit of degree len - 1 through 2 or 3 points
    from talkinghead.methods.rhythmic.render import _piece_curve

    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(200):
        n = int(rng.integers(2, 4))
        points = np.cumsum(rng.uniform(0.5, 4.0, (n, 2)) * rng.choice([-1, 1], 2), axis=0)
        curve = _piece_curve(points)
        if curve is points:  # degenerate or too curved: the polyline itself
            continue
        major = 0 if np.abs(np.diff(points, axis=0)).max(0)[0] >= np.abs(np.diff(points, axis=0)).max(0)[1] else 1
        coeffs = np.polyfit(points[:, major], points[:, 1 - major], n - 1)
        np.testing.assert_allclose(curve[:, 1 - major], np.polyval(coeffs, curve[:, major]), atol=1e-9)
        np.testing.assert_allclose(curve[[0, -1]], points[[0, -1]], atol=1e-9)
        checked += 1
    assert checked > 150
