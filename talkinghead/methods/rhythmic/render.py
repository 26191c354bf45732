"""Rhythmic Head's 3D-aware inputs: a textured face mesh of one reference frame re-rendered under
each target head pose (the paper's projected image y~_t, Sec. 3.3), the motion matcher that picks
the reference frame whose head motion is nearest to the target's (the background source), and
the 1-channel landmark edge map that serves as the label (the official face dataset's drawing).

What differs from the paper / the official code
-----------------------------------------------
* Mesh. The paper fits a dense PRNet mesh (~40k vertices, UV position map) to the most frontal
  reference and renders it with its own textured renderer. PRNet (TensorFlow, plus its weights)
  is not used here. Instead the mesh is built from the reference's 68 landmarks: a fixed
  Delaunay triangulation (computed once on the frontal canonical layout of
  `faces.face_template()`) over the 68 points plus 47 extra points -- 15 "upper face" points
  that mirror jaw points 1-15 about the line through jaw points 0 and 16 at 2/3 of the distance
  (the official label's synthetic upper face), so the mesh reaches the forehead / hair line, and
  a border ring of 32 points (the closed jaw + forehead contour pushed outwards by 20 %), so the
  rendered face covers the head's outline, a little hair, the ears' start and the top of the neck,
  not only the inside of the jaw line. Triangles outside the border ring are dropped. Faces are
  flat-shaded geometry (piecewise-affine texture mapping), so the nose, cheeks and chin are
  coarse planes: large rotations show facets that the dense PRNet mesh would not.
* Depth. Every vertex is lifted to 3D by the canonical template's depth: a landmark's 3D
  position in the reference camera frame is its 2D position (x, y) plus z = s_ref (R_ref P_i)_z
  (P_i its template point, s_ref = reference_scale * exp(log scale) and R_ref the reference pose).
  The upper-face points take the depth of the jaw point they mirror plus a forward bulge
  0.15 (1 - (x / x_max)^2) IOD (a forehead is rounder than the jaw line); the border ring lies
  0.3 IOD behind the contour point it extends (the head curves away from the camera there).
  The extra points' 2D positions in the reference are their template positions projected with the
  reference pose plus the reference's landmark residual (landmark - projected template point) of
  the jaw and brow points, averaged with Gaussian weights (sigma 0.35 IOD) over the canonical
  distance, so they follow the identity's face outline.
* Re-posing. canonical = R_ref^-1 ((x, y, z) - (t_ref, 0)) / s_ref, target = s_t R_t canonical +
  (t_t, 0), weak perspective exactly as `faces.project` (x = s (R p)_xy + t). Rendering with the
  reference's own pose maps every vertex back onto its own texture coordinate, so it reproduces
  the reference image inside the mask (exactly up to float rounding when the output size equals
  the reference's).
* Texture comes from the reference frame only (no texture completion: parts hidden in the
  reference -- the far cheek of a slightly turned reference, the inside of a closed mouth -- are
  stretched from what the reference shows). PRNet's renderer has the same limitation; its texture
  is sampled from the same single frame. A triangle folded over in the reference (e.g. the far
  border of a turned reference) is drawn only while it stays folded, i.e. it is hidden once the
  target turns it towards the camera: there is no texture for it. Use the most frontal reference.
* Visibility. A z-buffer (z towards the camera, the nearest triangle wins, ties go to the higher
  triangle index) plus back-face culling: a triangle is drawn only where its projected orientation
  equals its orientation in the reference (so a triangle turned away from the camera disappears),
  and triangles degenerate in the reference (no texture) are never drawn. No lighting, no
  anti-aliasing at the silhouette: the mask is binary (pixel centre inside a drawn triangle).
* Output. images (T, 3, S, S) in [-1, 1], exactly 0 outside the mask, masks (T, 1, S, S) in
  {0, 1}. The output frame is the reference frame resampled to S x S (poses are given in the
  reference frame's pixels; pixel centres at integer coordinates, so x_out = (x + 0.5) S / W - 0.5).
* Motion matcher. The official data loader (`get_warp_ref`) compares only the rotation vectors
  (mean absolute difference of the 3 components, translation ignored) and, in the released code,
  picks the *largest* difference at training time with probability `worst_ref_prob` and at test
  time too (an `argmin` is commented out). Here: the paper's nearest head motion, measured as the
  RMS displacement of the projected template landmarks between the two poses in units of the
  target's inter-ocular distance, so rotation, translation and scale are weighed by how far they
  move the face in the image (a 0.1 rad turn moves points at 1 IOD from the centre by ~0.1 IOD, as
  a 0.1 IOD shift does). `translation_weight` scales the translation (centroid) part.
* Edge map. The official FaceForeDataset (few-shot-vid2vid's face dataset) draws, on a black
  uint8 canvas, the parts: jaw 0-16 + synthetic upper face (jaw points 1-15 mirrored about the
  line y = (y_0 + y_16) / 2 at 2/3 of the distance, reversed) closed back to point 0; brows 17-21
  and 22-26; nose [28, 31], 31-35, [35, 28]; eyes as two 4-point arcs each (36-39, 39-41+36; 42-45,
  45-47+42); outer lips 48-54, 54-59+48; inner lips 60-64, 64-67+60. Each part is cut into
  3-point pieces (stride 2), each piece is a parabola through its points fitted along the axis of
  larger extent, stamped with 2x2 pixel blocks (bw = 1, so strokes 2 px wide), value 255, no
  background; the crop is then bilinearly resized to 256 and `ToTensor` gives [0, 1] (no
  [-1, 1] normalisation for labels). Here: the same parts, pieces and parabolas, drawn at the
  output size with cv2 at 4x supersampling as strokes of `thickness` px (default 2) and area-
  averaged down, so the label is anti-aliased in [0, 1] instead of resized binary; the official
  upper face uses integer pixel arithmetic (we keep sub-pixel positions), and a piece whose
  parabola is too curved (|a| > 1 px^-1) or degenerate, which the official code skips, is drawn
  here as the straight polyline through its points.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.path import Path as PolygonPath
from scipy.spatial import Delaunay

from talkinghead.data import faces

NUM_LANDMARKS = 68
UPPER_FACE_RATIO = 2.0 / 3.0  # the official synthetic upper face: jaw mirrored at 2/3 the distance
FOREHEAD_BULGE = 0.15  # IOD, forward lift of the upper-face points at the centre line
BORDER_EXPAND = 1.2  # border ring = contour pushed out by 20 % from its centre
BORDER_DEPTH = 0.3  # IOD the border ring lies behind the contour point it extends
RESIDUAL_SIGMA = 0.35  # IOD, Gaussian weights of the landmark residuals carried to the extra points
RESIDUAL_SOURCES = np.arange(0, 27)  # jaw and brows: the rigid outline points
_DEGENERATE_AREA = 1e-3  # px^2 (twice the signed area): a reference triangle this small has no texture
_INSIDE_EPS = 1e-5  # barycentric slack so that neighbouring triangles share their edge pixels


# ---------------------------------------------------------------------------------------------
# Mesh topology (fixed, from the canonical template)
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _canonical_mesh() -> tuple[np.ndarray, np.ndarray]:
    """(vertices (N, 3) canonical, triangles (F, 3)): N = 68 landmarks + 15 upper-face + 32 border
    points; triangles oriented with positive signed area in the frontal layout (x right, y down)."""
    template = faces.face_template().astype(np.float64)
    jaw = template[:17]
    baseline = 0.5 * (jaw[0, 1] + jaw[16, 1])
    x_max = np.abs(jaw[:, 0]).max()
    src = np.arange(15, 0, -1)  # jaw 15..1: the upper face runs back from point 16 to point 0
    upper = jaw[src].copy()
    upper[:, 1] = baseline - (jaw[src, 1] - baseline) * UPPER_FACE_RATIO
    upper[:, 2] = jaw[src, 2] + FOREHEAD_BULGE * (1.0 - (upper[:, 0] / x_max) ** 2)
    contour = np.vstack([jaw, upper])  # closed outline: 0..16 then forehead back towards 0
    centre = np.array([0.0, contour[:, 1].mean()])
    border = contour.copy()
    border[:, :2] = centre + BORDER_EXPAND * (contour[:, :2] - centre)
    border[:, 2] = contour[:, 2] - BORDER_DEPTH
    vertices = np.vstack([template, upper, border])

    tri = Delaunay(vertices[:, :2]).simplices
    outline = PolygonPath(border[:, :2])
    keep = outline.contains_points(vertices[tri, :2].mean(1))
    tri = tri[keep]
    a, b, c = (vertices[tri[:, k], :2] for k in range(3))
    area2 = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    tri[area2 < 0] = tri[area2 < 0][:, [0, 2, 1]]
    tri = tri[np.lexsort(tri.T[::-1])]  # a fixed order, independent of qhull's
    return vertices.astype(np.float64), tri.astype(np.int64)


def mesh_triangles() -> torch.Tensor:
    """The fixed (F, 3) triangle index list over the 68 landmarks + 47 extra points."""
    return torch.from_numpy(_canonical_mesh()[1].copy())


def _rotations(poses: np.ndarray) -> np.ndarray:
    return np.stack([faces.rotation_matrix(p[:3]) for p in poses]) if len(poses) else np.zeros((0, 3, 3))


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _as_texture(image) -> torch.Tensor:
    """(3, H, W) float32 in [-1, 1] from an (H, W, 3) uint8 array or a (3, H, W) tensor in [-1, 1]
    (a uint8 tensor of either layout is rescaled too)."""
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
        if image.ndim == 3 and image.shape[-1] in (1, 3) and image.shape[0] not in (1, 3):
            image = image.permute(2, 0, 1)
    if image.dtype == torch.uint8:
        if image.shape[0] not in (1, 3):
            image = image.permute(2, 0, 1)
        image = image.float() / 127.5 - 1.0
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"reference image must be (3, H, W) or (H, W, 3), got {tuple(image.shape)}")
    return image.float().contiguous()


# ---------------------------------------------------------------------------------------------
# The reference mesh
# ---------------------------------------------------------------------------------------------


class FaceMesh:
    """Textured face mesh of one reference frame.

    landmarks: (68, 2) pixels in the reference image; pose: (6,) = rotation vector (rad), tx, ty
    (px), log scale, as `faces.estimate_head_pose` fits them (scale = reference_scale *
    exp(log scale)); image: the reference frame, (H, W, 3) uint8 or (3, H, W) in [-1, 1].

    Attributes: `canonical` (N, 3) vertices in the pose-free template frame (IOD 1), `uv` (N, 2)
    texture coordinates (reference pixels), `triangles` (F, 3), `facing` (F,) the sign of each
    triangle's projected area in the reference (0: degenerate, never drawn), `texture` (3, H, W).
    The first 68 vertices are the landmarks.
    """

    def __init__(self, landmarks, pose, image, reference_scale: float = faces.POSE_REFERENCE_IOD):
        landmarks = _as_numpy(landmarks).astype(np.float64)
        pose = _as_numpy(pose).astype(np.float64).reshape(6)
        if landmarks.shape != (NUM_LANDMARKS, 2):
            raise ValueError(f"landmarks must be (68, 2), got {landmarks.shape}")
        self.texture = _as_texture(image)
        self.reference_pose = pose
        self.reference_scale = float(reference_scale)
        vertices, triangles = _canonical_mesh()
        rot = faces.rotation_matrix(pose[:3])
        scale = reference_scale * np.exp(pose[5])
        posed = scale * vertices @ rot.T  # template points in the reference camera frame, minus t
        projected = posed[:, :2] + pose[3:5]
        # extra points follow the identity's outline: landmark residuals spread by Gaussian weights
        residual = landmarks[RESIDUAL_SOURCES] - projected[RESIDUAL_SOURCES]
        extra = vertices[NUM_LANDMARKS:, :2]
        d2 = ((extra[:, None] - vertices[RESIDUAL_SOURCES][None, :, :2]) ** 2).sum(-1)
        w = np.exp(-0.5 * d2 / RESIDUAL_SIGMA**2)
        extra_residual = (w @ residual) / np.maximum(w.sum(1, keepdims=True), 1e-12)
        xy = np.vstack([landmarks, projected[NUM_LANDMARKS:] + extra_residual])
        camera = np.column_stack([xy - pose[3:5], posed[:, 2]])  # 3D, reference camera frame
        canonical = camera @ rot / scale  # R^-1 (p - t) / s  (row vectors: p R = (R^T p^T)^T)
        a, b, c = (xy[triangles[:, k]] for k in range(3))
        area2 = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
        facing = np.where(np.abs(area2) > _DEGENERATE_AREA, np.sign(area2), 0.0)
        self.canonical = torch.from_numpy(canonical)  # float64: re-posing stays exact
        self.uv = torch.from_numpy(xy).float()
        self.triangles = torch.from_numpy(triangles.copy())
        self.facing = torch.from_numpy(facing).float()

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the reference frame, the pixel frame that poses refer to."""
        return int(self.texture.shape[1]), int(self.texture.shape[2])

    def posed_vertices(self, poses) -> torch.Tensor:
        """(T, N, 3) vertices under (T, 6) poses in reference-frame pixels: x, y image, z to camera."""
        poses = _as_numpy(poses).astype(np.float64).reshape(-1, 6)
        rot = torch.from_numpy(_rotations(poses))
        scale = torch.from_numpy(self.reference_scale * np.exp(poses[:, 5]))
        out = scale[:, None, None] * torch.einsum("nj,tij->tni", self.canonical, rot)
        out[..., :2] += torch.from_numpy(poses[:, None, 3:5])
        return out.float()

    def reposed_landmarks(self, poses) -> torch.Tensor:
        """(T, 68, 2): the reference's landmarks moved with the mesh to each pose (reference-frame
        pixels); e.g. the landmarks of the rendered image, for its edge-map label."""
        return self.posed_vertices(poses)[:, :NUM_LANDMARKS, :2]


