"""SynthTalk puppet: a real face photograph, re-shaped, re-coloured and animated per frame.

There is one real face photograph offline here (scikit-image's `astronaut`), so identities are made
from it. Each identity gets its own face shape (jaw, face length, eye spacing and size, nose,
mouth), skin tone, hair colour, optional mirror image, background and voice. A frame is rendered by
a thin-plate-spline warp that carries the photograph's dlib landmarks (plus head-outline points) to
the frame's ground-truth landmarks. The puppet's 3D landmark model is the canonical template of
`talkinghead.data.faces`, posed by a rotation, translation and scale, with mouth, blink, gaze and
emotion offsets, projected weak-perspective. The mouth interior (teeth, dark cavity) is painted
over the inner-lip polygon, because the photograph's own mouth shows a fixed smile.

Ground truth is exact by construction: the warp interpolates its control points, so the rendered
face's landmarks are the projected model points.

Coordinates: frame pixels (x right, y down) of a FRAME_SIZE square frame; model offsets in units of
the inter-ocular distance (IOD: distance between the eye centres).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from talkinghead.data import faces

FRAME_SIZE = 224
FRAME_IOD = 46.0  # inter-ocular distance (px) of the rest pose in the frame
FRAME_EYE_CENTRE = (112.0, 96.0)  # midpoint of the eyes at rest; the face is centred like VoxCeleb2
EMOTIONS = ("angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised")
CLOSED_GAP = 0.015  # inner-lip gap of a closed mouth, in IOD
BACKGROUND_IMAGES = ("brick", "grass", "gravel", "coffee", "rocket", "coins", "moon", "text", "page",
                     "hubble_deep_field", "retina", "chelsea")  # none shows a human face

# ---------------------------------------------------------------------------------------------
# The base photograph, once per process
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BasePhoto:
    image: np.ndarray  # (512, 512, 3) uint8 RGB
    landmarks: np.ndarray  # (68, 2) dlib landmarks in `image`
    person: np.ndarray  # (512, 512) float32 in [0, 1]: 1 on the person, 0 on the backdrop
    skin: np.ndarray  # (512, 512) float32 soft skin mask
    hair: np.ndarray  # (512, 512) float32 soft hair mask


@lru_cache(maxsize=1)
def base_photo() -> BasePhoto:
    """scikit-image's astronaut with its dlib landmarks and soft person / skin / hair masks."""
    import skimage.data

    image = skimage.data.astronaut()
    landmarks = faces.get_landmark_detector("dlib")(image)
    if landmarks is None:
        raise RuntimeError("dlib found no face in skimage.data.astronaut(); the dlib install is broken")
    landmarks = landmarks.astype(np.float64)
    # close the photo's open smile: inpaint the mouth opening with lip colour and move the inner
    # lips onto their midline (a hair-thin gap keeps the warp's control points distinct)
    mouth = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mouth, [np.round(landmarks[60:68]).astype(np.int32)], 255)
    mouth = cv2.dilate(mouth, np.ones((3, 3), np.uint8))
    image = cv2.inpaint(image, mouth, 4, cv2.INPAINT_TELEA)
    iod = _iod(landmarks)
    for up, lo in ((61, 67), (62, 66), (63, 65)):
        mid = 0.5 * (landmarks[up, 1] + landmarks[lo, 1])
        landmarks[up, 1], landmarks[lo, 1] = mid - CLOSED_GAP * iod / 2, mid + CLOSED_GAP * iod / 2
    h, w = image.shape[:2]
    # backdrop: a smooth light-grey studio background, flood-filled from the top corners and sides
    blurred = cv2.GaussianBlur(image, (5, 5), 0)
    fill = np.zeros((h + 2, w + 2), np.uint8)
    for seed in [(0, 0), (w - 1, 0), (0, h // 3), (w - 1, h // 3), (w // 2, 0)]:
        cv2.floodFill(blurred.copy(), fill, seed, (0, 0, 0), (4, 4, 4), (4, 4, 4),
                      cv2.FLOODFILL_MASK_ONLY | (255 << 8) | 8)
    backdrop = fill[1:-1, 1:-1] > 0
    backdrop = cv2.morphologyEx(backdrop.astype(np.uint8), cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    person = cv2.erode(1 - backdrop, np.ones((5, 5), np.uint8))
    person = cv2.GaussianBlur(person.astype(np.float32), (5, 5), 0)
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)

    def near_colour(points, tolerance):
        """Soft mask of pixels whose colour is close to the mean colour around `points`."""
        pts = np.round(points).astype(int)
        ref = np.concatenate([lab[y - 4:y + 5, x - 4:x + 5].reshape(-1, 3) for x, y in pts]).mean(0)
        dist = np.linalg.norm((lab - ref) * np.array([0.5, 1.0, 1.0]), axis=-1)
        return np.clip(1.5 - dist / tolerance, 0, 1)

    skin = near_colour([landmarks[[1, 2, 3, 31]].mean(0), landmarks[[13, 14, 15, 35]].mean(0),
                        landmarks[[19, 24]].mean(0) - [0, 0.3 * iod]], 12.0) * person
    skin = cv2.GaussianBlur(skin.astype(np.float32), (5, 5), 0)
    # hair: the colour of the crown and temples, above the jaw line
    centre_x = landmarks[27, 0]
    brow_y = landmarks[17:27, 1].min()
    hair_samples = [[centre_x, brow_y - 1.3 * iod], [centre_x - 0.9 * iod, brow_y - 1.0 * iod],
                    [centre_x + 0.9 * iod, brow_y - 1.0 * iod], [landmarks[0, 0] - 0.3 * iod, brow_y]]
    yy = np.arange(h)[:, None].repeat(w, 1)
    hair = near_colour(hair_samples, 30.0) * person * (yy < landmarks[8, 1] - 0.5 * iod) * (1 - skin)
    hair = cv2.GaussianBlur(hair.astype(np.float32), (7, 7), 0)
    return BasePhoto(image, landmarks.astype(np.float32), person, skin, hair)


# ---------------------------------------------------------------------------------------------
# Identities
# ---------------------------------------------------------------------------------------------


def _iod(landmarks: np.ndarray) -> float:
    """Inter-ocular distance of (68, 2) landmarks: between the means of 36-41 and 42-47."""
    return float(np.linalg.norm(landmarks[36:42].mean(0) - landmarks[42:48].mean(0)))


def _square_border(size: int, count: int) -> np.ndarray:
    """(M, 2) points, `count` per edge, evenly along the border of a size x size image (unique, sorted)."""
    edge = np.linspace(0, size - 1, count)
    low, high = np.zeros_like(edge), np.full_like(edge, size - 1)
    return np.unique(np.concatenate([np.stack([edge, low], 1), np.stack([edge, high], 1),
                                     np.stack([low, edge], 1), np.stack([high, edge], 1)]), axis=0)


@dataclass(frozen=True)
class DonorFace:
    """A second real face (matplotlib's `grace_hopper.jpg`) warped onto the base photo's landmarks.

    image: (512, 512, 3) float32 RGB in [0, 1] in the base photo's frame, its colour statistics inside
    the face matched to the base photo's (so blends have no seam; skin tone is set per identity later);
    regions: soft (512, 512) float32 masks in the base photo's frame: 'face' (inside jaw and brows),
    'eyes' (brows, eyes and the glasses around them), 'nose', 'mouth' (lips and chin).
    """

    image: np.ndarray
    regions: dict


DONOR_PHOTO = "grace_hopper.jpg"  # matplotlib sample data, always installed with matplotlib


def _region_masks(lm: np.ndarray, shape: tuple[int, int]) -> dict:
    """Soft face-region masks of a photo from its (68, 2) landmarks."""
    iod = _iod(lm)

    def soft(polygon, grow: float) -> np.ndarray:
        mask = np.zeros(shape, np.uint8)
        cv2.fillConvexPoly(mask, cv2.convexHull(np.round(polygon).astype(np.int32)), 255)
        k = max(1, int(round(abs(grow) * iod)))
        mask = (cv2.dilate if grow > 0 else cv2.erode)(mask, np.ones((k, k), np.uint8))
        return cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 0.1 * iod)

    brows_up = lm[17:27] - [0, 0.12 * iod]
    cheek_y = lm[29, 1]
    eyes = np.vstack([lm[[0]], brows_up, lm[[16]], [[lm[15, 0], cheek_y]], [[lm[1, 0], cheek_y]]])
    return {
        "face": soft(np.vstack([lm[0:17], brows_up]), -0.1),
        "eyes": soft(eyes, -0.05),
        "nose": soft(lm[27:36], 0.2),
        "mouth": soft(np.vstack([lm[48:60], lm[5:12]]), 0.05),
    }


@lru_cache(maxsize=1)
def donor_face() -> DonorFace:
    """Grace Hopper's portrait, warped by a thin-plate spline onto the base photo's landmarks."""
    from matplotlib import cbook

    path = cbook.get_sample_data(DONOR_PHOTO, asfileobj=False)
    donor = cv2.imread(str(path))
    if donor is None:
        raise RuntimeError(f"{path}: cannot read matplotlib's sample photo {DONOR_PHOTO}")
    donor = cv2.cvtColor(donor, cv2.COLOR_BGR2RGB)
    donor_lm = faces.get_landmark_detector("dlib")(donor)
    if donor_lm is None:
        raise RuntimeError(f"{path}: dlib found no face in {DONOR_PHOTO}; the dlib install is broken")
    photo = base_photo()
    base_lm = photo.landmarks.astype(np.float64)
    h, w = photo.image.shape[:2]
    # far-away anchors follow a least-squares affine map, so the spline stays tame off the face
    border = _square_border(w, 6)  # the photo is square
    affine, *_ = np.linalg.lstsq(np.c_[base_lm, np.ones(68)], donor_lm, rcond=None)
    dst = np.vstack([base_lm, border])
    src = np.vstack([donor_lm, np.c_[border, np.ones(len(border))] @ affine])
    step = 4
    g = np.arange(0, w + step, step, dtype=np.float64)
    gx, gy = np.meshgrid(g, g)
    coarse = tps_map(dst / w, src / w, np.stack([gx.ravel(), gy.ravel()], 1) / w) * w
    maps = cv2.resize(coarse.reshape(*gx.shape, 2).astype(np.float32), (len(g) * step, len(g) * step),
                      interpolation=cv2.INTER_LINEAR)[:h, :w]
    warped = cv2.remap(donor, maps, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    regions = _region_masks(base_lm, (h, w))
    # match the donor's Lab mean and spread inside the face to the base photo's
    face = regions["face"] > 0.5
    lab_d = cv2.cvtColor(warped, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab_b = cv2.cvtColor(photo.image, cv2.COLOR_RGB2LAB).astype(np.float32)
    mean_d, std_d = lab_d[face].mean(0), lab_d[face].std(0) + 1e-3
    mean_b, std_b = lab_b[face].mean(0), lab_b[face].std(0)
    lab_d = (lab_d - mean_d) * np.sqrt(std_b / std_d) + mean_b
    image = cv2.cvtColor(np.clip(lab_d, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB).astype(np.float32) / 255.0
    return DonorFace(image, regions)


# ---------------------------------------------------------------------------------------------
# Identities
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Everything that makes one SynthTalk person look and sound different.

    Looks: face shape (`shape`, see `identity_model`), a blend of the two real faces per region
    (`donor`: weight of the donor face in 'face', 'eyes', 'nose', 'mouth'), skin tone, wrinkles
    (`age`), eyebrows, facial hair, glasses, hair colour, iris colour, optional mirror image and
    background. All of it is painted into the texture before the landmark warp, so it moves with
    the face and the landmark ground truth stays exact.
    """

    index: int
    mirror: bool
    shape: dict  # face-shape factors (see `identity_model`)
    skin_shift: tuple[float, float, float]  # Lab shift of skin
    hair_lab: tuple[float, float, float]  # target hair colour (Lab, OpenCV 8-bit scale)
    iris_hue: float  # degrees
    background: str  # a skimage image name or 'gradient'
    background_seed: int
    voice_f0: float
    voice_formant_scale: float
    voice_rate: float
    motion_amplitude: float  # head-motion energy factor
    donor: dict = field(default_factory=dict)  # region -> weight in [0, 1] of the donor face
    age: float = 0.0  # strength of the donor's wrinkle detail (high-pass luminance) on the face
    brows: tuple[float, float] = (1.0, 0.0)  # eyebrow (thickness factor, darkening in [0, 1])
    facial_hair: str = "none"  # none, stubble, moustache, goatee, beard
    glasses: dict | None = None  # {'shape': round|square, 'width', 'height' (IOD), 'thickness' (IOD), 'rgb'}
    texture_seed: int = 0
    lipstick: tuple[float, float, float] | None = None  # lip colour (Lab, OpenCV 8-bit scale)


HAIR_COLOURS = [(40, 128, 132), (70, 135, 145), (150, 133, 160), (95, 150, 155), (175, 128, 128),
                (25, 128, 128), (120, 140, 165), (60, 128, 125)]  # black, brown, blonde, auburn, grey, ...
FACIAL_HAIR = ("stubble", "moustache", "goatee", "beard")
LIPSTICKS = [(110, 170, 150), (130, 160, 145), (90, 165, 140), (140, 150, 140), (80, 155, 135)]  # reds, pinks, browns
GLASSES_COLOURS = [(0.05, 0.05, 0.05), (0.35, 0.2, 0.1), (0.7, 0.7, 0.72), (0.55, 0.1, 0.1), (0.1, 0.15, 0.4)]


CODE_FACTORS = ("jaw_width", "cheek_width", "face_length", "eye_spacing", "eye_size", "eye_tilt", "nose_length",
                "nose_width", "mouth_width", "lip_thickness", "mouth_height", "brow_height", "chin", "head_width",
                "crown", "age")
SHAPE_RANGES = {  # (low, high) of each face-shape factor; multipliers, or offsets in IOD (radians for the tilt)
    "jaw_width": (0.82, 1.22), "cheek_width": (0.88, 1.14), "face_length": (0.9, 1.2), "eye_spacing": (0.88, 1.12),
    "eye_size": (0.9, 1.3), "eye_tilt": (-0.12, 0.12), "nose_length": (0.82, 1.22), "nose_width": (0.8, 1.35),
    "mouth_width": (0.82, 1.22), "lip_thickness": (0.6, 1.6), "mouth_height": (-0.08, 0.08),
    "brow_height": (-0.08, 0.1), "chin": (-0.1, 0.14), "head_width": (0.85, 1.15), "crown": (-0.12, 0.12),
}
AGE_RANGE = (0.0, 1.4)


def identity_code(index: int, seed: int) -> np.ndarray:
    """(16,) signs (+-1) saying on which side of its range each of `CODE_FACTORS` lies.

    Identities come in blocks of 16 that take the rows of a 16 x 16 Hadamard matrix (columns
    permuted and sign-flipped per block and seed), so any two identities of a block lie on opposite
    sides for exactly 8 of the 16 factors: no two of them are near each other by chance.
    """
    hadamard = np.array([[1]])
    while len(hadamard) < len(CODE_FACTORS):
        hadamard = np.block([[hadamard, hadamard], [hadamard, -hadamard]])
    block, row = divmod(int(index), len(hadamard))
    rng = np.random.default_rng([seed, block, 104729])
    order, flips = rng.permutation(len(hadamard)), rng.choice([-1, 1], len(hadamard))
    return (hadamard[rng.permutation(len(hadamard))[row]][order] * flips).astype(np.float64)


def _on_side(rng: np.random.Generator, sign: float, lo: float, hi: float, strength: float = 1.0) -> float:
    """A value on the side `sign` says (-1: low, +1: high) of [lo, hi]: in its outer half, or for
    strength < 1 that much closer to the middle."""
    mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    return float(mid + sign * strength * rng.uniform(0.5, 1.0) * half)


MAX_DRAWS = 30
SHAPE_STRENGTH = 0.8  # of the ranges below: wider shapes separate identities more but pull dlib's landmarks off (README)
IDENTITY_GROUP = 12  # identities chosen together: the default corpus has 4 groups of train identities, 1 of test
CANDIDATES = 48  # draws per identity that its group's identities are chosen from (README: identities)
SAME_PERSON_DISTANCE = 0.6  # dlib's threshold on its descriptor's Euclidean distance
CANDIDATE_MAX_LANDMARK_ERROR = 4.5  # px at 224: dlib's 68 landmarks against the truth, frontal at rest
REST_POSE = np.array([0.0, 0.0, 0.0, *FRAME_EYE_CENTRE, 0.0])
REST_MOUTH = np.array([0.0, 0.45, 0.0])


@lru_cache(maxsize=None)
def make_identity(index: int, seed: int = 0, candidates: int = CANDIDATES) -> Identity:
    """Identity `index` of the corpus made with `seed`: deterministic, visibly distinct.

    Shape factors multiply (or, for offsets, add to, in IOD) the base face's proportions; each lies
    in the outer half of a wide range, on the side `identity_code` gives. On top of that, the
    identities of a group of 12 are chosen together from `candidates` random draws each so that
    dlib's face descriptor (what CSIM uses) tells them apart (`choose_group`). `candidates=1` skips the
    choice: the first draw whose face dlib finds (frontal and at +-20 degrees yaw), drawn again
    with milder shapes otherwise. Everything is seeded, so the result is the same in every process.
    """
    if candidates <= 1:
        return first_detectable_draw(index, seed)
    return choose_group(index // IDENTITY_GROUP, seed, candidates)[index % IDENTITY_GROUP]


def first_detectable_draw(index: int, seed: int, first_draw: int = 0) -> Identity:
    """The first draw from `first_draw` on that dlib finds (`detectable`), each redraw with milder shapes."""
    for draw in range(first_draw, first_draw + MAX_DRAWS):
        identity = draw_identity(index, seed, draw, SHAPE_STRENGTH * 0.9 ** (draw - first_draw))
        if detectable(identity):
            return identity
    raise RuntimeError(f"SynthTalk identity {index} (seed {seed}): dlib found no face in {MAX_DRAWS} draws")


def _candidate_features(identity: Identity) -> tuple[np.ndarray, float]:
    """(frontal rest-pose render, error (px) of dlib's 68 landmarks against its truth; inf when no face)."""
    frame, truth = Renderer(identity).render(REST_POSE, REST_MOUTH, 0.0, (0.0, 0.0))
    points = faces.get_landmark_detector("dlib")(frame)
    return frame, (float("inf") if points is None else float(faces.landmark_error(points[None], truth[None])[0]))


@lru_cache(maxsize=None)
def choose_group(group: int, seed: int, candidates: int = CANDIDATES) -> tuple[Identity, ...]:
    """The identities of group `group` (indices 12 * group ... 12 * group + 11), each one of draws
    0 .. candidates - 1 (all at `SHAPE_STRENGTH`), chosen together by `choose_separated` on dlib's
    face descriptor of each draw's frontal rest-pose render.

    A draw is eligible when dlib finds its face frontal with its 68 landmarks within
    `CANDIDATE_MAX_LANDMARK_ERROR` of the truth, and reads it at other poses and expressions too
    (`dlib_reads`, checked on the chosen draws, which are chosen again when one fails): the
    preprocessing, the landmark metrics (LMD) and the factor estimators all read dlib's landmarks,
    and one face dlib misreads in some frames dominates a bench's mean LMD. An identity with no
    eligible draw takes `first_detectable_draw` from draw `candidates` on. About 70 s per group (48
    candidates) on two quiet cores.
    """
    indices = range(group * IDENTITY_GROUP, (group + 1) * IDENTITY_GROUP)
    pool = [[draw_identity(i, seed, k) for k in range(candidates)] for i in indices]
    features = faces.map_frames(_candidate_features, [c for row in pool for c in row])
    describe = faces.DlibFaceDescriptor()
    descriptors = np.full((len(indices), candidates, 128), np.nan)
    eligible = np.zeros((len(indices), candidates), dtype=bool)
    for flat, (frame, error) in enumerate(features):
        if error <= CANDIDATE_MAX_LANDMARK_ERROR:
            descriptor = describe(frame)
            if descriptor is not None:
                descriptors[divmod(flat, candidates)] = descriptor
                eligible[divmod(flat, candidates)] = True
    read_checked = np.zeros_like(eligible)
    while True:
        chosen = choose_separated(descriptors, eligible)
        failed = False
        for row, k in enumerate(chosen):
            if k >= 0 and not read_checked[row, k]:
                read_checked[row, k] = True
                if not dlib_reads(pool[row][k]):
                    eligible[row, k], failed = False, True
        if not failed:
            break
    return tuple(pool[row][k] if k >= 0 else first_detectable_draw(i, seed, candidates)
                 for row, (i, k) in enumerate(zip(indices, chosen)))


SEPARATION_RESTARTS = 16  # random starting choices of the coordinate ascent, besides each identity's first candidate


def _pair_score(distance: np.ndarray) -> np.ndarray:
    """Per descriptor distance: 1 above `SAME_PERSON_DISTANCE`, plus 0.1 x min(distance, that + 0.1) (ties)."""
    return (distance > SAME_PERSON_DISTANCE) + 0.1 * np.minimum(distance, SAME_PERSON_DISTANCE + 0.1)


def separation_score(picked: np.ndarray) -> float:
    """How well (N, D) descriptors, one per identity, are told apart: `_pair_score` summed over pairs."""
    distance = np.linalg.norm(picked[:, None] - picked[None], axis=-1)[np.triu_indices(len(picked), 1)]
    return float(_pair_score(distance).sum())


def choose_separated(descriptors: np.ndarray, eligible: np.ndarray, max_sweeps: int = 20,
                     restarts: int = SEPARATION_RESTARTS) -> list[int]:
    """One candidate per identity, so that as many pairs as possible are farther apart than
    `SAME_PERSON_DISTANCE` (and, second, pairs closer than 0.7 are pushed apart): `separation_score`.

    descriptors (N, K, D) face descriptors of K candidates of N identities; eligible (N, K) bool.
    Coordinate ascent: each identity in turn takes the candidate that scores best against the
    others' current choices, until a sweep changes nothing. It starts from each identity's first
    eligible candidate, and again from `restarts` random eligible choices (seeded: the result is
    deterministic); the best-scoring end wins (a single ascent stops in a local optimum: on the
    candidates of seeds 0 and 1, 88% and 92% of pairs above 0.6 against 94% with 16 restarts, simulated).
    Returns the chosen candidate per identity (-1 where none is eligible).
    """
    rng = np.random.default_rng(0)
    starts = [[int(np.argmax(row)) if row.any() else -1 for row in eligible]]
    starts += [[int(rng.choice(np.flatnonzero(row))) if row.any() else -1 for row in eligible] for _ in range(restarts)]
    best, best_score = starts[0], -np.inf
    for start in starts:
        chosen = _ascend(descriptors, eligible, start, max_sweeps)
        picked = np.array([descriptors[i, k] for i, k in enumerate(chosen) if k >= 0])
        score = separation_score(picked) if len(picked) > 1 else 0.0
        if score > best_score:
            best, best_score = chosen, score
    return best


def _ascend(descriptors: np.ndarray, eligible: np.ndarray, chosen: list[int], max_sweeps: int) -> list[int]:
    """`choose_separated`'s coordinate ascent from `chosen`."""
    n, chosen = len(descriptors), list(chosen)
    for _ in range(max_sweeps):
        changed = False
        for i in range(n):
            if chosen[i] < 0:
                continue
            others = [descriptors[j, chosen[j]] for j in range(n) if j != i and chosen[j] >= 0]
            if not others:
                continue
            distance = np.linalg.norm(descriptors[i][:, None] - np.stack(others)[None], axis=-1)
            score = np.where(eligible[i], _pair_score(distance).sum(1), -np.inf)
            best = int(np.argmax(score))
            if best != chosen[i]:
                chosen[i], changed = best, True
        if not changed:
            break
    return chosen


READ_CHECKS = (  # (rotation vector, mouth (open, width, round), blink, emotion, level): poses and expressions of speech
    ((0.0, 0.0, 0.0), (0.0, 0.45, 0.0), 0.0, "neutral", 1),
    ((0.0, 0.35, 0.0), (0.0, 0.45, 0.0), 0.0, "neutral", 1),
    ((0.0, -0.35, 0.0), (0.0, 0.45, 0.0), 0.0, "neutral", 1),
    ((-0.15, 0.15, 0.05), (0.5, 0.5, 0.1), 0.0, "neutral", 1),
    ((0.1, -0.15, -0.05), (0.35, 0.4, 0.4), 0.0, "surprised", 3),
    ((0.0, 0.1, 0.0), (0.4, 0.6, 0.0), 0.6, "happy", 3),
)
READ_MAX_LANDMARK_ERROR = 6.0  # px at 224: dlib's 68 landmarks against the truth in every READ_CHECKS render


def dlib_reads(identity: Identity) -> bool:
    """Whether dlib's landmark detector finds the identity's face and places its 68 landmarks within
    `READ_MAX_LANDMARK_ERROR` of the truth (mean) in each `READ_CHECKS` render: frontal at rest, +-20
    degrees yaw, an open mouth, a surprised and a happy face with half-closed eyes."""
    renderer = Renderer(identity)
    detector = faces.get_landmark_detector("dlib")
    for rotation, mouth, blink, emotion, level in READ_CHECKS:
        frame, truth = renderer.render(np.array([*rotation, *FRAME_EYE_CENTRE, 0.0]), np.array(mouth), blink,
                                       (0.0, 0.0), emotion, level)
        points = detector(frame)
        if points is None or faces.landmark_error(points[None], truth[None])[0] > READ_MAX_LANDMARK_ERROR:
            return False
    return True


DETECTION_CHECK_YAWS = (0.0, 0.35, -0.35)  # radians: frontal and about +-20 degrees


def detectable(identity: Identity) -> bool:
    """Whether dlib's landmark detector finds the identity's face at rest, frontal and at +-20 deg yaw
    (`first_detectable_draw`'s test, kept so that `candidates=1` gives the identities of before; the
    choice asks more: `dlib_reads`)."""
    renderer = Renderer(identity)
    detector = faces.get_landmark_detector("dlib")
    for yaw in DETECTION_CHECK_YAWS:
        frame, _ = renderer.render(np.array([0, yaw, 0, *FRAME_EYE_CENTRE, 0.0]), REST_MOUTH, 0, (0, 0))
        if detector(frame) is None:
            return False
    return True


def draw_identity(index: int, seed: int, draw: int = 0, strength: float = SHAPE_STRENGTH) -> Identity:
    """One random draw of identity `index` (see `make_identity`); `strength` scales the shape
    factors' distance from the middle of their ranges (the sides stay the code's)."""
    rng = np.random.default_rng([seed, index, 7919, draw])
    code = dict(zip(CODE_FACTORS, identity_code(index, seed)))
    male = rng.random() < 0.5
    shape = {name: _on_side(rng, code[name], lo, hi, strength) for name, (lo, hi) in SHAPE_RANGES.items()}
    donor = {region: float(rng.choice([0.0, rng.uniform(0.35, 1.0)])) for region in ("face", "eyes", "nose", "mouth")}
    glasses = None
    if donor["eyes"] == 0 and rng.random() < 0.4:  # the donor's eyes come with her own glasses
        glasses = {"shape": str(rng.choice(["round", "square"])), "width": float(rng.uniform(0.78, 0.95)),
                   "height": float(rng.uniform(0.42, 0.6)), "thickness": float(rng.uniform(0.04, 0.1)),
                   "rgb": GLASSES_COLOURS[int(rng.integers(len(GLASSES_COLOURS)))]}
    return Identity(
        index=index,
        mirror=bool(rng.random() < 0.5),
        shape=shape,
        skin_shift=(_on_side(rng, rng.choice([-1.0, 1.0]), -55, 12), float(rng.uniform(-4, 12)), float(rng.uniform(-8, 16))),
        hair_lab=HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))],
        iris_hue=float(rng.uniform(0, 360)),
        background=(BACKGROUND_IMAGES + ("gradient",) * 4)[int(rng.integers(len(BACKGROUND_IMAGES) + 4))],
        background_seed=int(rng.integers(2**31)),
        voice_f0=float(rng.uniform(90, 150) if male else rng.uniform(170, 240)),
        voice_formant_scale=float(rng.uniform(0.88, 1.02) if male else rng.uniform(1.05, 1.18)),
        voice_rate=float(rng.uniform(3.6, 5.2)),
        motion_amplitude=float(rng.uniform(0.6, 1.3)),
        donor=donor,
        age=_on_side(rng, code["age"], *AGE_RANGE),
        brows=(float(rng.uniform(1.0, 1.8) if male else rng.uniform(0.8, 1.3)), float(rng.uniform(0.0, 0.6))),
        facial_hair=str(rng.choice(FACIAL_HAIR)) if male and rng.random() < 0.85 else "none",
        glasses=glasses,
        texture_seed=int(rng.integers(2**31)),
        lipstick=None if male or rng.random() < 0.4 else LIPSTICKS[int(rng.integers(len(LIPSTICKS)))],
    )


# ---------------------------------------------------------------------------------------------
# The 3D landmark model
# ---------------------------------------------------------------------------------------------

# Head-outline points (forehead, crown, temples, cheeks) that carry hair and head with the pose.
_OUTLINE = np.array(
    [[x, -1.15, -0.25] for x in (-0.9, -0.45, 0.0, 0.45, 0.9)]
    + [[x, -1.85, -0.55] for x in (-0.95, -0.3, 0.3, 0.95)]
    + [[-1.35, -0.6, -0.75], [1.35, -0.6, -0.75], [-1.3, 0.3, -0.8], [1.3, 0.3, -0.8],
       [-0.9, 1.25, -0.55], [0.9, 1.25, -0.55], [0.0, 1.75, -0.5]],
    dtype=np.float64,
)


def identity_outline(identity: Identity) -> np.ndarray:
    """(N, 3) head-outline points of an identity: `_OUTLINE` widened by the head and jaw widths, the
    crown raised, the lower points lengthened with the face. These carry the hair and head shape
    (they are warp control points, not landmarks)."""
    s = identity.shape
    out = _OUTLINE.copy()
    upper = out[:, 1] < 0
    out[upper, 0] *= s["head_width"]
    out[~upper, 0] *= s["jaw_width"]
    out[~upper, 1] *= s["face_length"]
    crown = out[:, 1] < -1.5
    out[crown, 1] -= s["crown"]
    return out


def base_model(mirror: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """The photograph's own 3D landmarks (IOD units, centred on the eye midpoint) and its frame.

    Returns (model (68, 3), eye centre in the photo (2,), IOD in photo pixels). x, y are the
    photograph's detected landmarks (mirrored if asked), z the canonical template's depth.
    """
    photo = base_photo()
    lm = photo.landmarks.astype(np.float64)
    if mirror:
        lm = lm[faces.MIRROR] * [-1, 1] + [photo.image.shape[1] - 1, 0]
    eyes = faces.anchor_points(lm)[:2]
    centre = eyes.mean(0)
    iod = float(np.linalg.norm(eyes[1] - eyes[0]))
    xy = (lm - centre) / iod
    return np.column_stack([xy, faces.face_template()[:, 2]]), centre, iod


def identity_model(identity: Identity) -> np.ndarray:
    """(68, 3) neutral model of an identity: the (closed-mouth) photo's model reshaped.

    x, y in IOD units about the eye midpoint; the eyes stay the alignment anchors, so the shape
    factors move everything else relative to them.
    """
    m, _, _ = base_model(identity.mirror)
    m = m.copy()
    s = identity.shape
    jaw = np.arange(0, 17)
    m[jaw, 0] *= s["jaw_width"]
    m[[1, 2, 3, 4, 12, 13, 14, 15], 0] *= s["cheek_width"]
    below_eyes = m[:, 1] > 0
    m[below_eyes, 1] *= s["face_length"]
    m[6:11, 1] += s["chin"] * np.array([0.3, 0.7, 1.0, 0.7, 0.3])
    for eye, side in ((np.arange(36, 42), 1.0), (np.arange(42, 48), -1.0)):
        c = m[eye, :2].mean(0)
        m[eye, :2] = c * [s["eye_spacing"], 1] + (m[eye, :2] - c) * s["eye_size"]
        m[eye, 1] += side * s["eye_tilt"] * (m[eye, 0] - m[eye, 0].mean())  # outer corner up for tilt > 0
    brows = np.arange(17, 27)
    m[brows, 0] *= s["eye_spacing"]
    m[brows, 1] -= s["brow_height"]
    nose = np.arange(27, 36)
    top = m[27, 1]
    m[nose, 1] = top + (m[nose, 1] - top) * s["nose_length"]
    m[31:36, 0] *= s["nose_width"]
    mouth = np.arange(48, 68)
    mc = m[mouth, :2].mean(0)
    m[mouth, 0] = mc[0] + (m[mouth, 0] - mc[0]) * s["mouth_width"]
    line = m[60:68, 1].mean()  # lip thickness: outer lip points away from the mouth line
    m[49:54, 1] = line + (m[49:54, 1] - line) * s["lip_thickness"]
    m[55:60, 1] = line + (m[55:60, 1] - line) * s["lip_thickness"]
    m[mouth, 1] += s["mouth_height"]
    m[[48, 54, 60, 64], 1] += 0.04  # tone down the photo's smile
    return m


def expression_offsets(mouth: np.ndarray, emotion: str, level: int) -> np.ndarray:
    """(68, 3) model offsets for mouth (open, width, round) in [0, 1] and an emotion at level 1-3."""
    d = np.zeros((68, 3))
    open_, width, round_ = (float(v) for v in mouth)
    # jaw drop and lower lip
    jaw_w = {3: 0.15, 4: 0.3, 5: 0.5, 6: 0.75, 7: 0.92, 8: 1.0, 9: 0.92, 10: 0.75, 11: 0.5, 12: 0.3, 13: 0.15}
    for i, w in jaw_w.items():
        d[i, 1] += 0.42 * open_ * w
    d[[55, 56, 57, 58, 59], 1] += 0.38 * open_ * np.array([0.7, 0.95, 1.0, 0.95, 0.7])
    d[[65, 66, 67], 1] += 0.36 * open_ * np.array([0.85, 1.0, 0.85])
    d[[61, 62, 63], 1] -= 0.025 * open_
    d[[49, 50, 51, 52, 53], 1] -= 0.025 * open_
    d[[48, 54, 60, 64], 1] += 0.10 * open_
    # spread (width) and rounding
    spread = (width - 0.45) * 0.22 - round_ * 0.09
    for left, right, f in ((48, 54, 1.0), (60, 64, 1.0), (49, 53, 0.5), (59, 55, 0.5), (61, 63, 0.3), (67, 65, 0.3)):
        d[left, 0] -= spread * f
        d[right, 0] += spread * f
    d[48:68, 2] += 0.08 * round_
    d[[50, 51, 52], 1] -= 0.03 * round_
    d[[56, 57, 58], 1] += 0.03 * round_
    # emotion (level 1..3 -> 0.4, 0.7, 1.0)
    k = {1: 0.4, 2: 0.7, 3: 1.0}.get(int(level), 1.0)
    e = np.zeros((68, 3))
    if emotion == "happy":
        e[[48, 60], 0] -= 0.05
        e[[54, 64], 0] += 0.05
        e[[48, 54, 60, 64], 1] -= 0.11
        e[[40, 41, 46, 47], 1] -= 0.025
    elif emotion == "sad":
        e[[48, 54, 60, 64], 1] += 0.07
        e[[20, 21, 22, 23], 1] -= 0.08
        e[[17, 26], 1] += 0.03
    elif emotion == "angry":
        e[17:27, 1] += 0.07
        e[[20, 21], 0] += 0.04
        e[[22, 23], 0] -= 0.04
        e[[21, 22], 1] += 0.05
        e[[37, 38, 43, 44], 1] += 0.02
    elif emotion == "surprised":
        e[17:27, 1] -= 0.16
        e[[37, 38, 43, 44], 1] -= 0.045
        e[[40, 41, 46, 47], 1] += 0.015
    elif emotion == "fear":
        e[17:27, 1] -= 0.09
        e[[20, 21], 0] += 0.03
        e[[22, 23], 0] -= 0.03
        e[[37, 38, 43, 44], 1] -= 0.04
        e[[48, 60], 0] -= 0.04
        e[[54, 64], 0] += 0.04
    elif emotion == "disgusted":
        e[[49, 50, 51, 52, 53, 61, 62, 63], 1] -= 0.05
        e[31:36, 1] -= 0.025
        e[17:27, 1] += 0.04
    elif emotion == "contempt":
        e[[54, 64], 1] -= 0.07
        e[[54, 64], 0] += 0.05
    elif emotion != "neutral":
        raise ValueError(f"unknown emotion {emotion!r}; choose one of: {', '.join(EMOTIONS)}")
    d += k * e
    return d


def face_model(neutral: np.ndarray, mouth: np.ndarray, blink: float, emotion: str, level: int) -> np.ndarray:
    """(68, 3) model of one frame: neutral + mouth and emotion offsets, then the blink.

    Blink in [0, 1] moves each upper eyelid point 90 % * blink of the way to the lower lid.
    """
    m = neutral + expression_offsets(mouth, emotion, level)
    for up, lo in ((37, 41), (38, 40), (43, 47), (44, 46)):
        m[up, 1] += 0.9 * blink * (m[lo, 1] - m[up, 1])
    return m


def posed_points(model: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Project (N, 3) model points with a 6-d pose (rotvec, tx, ty, log scale) at FRAME_IOD px."""
    return faces.project(model, pose, FRAME_IOD)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _tps_kernel(d2: np.ndarray) -> np.ndarray:
    """Thin-plate radial basis U = r^2 log r^2, from squared distances."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d2 > 0, d2 * np.log(d2), 0.0)


def tps_map(dst: np.ndarray, src: np.ndarray, query: np.ndarray, regularization: float = 1e-6) -> np.ndarray:
    """Thin-plate spline through control points dst -> src, evaluated at `query` (Q, 2) -> (Q, 2).

    Coordinates should be of order 1 (callers divide pixels by the frame size).
    """
    n = len(dst)
    k = _tps_kernel(((dst[:, None] - dst[None]) ** 2).sum(-1)) + regularization * np.eye(n)
    p = np.hstack([np.ones((n, 1)), dst])
    system = np.zeros((n + 3, n + 3))
    system[:n, :n], system[:n, n:], system[n:, :n] = k, p, p.T
    rhs = np.zeros((n + 3, 2))
    rhs[:n] = src
    coef = np.linalg.solve(system, rhs)
    d2 = (query**2).sum(1)[:, None] + (dst**2).sum(1)[None] - 2.0 * query @ dst.T
    u = _tps_kernel(np.maximum(d2, 0.0))
    return u @ coef[:n] + np.hstack([np.ones((len(query), 1)), query]) @ coef[n:]


def make_background(identity: Identity, size: int = FRAME_SIZE, variant: int = 0) -> np.ndarray:
    """(size, size, 3) float32 RGB in [0, 1]: a photo crop or a colour gradient, slightly defocused.

    `variant` selects a different crop / tint of the identity's backdrop (one per video).
    """
    import skimage.data

    rng = np.random.default_rng([identity.background_seed, variant])
    if identity.background == "gradient":
        c0, c1 = rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.95, 3)
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / size
        t = np.clip(0.5 + (xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle), 0, 1)[..., None]
        bg = c0 * (1 - t) + c1 * t
        blobs = cv2.resize(rng.uniform(-0.08, 0.08, (4, 4, 3)), (size, size), interpolation=cv2.INTER_CUBIC)
        bg = bg + blobs
    else:
        img = getattr(skimage.data, identity.background)()
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        img = img[..., :3].astype(np.float32) / (255.0 if img.dtype == np.uint8 else float(img.max() or 1))
        h, w = img.shape[:2]
        side = int(min(h, w) * rng.uniform(0.5, 1.0))
        y0, x0 = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        bg = cv2.resize(img[y0:y0 + side, x0:x0 + side], (size, size), interpolation=cv2.INTER_AREA)
        bg = bg * rng.uniform(0.6, 1.2, 3) + rng.uniform(-0.1, 0.1, 3)
    bg = cv2.GaussianBlur(np.clip(bg, 0, 1).astype(np.float32), (0, 0), 1.2)
    return bg


def _polyline_mask(points: np.ndarray, shape: tuple[int, int], thickness: float, closed: bool = False) -> np.ndarray:
    """Anti-aliased float32 mask of a polyline (pixels), `thickness` px."""
    mask = np.zeros(shape, np.uint8)
    cv2.polylines(mask, [np.round(points * 8).astype(np.int32)], closed, 255, thickness=max(1, int(round(thickness))),
                  lineType=cv2.LINE_AA, shift=3)
    return mask.astype(np.float32) / 255.0


def _facial_hair_mask(kind: str, lm: np.ndarray, iod: float, shape: tuple[int, int], rng) -> np.ndarray:
    """(H, W) float32 coverage of facial hair of `kind` on a photo with landmarks `lm`."""
    def fill(polygon) -> np.ndarray:
        mask = np.zeros(shape, np.uint8)
        cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 255)
        return mask.astype(np.float32) / 255.0

    moustache = fill(np.vstack([lm[[48]] + [-0.08 * iod, 0.05 * iod], lm[31:36] + [0, 0.06 * iod],
                                lm[[54]] + [0.08 * iod, 0.05 * iod], lm[53:48:-1] - [0, 0.02 * iod]]))
    lips = fill(lm[48:60])
    if kind == "moustache":
        mask = moustache
    elif kind == "goatee":
        chin = np.vstack([lm[[48]] + [-0.1 * iod, 0], lm[59:54:-1], lm[[54]] + [0.1 * iod, 0],
                          lm[10:5:-1] + [0, 0.05 * iod]])
        mask = np.maximum(moustache, fill(chin))
    else:  # beard and stubble: the lower face below the cheekbones
        cheek_y = 0.5 * (lm[30, 1] + lm[33, 1])
        polygon = np.vstack([lm[2:15], [[lm[35, 0] + 0.55 * iod, cheek_y]], [[lm[31, 0] - 0.55 * iod, cheek_y]]])
        mask = np.maximum(fill(polygon), moustache)
    mask = mask * (1 - cv2.dilate(lips, np.ones((3, 3), np.uint8)))
    mask = cv2.GaussianBlur(mask, (0, 0), 0.06 * iod)
    grain = rng.random(shape).astype(np.float32)
    if kind == "stubble":
        return mask * (grain > 0.55) * 0.45
    return mask * (0.4 + 0.2 * grain)  # sparse enough that the jaw and lip edges still show


def _glasses_layer(glasses: dict, lm: np.ndarray, iod: float, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Frame coverage (H, W) and lens coverage (H, W) of a pair of glasses drawn on the eyes."""
    frame = np.zeros(shape, np.float32)
    lens = np.zeros(shape, np.float32)
    width, height, thick = glasses["width"] * iod, glasses["height"] * iod, glasses["thickness"] * iod
    centres = [lm[36:42].mean(0) + [0, 0.03 * iod], lm[42:48].mean(0) + [0, 0.03 * iod]]
    inner, outer = [], []
    for c, side in zip(centres, (-1, 1)):
        if glasses["shape"] == "round":
            t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
            outline = c + np.stack([0.5 * width * np.cos(t), 0.5 * height * np.sin(t)], 1)
        else:
            hw, hh, r = 0.5 * width, 0.5 * height, 0.25 * height
            corners = [(hw - r, hh - r, 0), (-hw + r, hh - r, 0.5 * np.pi), (-hw + r, -hh + r, np.pi),
                       (hw - r, -hh + r, 1.5 * np.pi)]
            outline = np.concatenate([np.stack([cx + r * np.cos(a0 + np.linspace(0, 0.5 * np.pi, 6)),
                                                cy + r * np.sin(a0 + np.linspace(0, 0.5 * np.pi, 6))], 1)
                                      for cx, cy, a0 in corners]) + c
        frame = np.maximum(frame, _polyline_mask(outline, shape, thick, closed=True))
        lens = np.maximum(lens, _fill_mask(outline, shape))
        inner.append(c + [-side * 0.5 * width, -0.1 * height])
        outer.append(c + [side * 0.5 * width, -0.15 * height])
    frame = np.maximum(frame, _polyline_mask(np.array([inner[0], inner[1]]), shape, 0.8 * thick))
    for o, jaw in zip(outer, (lm[0], lm[16])):
        frame = np.maximum(frame, _polyline_mask(np.array([o, [jaw[0], o[1]]]), shape, 0.8 * thick))
    return frame, lens * (1 - frame)


def _identity_texture(identity: Identity) -> np.ndarray:
    """(512, 512, 4) float32: the photo dressed as the identity (RGB in [0, 1]) + person alpha.

    In the base photo's frame: face regions blended with the donor face, wrinkle detail, skin tone,
    eyebrows, hair and iris colour, facial hair, glasses; mirrored last when the identity is.
    """
    photo = base_photo()
    donor = donor_face()
    lm = photo.landmarks.astype(np.float64)
    iod = _iod(lm)
    shape = photo.image.shape[:2]
    rng = np.random.default_rng(identity.texture_seed)
    weight = donor.regions["face"] * identity.donor.get("face", 0.0)
    for region in ("eyes", "nose", "mouth"):
        m = donor.regions[region]
        weight = weight * (1 - m) + identity.donor.get(region, 0.0) * m
    rgb = photo.image.astype(np.float32) / 255.0
    rgb = rgb * (1 - weight[..., None]) + donor.image * weight[..., None]
    lab = cv2.cvtColor((rgb * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2LAB).astype(np.float32)
    # age: the donor's fine luminance detail (wrinkles) on the face
    donor_l = cv2.cvtColor((donor.image * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32)
    detail = donor_l - cv2.GaussianBlur(donor_l, (0, 0), 0.08 * iod)
    lab[..., 0] += identity.age * (1 - weight) * donor.regions["face"] * (1 - donor.regions["eyes"]) * detail
    skin = photo.skin[..., None]
    lab = lab + skin * np.array(identity.skin_shift, dtype=np.float32)
    hair = photo.hair[..., None]
    target = np.array(identity.hair_lab, dtype=np.float32)
    hair_l = lab[..., :1]
    recoloured = np.concatenate(
        [target[0] + (hair_l - hair_l[photo.hair > 0.5].mean() if (photo.hair > 0.5).any() else 0) * 0.8,
         np.broadcast_to(target[1:], lab.shape[:2] + (2,))], axis=-1)
    lab = lab * (1 - hair) + recoloured * hair
    dark = np.array([min(target[0], 70.0), target[1], target[2]], dtype=np.float32)
    # eyebrows: thicker and darker
    thickness, darkening = identity.brows
    brows = np.maximum(_polyline_mask(lm[17:22], shape, 0.12 * iod * thickness),
                       _polyline_mask(lm[22:27], shape, 0.12 * iod * thickness))
    brows = cv2.GaussianBlur(brows, (0, 0), 0.03 * iod)[..., None] * (0.35 + 0.6 * darkening)
    lab = lab * (1 - brows) + dark * brows
    # iris colour: rotate the hue of the dark, saturated pixels inside the eyes
    eye_mask = np.zeros(lab.shape[:2], np.uint8)
    for eye in (lm[36:42], lm[42:48]):
        cv2.fillPoly(eye_mask, [np.round(eye).astype(np.int32)], 1)
    iris = (eye_mask > 0) & (lab[..., 0] < 120)
    hue = np.deg2rad(identity.iris_hue)
    a, b = lab[..., 1] - 128, lab[..., 2] - 128
    chroma = 18.0
    lab[..., 1] = np.where(iris, 128 + 0.3 * a + chroma * np.cos(hue), lab[..., 1])
    lab[..., 2] = np.where(iris, 128 + 0.3 * b + chroma * np.sin(hue), lab[..., 2])
    if identity.lipstick is not None:
        lips = _fill_mask(lm[48:60], shape) * (1 - _fill_mask(lm[60:68], shape))
        lips = cv2.GaussianBlur(lips, (0, 0), 0.03 * iod)[..., None] * 0.75
        lab = lab * (1 - lips) + np.array(identity.lipstick, np.float32) * lips
    if identity.facial_hair != "none":
        beard = _facial_hair_mask(identity.facial_hair, lm, iod, shape, rng)[..., None] * photo.person[..., None]
        lab = lab * (1 - beard) + (dark * [0.8, 1, 1]) * beard
    rgb = cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB).astype(np.float32) / 255.0
    if identity.glasses is not None:
        frame, lens = _glasses_layer(identity.glasses, lm, iod, shape)
        rgb = rgb * (1 - 0.12 * lens[..., None]) + 0.12 * lens[..., None]  # a faint lens glare
        rgb = rgb * (1 - frame[..., None]) + np.array(identity.glasses["rgb"], np.float32) * frame[..., None]
    texture = np.concatenate([rgb, photo.person[..., None]], axis=-1)
    if identity.mirror:
        texture = texture[:, ::-1].copy()
    return texture


def _fill_mask(polygon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Anti-aliased float32 coverage (shape = (H, W)) of a polygon given in pixels (sub-pixel exact)."""
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(polygon * 8).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=3)
    return mask.astype(np.float32) / 255.0


class Renderer:
    """Renders frames of one identity over one background.

    `render(pose, mouth, blink, gaze, emotion, level)` -> (frame (S, S, 3) uint8, landmarks (68, 2)).
    pose: 6-d (rotation vector rad, tx, ty px of the eye midpoint, log scale vs FRAME_IOD);
    mouth: (open, width, round) in [0, 1]; blink in [0, 1]; gaze (gx, gy) in [-1, 1] (right, down).
    """

    GRID_STEP = 4  # px between evaluated warp samples; the map is bilinearly upsampled

    def __init__(self, identity: Identity, background_variant: int = 0, size: int = FRAME_SIZE):
        self.identity, self.size = identity, size
        self.texture = _identity_texture(identity)
        self.neutral = identity_model(identity)
        photo_model, self.photo_centre, self.photo_iod = base_model(identity.mirror)
        photo_pose = np.array([0, 0, 0, *self.photo_centre, 0.0])
        self.src_landmarks = faces.project(photo_model, photo_pose, self.photo_iod)
        self.src_outline = faces.project(_OUTLINE, photo_pose, self.photo_iod)
        self.outline = identity_outline(identity)
        self.src_irises = np.stack([self.src_landmarks[36:42].mean(0), self.src_landmarks[42:48].mean(0)])
        border = _square_border(size, 8)
        self.dst_border = border
        self.src_border = self._frame_to_photo(border)
        self.background = make_background(identity, size, background_variant)
        g = np.arange(0, size + self.GRID_STEP, self.GRID_STEP, dtype=np.float64)
        gx, gy = np.meshgrid(g, g)
        self.grid = np.stack([gx.ravel(), gy.ravel()], 1)
        self.grid_shape = gx.shape

    def _frame_to_photo(self, points: np.ndarray) -> np.ndarray:
        return (points - np.array(FRAME_EYE_CENTRE)) * (self.photo_iod / FRAME_IOD) + self.photo_centre

    def landmarks(self, pose: np.ndarray, mouth: np.ndarray, blink: float, emotion: str, level: int) -> np.ndarray:
        """Ground-truth (68, 2) frame landmarks for these parameters."""
        return posed_points(face_model(self.neutral, mouth, blink, emotion, level), pose)

    def render(self, pose, mouth, blink, gaze, emotion="neutral", level=1, gain=(1.0, 1.0, 1.0)):
        pose = np.asarray(pose, dtype=np.float64)
        model = face_model(self.neutral, np.asarray(mouth), float(blink), emotion, level)
        dst_lm = posed_points(model, pose)
        dst_outline = posed_points(self.outline, pose)
        scale = FRAME_IOD * np.exp(pose[5])
        gaze_shift = np.array([0.085 * gaze[0], 0.035 * gaze[1]]) * scale
        dst_irises = np.stack([dst_lm[36:42].mean(0), dst_lm[42:48].mean(0)]) + gaze_shift
        dst = np.vstack([dst_lm, dst_outline, dst_irises, self.dst_border])
        src = np.vstack([self.src_landmarks, self.src_outline, self.src_irises, self.src_border])
        norm = float(self.size)
        coarse = tps_map(dst / norm, src / norm, self.grid / norm) * norm
        maps = self._resample_exact(coarse.reshape(*self.grid_shape, 2).astype(np.float32))
        warped = cv2.remap(self.texture, maps, None, cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
        alpha = warped[..., 3:4]
        frame = self.background * (1 - alpha) + warped[..., :3] * alpha
        frame = self._paint_mouth(frame, dst_lm, scale)
        frame = np.clip(frame * np.asarray(gain, dtype=np.float32), 0, 1)
        return (frame * 255 + 0.5).astype(np.uint8), dst_lm.astype(np.float32)

    def _resample_exact(self, coarse: np.ndarray) -> np.ndarray:
        """Bilinear upsampling of the coarse map (grid step GRID_STEP) to every pixel."""
        step = self.GRID_STEP
        pix = np.arange(self.size, dtype=np.float32) / step
        i0 = np.floor(pix).astype(int)
        f = (pix - i0)[:, None]
        rows = coarse[i0] * (1 - f)[..., None] + coarse[i0 + 1] * f[..., None]  # (S, G, 2)
        cols = rows[:, i0] * (1 - f.T)[..., None] + rows[:, i0 + 1] * f.T[..., None]
        return np.ascontiguousarray(cols, dtype=np.float32)

    def _paint_mouth(self, frame: np.ndarray, lm: np.ndarray, scale: float) -> np.ndarray:
        inner = lm[60:68]
        gap = float(np.mean(inner[[5, 6, 7], 1] - inner[[3, 2, 1], 1]))
        line = np.zeros((self.size, self.size), np.uint8)  # the dark line between the lips
        cv2.polylines(line, [np.round(inner[[0, 1, 2, 3, 4]] * 8).astype(np.int32)], False, 255,
                      thickness=max(1, int(round(scale / 40))), lineType=cv2.LINE_AA, shift=3)
        line = line.astype(np.float32)[..., None] / 255.0 * 0.7
        frame = frame * (1 - line) + np.array([0.25, 0.08, 0.08]) * line
        if gap < 0.3:
            return frame
        cavity = _fill_mask(inner, (self.size, self.size))
        depth = np.clip(gap / (0.25 * scale), 0, 1)
        frame = frame * (1 - cavity[..., None]) + np.array([0.28, 0.08, 0.08]) * (1 - 0.6 * depth) * cavity[..., None]
        upper = inner[[0, 1, 2, 3, 4]]
        tooth = min(0.45 * gap, 0.13 * scale)
        teeth = _fill_mask(np.vstack([upper, upper[::-1] + [0, tooth]]), (self.size, self.size)) * cavity
        frame = frame * (1 - teeth[..., None]) + np.array([0.86, 0.84, 0.78]) * teeth[..., None]
        if gap > 0.3 * scale:
            lower = inner[[4, 5, 6, 7, 0]]
            lower_teeth = _fill_mask(np.vstack([lower, lower[::-1] - [0, 0.35 * tooth]]), (self.size, self.size)) * cavity
            frame = frame * (1 - lower_teeth[..., None]) + np.array([0.8, 0.78, 0.72]) * lower_teeth[..., None]
        return frame