# ---------------------------------------------------------------------------------------------
# Rasteriser
# ---------------------------------------------------------------------------------------------


def _barycentric_planes(screen: torch.Tensor, triangles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame and triangle, the affine maps (x, y, 1) -> barycentric weights: (T, F, 3, 3)
    rows (a_k, b_k, c_k) so that lambda_k = a_k x + b_k y + c_k; and twice the signed area (T, F)."""
    v = screen[:, triangles]  # (T, F, 3, 2)
    x0, y0 = v[..., 0, 0], v[..., 0, 1]
    x1, y1 = v[..., 1, 0], v[..., 1, 1]
    x2, y2 = v[..., 2, 0], v[..., 2, 1]
    area2 = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    safe = torch.where(area2.abs() > 1e-12, area2, torch.ones_like(area2))
    rows = torch.stack([
        torch.stack([y1 - y2, x2 - x1, x1 * y2 - x2 * y1], -1),
        torch.stack([y2 - y0, x0 - x2, x2 * y0 - x0 * y2], -1),
        torch.stack([y0 - y1, x1 - x0, x0 * y1 - x1 * y0], -1),
    ], -2)
    return rows / safe[..., None, None], area2


#: Window pixels evaluated per chunk of (frame, triangle) pairs in `rasterize` (memory ~ 100 bytes each).
_RASTER_CHUNK = 1 << 18


def rasterize(vertices: torch.Tensor, triangles: torch.Tensor, size: int | tuple[int, int],
              facing: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-buffered rasterisation of one triangle list in T poses.

    vertices: (T, N, 3) in output pixel units (pixel centres at integers; z towards the camera,
    the largest z wins); triangles: (F, 3); size: S or (H, W); facing: (F,) reference orientation
    signs -- a triangle is drawn in frame t only where sign(signed area) == facing (0: never);
    None draws both orientations. Returns the winning triangle per pixel (T, H, W) long (-1:
    none) and its barycentric weights (T, H, W, 3) (0 where none).
    """
    height, width = (size, size) if isinstance(size, int) else size
    vertices = vertices.double()
    num_frames, num_tris = vertices.shape[0], triangles.shape[0]
    planes, area2 = _barycentric_planes(vertices[..., :2], triangles)  # (T, F, 3, 3), (T, F)
    z = vertices[..., 2][:, triangles]  # (T, F, 3)
    depth_plane = (planes * z[..., None]).sum(-2)  # (T, F, 3): z = dA x + dB y + dC
    if facing is None:
        drawable = area2.abs() > 1e-12
    else:
        drawable = (torch.sign(area2) * facing[None].double() > 0) & (area2.abs() > 1e-12)
    xy = vertices[..., :2][:, triangles]  # (T, F, 3, 2)
    lo = torch.ceil(xy.amin(2) - _INSIDE_EPS)  # first pixel centre that can be inside
    hi = torch.floor(xy.amax(2) + _INSIDE_EPS)
    limit = torch.tensor([width - 1, height - 1], dtype=lo.dtype)
    drawable &= (hi >= 0).all(-1) & (lo <= limit).all(-1)
    lo = torch.maximum(lo, torch.zeros_like(lo))
    hi = torch.minimum(hi, limit)
    drawable &= (hi >= lo).all(-1)

    # z-buffer key: quantised depth (1/256 px) then triangle index; the (frame, triangle) pairs are
    # scanned in chunks of similar bounding-box size, each chunk over one padded window, and their
    # keys reduced with scatter-amax (order-free, so the result does not depend on the chunking)
    keys = torch.full((num_frames * height * width,), -1, dtype=torch.int64)
    tri_bits = max(1, int(num_tris).bit_length())
    depth_offset = 1 << 22  # depths of +-16k px stay positive after the offset (1/256 px steps)
    pair_t, pair_f = torch.nonzero(drawable, as_tuple=True)
    pair_lo, pair_hi = lo[pair_t, pair_f].long(), hi[pair_t, pair_f].long()
    extent = pair_hi - pair_lo + 1  # (P, 2) window width, height per pair
    order = torch.argsort(extent.prod(1), descending=True)
    start = 0
    while start < order.numel():
        count = max(1, _RASTER_CHUNK // int(extent[order[start]].prod()))
        chunk = order[start:start + count]
        start += count
        frames, tris, flo, fhi = pair_t[chunk], pair_f[chunk], pair_lo[chunk], pair_hi[chunk]
        ext = extent[chunk].amax(0)
        xs = flo[:, 0, None] + torch.arange(int(ext[0]))  # (n, w)
        ys = flo[:, 1, None] + torch.arange(int(ext[1]))  # (n, h)
        pl = planes[frames, tris]  # (n, 3, 3)
        xd, yd = xs.double()[:, None, None, :], ys.double()[:, None, :, None]
        lam = pl[:, :, 0, None, None] * xd + pl[:, :, 1, None, None] * yd + pl[:, :, 2, None, None]  # (n, 3, h, w)
        inside = (lam >= -_INSIDE_EPS).all(1) & (xs <= fhi[:, 0, None])[:, None, :] & (ys <= fhi[:, 1, None])[:, :, None]
        dp = depth_plane[frames, tris]
        depth = dp[:, 0, None, None] * xd[:, 0] + dp[:, 1, None, None] * yd[:, 0] + dp[:, 2, None, None]
        key = (torch.round(depth * 256.0).long() + depth_offset) << tri_bits | tris[:, None, None]
        pixel = (frames[:, None, None] * height + ys[:, :, None]) * width + xs[:, None, :]
        keys.scatter_reduce_(0, pixel[inside], key[inside], reduce="amax")

    keys = keys.view(num_frames, height, width)
    covered = keys >= 0
    tri_id = torch.where(covered, keys & ((1 << tri_bits) - 1), torch.full_like(keys, -1))
    bary = torch.zeros(num_frames, height, width, 3, dtype=torch.float64)
    t_idx, y_idx, x_idx = torch.nonzero(covered, as_tuple=True)
    pl = planes[t_idx, tri_id[t_idx, y_idx, x_idx]]  # (M, 3, 3)
    bary[t_idx, y_idx, x_idx] = pl[..., 0] * x_idx[:, None].double() + pl[..., 1] * y_idx[:, None].double() + pl[..., 2]
    return tri_id, bary.float()


def _to_output_pixels(points: torch.Tensor, frame_size: tuple[int, int], size: int) -> torch.Tensor:
    """Reference-frame pixel coordinates -> output (size x size) pixel coordinates (centres at integers);
    z scaled with x."""
    height, width = frame_size
    out = points.clone()
    out[..., 0] = (points[..., 0] + 0.5) * (size / width) - 0.5
    out[..., 1] = (points[..., 1] + 0.5) * (size / height) - 0.5
    if points.shape[-1] > 2:
        out[..., 2] = points[..., 2] * (size / width)
    return out


@torch.no_grad()
def render_reposed(mesh: FaceMesh, poses, size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Render the reference mesh under each of (T, 6) poses (reference-frame pixels, the store's
    pose convention) at size x size. Returns images (T, 3, S, S) in [-1, 1] (0 outside the mask)
    and masks (T, 1, S, S) in {0, 1}."""
    vertices = _to_output_pixels(mesh.posed_vertices(poses).double(), mesh.frame_size, size)
    tri_id, bary = rasterize(vertices, mesh.triangles, size, mesh.facing)
    num_frames = vertices.shape[0]
    covered = tri_id >= 0
    images = torch.zeros(num_frames, 3, size, size)
    t_idx, y_idx, x_idx = torch.nonzero(covered, as_tuple=True)
    if t_idx.numel():
        corner_uv = mesh.uv[mesh.triangles[tri_id[t_idx, y_idx, x_idx]]]  # (M, 3, 2) reference px
        uv = (bary[t_idx, y_idx, x_idx, :, None] * corner_uv).sum(1)
        height, width = mesh.frame_size
        grid = torch.stack([(2 * uv[:, 0] + 1) / width - 1, (2 * uv[:, 1] + 1) / height - 1], -1)
        colours = F.grid_sample(mesh.texture[None], grid[None, :, None], mode="bilinear",
                                padding_mode="border", align_corners=False)[0, :, :, 0]  # (3, M)
        images[t_idx, :, y_idx, x_idx] = colours.T
    return images, covered[:, None].float()


# ---------------------------------------------------------------------------------------------
# Motion matcher
# ---------------------------------------------------------------------------------------------


def motion_distances(reference_poses, target_poses, translation_weight: float = 1.0,
                     reference_scale: float = faces.POSE_REFERENCE_IOD) -> torch.Tensor:
    """(T, K) head-motion distance between each target and each reference pose.

    The RMS displacement of the 68 projected template landmarks (`faces.project`) between the two
    poses, in units of the target's inter-ocular distance, split into the shape part (rotation and
    scale about the template centroid) and the centroid part (translation), the latter weighted by
    `translation_weight` (1: exactly the projected-landmark RMS distance; 0: rotation and scale only).
    """
    ref = _as_numpy(reference_poses).astype(np.float64).reshape(-1, 6)
    tgt = _as_numpy(target_poses).astype(np.float64).reshape(-1, 6)
    template = faces.face_template().astype(np.float64)
    centre = template.mean(0)
    centred = template - centre

    def parts(poses):
        rot = _rotations(poses)
        scale = reference_scale * np.exp(poses[:, 5])
        shape = scale[:, None, None] * np.einsum("nj,tij->tni", centred, rot)[..., :2]  # (P, 68, 2)
        centroid = scale[:, None] * (rot @ centre)[:, :2] + poses[:, 3:5]  # (P, 2)
        return shape, centroid, scale

    ref_shape, ref_centroid, _ = parts(ref)
    tgt_shape, tgt_centroid, tgt_scale = parts(tgt)
    shape_d2 = ((tgt_shape[:, None] - ref_shape[None]) ** 2).sum(-1).mean(-1)  # (T, K)
    centroid_d2 = ((tgt_centroid[:, None] - ref_centroid[None]) ** 2).sum(-1)
    dist = np.sqrt(shape_d2 + translation_weight**2 * centroid_d2) / tgt_scale[:, None]
    return torch.from_numpy(dist).float()


def motion_matcher(reference_poses, target_poses, translation_weight: float = 1.0,
                   reference_scale: float = faces.POSE_REFERENCE_IOD) -> torch.Tensor:
    """For each of (T, 6) target poses, the index (T,) long of the nearest of (K, 6) reference poses
    by `motion_distances` (ties: the lowest index) -- the paper's motion matcher choosing the
    reference whose background / head placement is warped for the target."""
    dist = motion_distances(reference_poses, target_poses, translation_weight, reference_scale)
    return torch.from_numpy(np.argmin(dist.numpy(), axis=1)).long()


# ---------------------------------------------------------------------------------------------
# Landmark edge map (the label)
# ---------------------------------------------------------------------------------------------

UPPER_FACE = list(range(68, 83))  # indices of the synthetic upper-face points appended to the 68
FACE_PARTS = [  # the official FaceForeDataset part lists (with the upper face)
    [list(range(0, 17)) + UPPER_FACE + [0]],  # face outline, closed through the upper face
    [list(range(17, 22))],  # brow
    [list(range(22, 27))],  # brow
    [[28, 31], list(range(31, 36)), [35, 28]],  # nose
    [[36, 37, 38, 39], [39, 40, 41, 36]],  # eye
    [[42, 43, 44, 45], [45, 46, 47, 42]],  # eye
    [list(range(48, 55)), [54, 55, 56, 57, 58, 59, 48], list(range(60, 65)), [64, 65, 66, 67, 60]],  # lips
]
FACE_PARTS_NO_UPPER = [[list(range(0, 17))]] + FACE_PARTS[1:]
EDGE_SUPERSAMPLE = 4


def upper_face_points(landmarks: np.ndarray) -> np.ndarray:
    """(..., 15, 2) synthetic upper face: jaw points 15..1 mirrored about the line through the mean
    height of jaw points 0 and 16, at 2/3 of their distance (the official convention)."""
    jaw = landmarks[..., :17, :]
    baseline = 0.5 * (jaw[..., 0, 1] + jaw[..., 16, 1])
    upper = jaw[..., 15:0:-1, :].copy()
    upper[..., 1] = baseline[..., None] - (upper[..., 1] - baseline[..., None]) * UPPER_FACE_RATIO
    return upper


def _piece_curve(points: np.ndarray) -> np.ndarray:
    """Dense samples of the official piece curve: a parabola (2 points: a line) through the points,
    as a function of the coordinate with the larger consecutive extent, from the first to the last
    point; the straight polyline where the fit is degenerate or too curved (|a| > 1 px^-1).

    The 2 or 3 points fix the curve exactly (the official least-squares fit interpolates them), so it
    is evaluated in Newton's divided-difference form."""
    if len(points) < 2:
        return points
    steps = np.abs(np.diff(points, axis=0)).max(0)
    major = 0 if steps[0] >= steps[1] else 1
    u, v = points[:, major], points[:, 1 - major]
    rounded = np.round(u, 6)
    if u.max() - u.min() < 1e-6 or len(set(rounded.tolist())) < len(u):
        return points
    slope = (v[1] - v[0]) / (u[1] - u[0])
    curvature = 0.0
    if len(points) >= 3:
        curvature = ((v[2] - v[1]) / (u[2] - u[1]) - slope) / (u[2] - u[0])
        if abs(curvature) > 1:
            return points
    n = max(2, int(np.ceil(abs(u[-1] - u[0]))) * 2 + 1)
    su = np.linspace(u[0], u[-1], n)
    sv = v[0] + (su - u[0]) * (slope + curvature * (su - u[1]))
    out = np.empty((n, 2))
    out[:, major], out[:, 1 - major] = su, sv
    return out


def _draw_edges(points: np.ndarray, size: int, thickness: float, parts) -> np.ndarray:
    """One (size, size) float32 edge map in [0, 1]: the piece curves drawn as 1 px skeletons at
    EDGE_SUPERSAMPLE x resolution, every supersample within thickness / 2 of a skeleton set, then
    area-averaged down (only the window around the curves is processed)."""
    f, shift = EDGE_SUPERSAMPLE, 4
    curves = []
    for part in parts:
        for edge in part:
            edge = list(edge)
            for i in range(0, max(1, len(edge) - 1), 2):  # 3-point pieces, stride 2 (official edge_len 3)
                curves.append(_piece_curve(points[edge[i:i + 3]]))
    out = np.zeros((size, size), np.float32)
    allpts = np.concatenate(curves)
    margin = int(np.ceil(0.5 * thickness)) + 2
    x0, y0 = np.clip(np.floor(allpts.min(0)).astype(int) - margin, 0, size)
    x1, y1 = np.clip(np.ceil(allpts.max(0)).astype(int) + margin + 1, 0, size)
    if x1 <= x0 or y1 <= y0:
        return out
    skeleton = np.full(((y1 - y0) * f, (x1 - x0) * f), 255, np.uint8)
    offset = np.array([x0, y0], np.float64)
    for curve in curves:
        hi_pts = ((curve - offset + 0.5) * f - 0.5) * (1 << shift)
        cv2.polylines(skeleton, [np.round(hi_pts).astype(np.int32)], False, 0, 1, cv2.LINE_8, shift)
    dist = cv2.distanceTransform(skeleton, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)  # to the nearest stroke centre
    stroke = (dist <= 0.5 * thickness * f).astype(np.float32)
    out[y0:y1, x0:x1] = cv2.resize(stroke, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return out


def landmark_edge_map(landmarks, size: int = 256, thickness: float = 2.0, upper_face: bool = True,
                      source_size: float | None = None) -> torch.Tensor:
    """The 1-channel label: (..., 68, 2) landmarks -> (..., 1, S, S) float32 edge maps in [0, 1].

    Landmarks are pixels of an S x S image, or of a `source_size` one (rescaled, pixel centres at
    integers). Strokes of `thickness` px (the official bw = 1 stamps 2 px) over the official part
    lists, with the synthetic upper face unless `upper_face=False`; background 0.
    """
    pts = _as_numpy(landmarks).astype(np.float64)
    if pts.shape[-2:] != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must be (..., 68, 2), got {pts.shape}")
    lead = pts.shape[:-2]
    pts = pts.reshape(-1, NUM_LANDMARKS, 2)
    if source_size is not None:
        pts = (pts + 0.5) * (size / source_size) - 0.5
    parts = FACE_PARTS if upper_face else FACE_PARTS_NO_UPPER
    if upper_face:
        pts = np.concatenate([pts, upper_face_points(pts)], axis=1)
    maps = np.stack([_draw_edges(p, size, thickness, parts) for p in pts]) if len(pts) else np.zeros((0, size, size), np.float32)
    return torch.from_numpy(maps).reshape(*lead, 1, size, size)
