import numpy as np
import pytest

from talkinghead.data.audio import load_audio
from talkinghead.data.corpora import read_corpus
from talkinghead.data.synthtalk import puppet, speech
from talkinghead.data.synthtalk.generate import (LRW_FRAMES, SynthConfig, generate, head_pose_track, plan_jobs,
                                                 render_clip)
from talkinghead.data.video import probe_video, read_video


def test_vox2_layout_reads_back_with_truth_and_disjoint_test_identities(synth_vox2):
    clips = read_corpus("vox2", synth_vox2)
    assert len(clips) == 4
    assert {c.split for c in clips} == {"train", "test"}
    train = {c.speaker for c in clips if c.split == "train"}
    test = {c.speaker for c in clips if c.split == "test"}
    assert train and test and not train & test
    for clip in clips:
        assert clip.audio is not None and clip.audio.exists() and clip.truth is not None
        info = probe_video(clip.video)
        assert (info.fps, info.width, info.height, info.has_audio) == (25, 224, 224, True)
        truth = np.load(clip.truth)
        assert truth["landmarks"].shape == (info.num_frames, 68, 2)
        assert truth["pose"].shape == (info.num_frames, 6) and truth["gaze"].shape == (info.num_frames, 2)
        assert str(truth["emotion"]) in puppet.EMOTIONS


def test_generation_is_deterministic_and_resumable(synth_vox2, synth_vox2_config, tmp_path):
    clip = read_corpus("vox2", synth_vox2)[0]
    job = next(j for j in plan_jobs(synth_vox2, synth_vox2_config)
               if j.video == str(clip.video))
    again = tmp_path / "again.mp4"
    render_clip(type(job)(**{**job.__dict__, "video": str(again), "audio": None}))
    a, b = np.load(clip.truth), np.load(tmp_path / "again.truth.npz")
    for key in ("landmarks", "pose", "mouth", "blink", "phone_id"):
        np.testing.assert_array_equal(a[key], b[key])
    # Ground truth is bit-exact. Pixels agree to within a grey level: with torch loaded in the process
    # the first render can round differently (known issue, see the README), the content is the same.
    diff = np.abs(read_video(clip.video)[0].astype(int) - read_video(again)[0].astype(int))
    assert diff.mean() < 2.0
    result = generate(synth_vox2, synth_vox2_config, workers=1, progress=False)
    assert result["skipped"] == 4 and result["written"] == 0


def test_mouth_follows_the_audio(synth_vox2):
    for clip in read_corpus("vox2", synth_vox2):
        truth = np.load(clip.truth)
        wav = load_audio(clip.audio)
        n = len(truth["mouth"])
        energy = np.sqrt((wav[: n * 640].reshape(n, 640) ** 2).mean(1))
        opening = truth["mouth"][:, 0]
        assert np.corrcoef(energy, opening)[0, 1] > 0.4
        # and the rendered lips open with it: inner-lip gap of the ground truth follows the track
        gap = truth["landmarks"][:, 66, 1] - truth["landmarks"][:, 62, 1]
        assert np.corrcoef(gap, opening)[0, 1] > 0.95


def test_closures_and_vowels_drive_visemes():
    rng = np.random.default_rng(0)
    plan = [("sil", 0.2), ("m", 0.12), ("a", 0.24), ("p", 0.12), ("u", 0.24), ("sil", 0.2)]
    utterance = speech.synthesize(plan, speech.Voice(), rng)
    track = speech.mouth_track(utterance.phones, 28)
    assert track[11, 0] > 0.8  # /a/ at 0.32-0.56 s = frames 8-13: open
    assert track[20, 2] > 0.8  # /u/ at 0.68-0.92 s = frames 17-22: rounded
    assert track[2, 0] < 0.05  # silence: closed
    assert abs(len(utterance.audio) / 16000 - 1.12) < 1e-3
    loud = np.abs(utterance.audio[int(0.35 * 16000):int(0.5 * 16000)]).mean()
    quiet = np.abs(utterance.audio[: int(0.15 * 16000)]).mean()
    assert loud > 20 * max(quiet, 1e-6)


def test_head_motion_is_smooth_and_independent_of_speech():
    rng = np.random.default_rng(3)
    pose = head_pose_track(rng, 500, 1.0)
    assert np.abs(np.diff(pose[:, 1])).max() < 0.03  # rad per frame
    assert 0.03 < pose[:, 1].std() < 0.3
    plan = speech.plan_utterance(np.random.default_rng(4), 20.0, speech.Voice())
    mouth = speech.mouth_track(speech.synthesize(plan, speech.Voice(), np.random.default_rng(5)).phones, 500)
    assert abs(np.corrcoef(mouth[:, 0], pose[:, 1])[0, 1]) < 0.3


def test_fifty_identities_differ_visibly():
    identities = [puppet.make_identity(i, 0, candidates=1) for i in range(60)]
    shapes = np.array([[v for v in ident.shape.values()] for ident in identities])
    assert len({tuple(np.round(s, 6)) for s in shapes}) == 60
    looks = {(ident.background, ident.hair_lab, ident.mirror) for ident in identities}
    assert len(looks) > 30
    frames = [puppet.Renderer(identities[i]).render(np.array([0, 0, 0, 112, 96, 0.0]), np.array([0, 0.45, 0]), 0,
                                                    (0, 0))[0] for i in range(4)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(frames[i].astype(int) - frames[j].astype(int)).mean() > 8


def test_lrw_and_mead_layouts(tmp_path):
    config = SynthConfig(layout="lrw", train_identities=2, test_identities=1, lrw_words=1, identity_candidates=1)
    generate(tmp_path / "lrw", config, workers=1, progress=False)
    clips = read_corpus("lrw", tmp_path / "lrw")
    assert len(clips) == 6 and {c.split for c in clips} == {"train", "val", "test"}
    for clip in clips:
        assert probe_video(clip.video).num_frames == LRW_FRAMES
        truth = np.load(clip.truth)
        start, end = clip.labels["word_start"], clip.labels["word_end"]
        centre = (start + end) / 2
        assert abs(centre - LRW_FRAMES / 25 / 2) < 0.02
        spoken = [(s, e) for p, s, e in zip(truth["phone_names"], truth["phone_start"], truth["phone_end"])
                  if str(p) != "sil" and s >= start - 0.011 and e <= end + 0.011]
        assert spoken and abs(spoken[0][0] - start) < 0.011 and abs(spoken[-1][1] - end) < 0.011
    config = SynthConfig(layout="mead", train_identities=1, test_identities=0, clips_per_video=1, duration=0.8,
                         identity_candidates=1)
    generate(tmp_path / "mead", config, workers=1, progress=False)
    clips = read_corpus("mead", tmp_path / "mead")
    assert len(clips) == 22  # 7 emotions x 3 levels + neutral level 1
    assert {c.labels["emotion"] for c in clips} == set(puppet.EMOTIONS)
    for clip in clips:
        assert clip.audio.exists() and clip.labels["view"] == "front"
        assert str(np.load(clip.truth)["emotion"]) == clip.labels["emotion"]


def test_unknown_layout_and_emotion_list_choices(tmp_path):
    with pytest.raises(ValueError, match="vox2, lrw, mead"):
        plan_jobs(tmp_path, SynthConfig(layout="voxceleb"))
    with pytest.raises(ValueError, match="happy"):
        puppet.expression_offsets(np.zeros(3), "bored", 1)


def test_identities_of_a_block_differ_in_half_of_the_coded_factors():
    codes = np.stack([puppet.identity_code(i, 3) for i in range(16)])
    assert set(np.unique(codes)) == {-1.0, 1.0}
    differ = (codes[:, None] != codes[None]).sum(-1)
    assert (differ[~np.eye(16, dtype=bool)] == len(puppet.CODE_FACTORS) // 2).all()
    ident = puppet.make_identity(5, 3, candidates=1)
    for name, (lo, hi) in puppet.SHAPE_RANGES.items():  # each factor on its coded side of the middle
        assert np.sign(ident.shape[name] - 0.5 * (lo + hi)) == dict(zip(puppet.CODE_FACTORS, codes[5]))[name]


def test_a_face_recogniser_tells_synthtalk_identities_apart():
    from talkinghead.metrics.csim import DlibFaceEmbedding

    poses = [np.array([0, 0, 0, 112, 96, 0.0]), np.array([0.1, 0.3, 0, 110, 98, 0.05])]
    renders = [puppet.Renderer(puppet.make_identity(i, 1, candidates=1)).render(p, np.array([0.2, 0.45, 0]), 0, (0, 0))[0]
               for i in range(4) for p in poses]
    emb, found = DlibFaceEmbedding()(np.stack(renders))
    assert found.all()
    dist = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
    same = np.arange(8)[:, None] // 2 == np.arange(8)[None] // 2
    within, across = dist[same & ~np.eye(8, dtype=bool)].max(), dist[~same].min()
    # a margin between the farthest renders of one identity and the nearest of two: 0.17 measured;
    # the single-photo identities of before had 0.06
    assert across - within > 0.12, (within, across)
    np.fill_diagonal(dist, np.inf)
    assert (dist.argmin(1) // 2 == np.arange(8) // 2).all()  # each render's nearest is its own identity


def _pairs_apart(points: np.ndarray) -> int:
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)[np.triu_indices(len(points), 1)]
    return int((d > puppet.SAME_PERSON_DISTANCE).sum())


def test_identity_choice_separates_the_candidates_a_recogniser_confuses():
    # 4 identities x 3 candidates in 2-D: candidate 0 of each lies near the origin (everyone looks
    # alike), candidate 1 on a unit circle at the identity's own angle, candidate 2 near candidate 1
    angles = np.pi / 2 * np.arange(4)
    circle = np.stack([np.cos(angles), np.sin(angles)], 1)
    descriptors = np.stack([0.05 * circle, circle, 0.9 * circle + 0.02], 1)  # (4, 3, 2)
    eligible = np.ones((4, 3), dtype=bool)
    chosen = puppet.choose_separated(descriptors, eligible)
    picked = descriptors[np.arange(4), chosen]
    assert _pairs_apart(picked) == 6 and _pairs_apart(descriptors[:, 0]) == 0
    eligible[2, 1:] = False  # identity 2 may only be its look-alike candidate
    eligible[3] = False  # identity 3 has none
    chosen = puppet.choose_separated(descriptors, eligible)
    assert chosen[2] == 0 and chosen[3] == -1 and all(c in (1, 2) for c in chosen[:2])


def test_identity_choice_restarts_escape_the_local_optimum_of_one_ascent():
    # 6 identities x 5 random candidates in 3-D: from the first candidates the ascent stops with two
    # pairs fewer above 0.6 than the best of its random restarts
    descriptors = np.random.default_rng(34).normal(size=(6, 5, 3)) * 0.35
    eligible = np.ones((6, 5), dtype=bool)
    single = puppet.choose_separated(descriptors, eligible, restarts=0)
    chosen = puppet.choose_separated(descriptors, eligible)
    rows = np.arange(6)
    assert _pairs_apart(descriptors[rows, chosen]) >= _pairs_apart(descriptors[rows, single]) + 2
    assert chosen == puppet.choose_separated(descriptors, eligible)  # seeded: the same every time


def test_the_choice_wants_dlib_to_read_the_face_at_other_poses_and_expressions_too():
    # a draw dlib finds frontal (landmarks 1.7 px off) and at +-20 deg yaw, but whose happy face it
    # misreads by 16 px: one such face dominates a bench's mean landmark distance
    misread = puppet.draw_identity(52, 0, 28)
    assert puppet.detectable(misread) and not puppet.dlib_reads(misread)
    assert puppet.dlib_reads(puppet.draw_identity(48, 0, 0))


def test_chosen_identities_are_usable_draws_more_distinct_than_the_first_draws():
    from talkinghead.metrics.csim import DlibFaceEmbedding

    chosen = puppet.choose_group(0, 5, candidates=2)
    assert [i.index for i in chosen] == list(range(12))
    first = [puppet.draw_identity(i, 5, 0) for i in range(12)]
    draws = [[puppet.draw_identity(i, 5, k) for k in range(2)] for i in range(12)]
    # one of the candidate draws, or (no candidate usable) the first usable milder draw after them
    assert all(c in row or c == puppet.first_detectable_draw(c.index, 5, 2) for c, row in zip(chosen, draws))
    assert sum(c in row for c, row in zip(chosen, draws)) >= 9
    # a chosen draw is one dlib reads at other poses and expressions too; a fallback is at least detectable
    assert all(puppet.dlib_reads(c) if c in row else puppet.detectable(c) for c, row in zip(chosen, draws))

    def frontal(identities):
        frames = [puppet.Renderer(i).render(puppet.REST_POSE, puppet.REST_MOUTH, 0.0, (0.0, 0.0))[0] for i in identities]
        emb, found = DlibFaceEmbedding()(np.stack(frames))
        return emb[found]

    assert _pairs_apart(frontal(chosen)) > _pairs_apart(frontal(first))


def test_large_motion_covers_voxceleb2_head_pose_ranges():
    from talkinghead.data.synthtalk.generate import head_pose_track

    rng = np.random.default_rng(0)
    large = np.degrees(np.concatenate([head_pose_track(rng, 75, 1.0, motion="large")[:, :3] for _ in range(60)]))
    natural = np.degrees(np.concatenate([head_pose_track(rng, 75, 1.0)[:, :3] for _ in range(60)]))
    reach = np.abs(large).max(0)
    assert reach[1] >= 35 and reach[0] >= 18 and reach[2] >= 13  # yaw, pitch, roll (issue: 35 / 20 / 15)
    assert reach[1] <= 38 and reach[0] <= 20.1 and reach[2] <= 15.5  # the limits keep faces detectable
    assert np.abs(natural[:, 1]).max() < 0.6 * reach[1]
    with pytest.raises(ValueError, match="unknown motion"):
        head_pose_track(rng, 5, 1.0, motion="wild")


def test_large_motion_nods_with_the_speech():
    from talkinghead.data.synthtalk.generate import LARGE_MOTION, head_pose_track, speech_envelope, speech_head_motion
    from talkinghead.metrics.head_motion import angular_speed, audio_energy, smooth_poses

    coupling = []
    for i in range(8):
        voice = speech.Voice(f0=110.0 + 10 * i, rate=4.0 + 0.2 * i)
        audio = speech.synthesize(speech.plan_utterance(np.random.default_rng(i), 20.0, voice), voice,
                                  np.random.default_rng(i)).audio[: 500 * 640]
        nods = speech_head_motion(speech_envelope(audio, 500), np.random.default_rng(i), 1.0)
        speed = angular_speed(smooth_poses(np.c_[nods, np.zeros((500, 3))], 5))
        coupling.append(np.corrcoef(speed, audio_energy(audio, 500))[0, 1])
        with_nods = head_pose_track(np.random.default_rng(50 + i), 500, 1.0, motion="large-nods", speech_motion=nods)
        without = head_pose_track(np.random.default_rng(50 + i), 500, 1.0, motion="large")
        limits = np.array([limit for _, _, limit in LARGE_MOTION[:3]]) - 1e-6
        free = ((np.abs(with_nods[:, :3]) < limits) & (np.abs(without[:, :3]) < limits)).all(1)  # at no limit
        np.testing.assert_allclose((with_nods - without)[free, :3], nods[free], atol=1e-9)
        np.testing.assert_array_equal(with_nods[:, 3:], without[:, 3:])
    assert np.mean(coupling) > 0.12  # the nods move when the speech does (nods alone: about 0.2)
    with pytest.raises(ValueError, match="needs the speech"):
        head_pose_track(np.random.default_rng(0), 500, 1.0, motion="large-nods")
    silence = np.zeros(150 * 640)
    assert speech_envelope(silence, 150).max() == 0.0
    assert np.abs(speech_head_motion(speech_envelope(silence, 150), np.random.default_rng(0), 1.0)).max() == 0.0
    step = np.r_[np.zeros(50), np.ones(100)]  # one onset at frame 50: a damped swing after it, nothing before
    swing = speech_head_motion(step, np.random.default_rng(0), 1.0)
    assert np.abs(swing[:44]).max() == 0.0 and np.abs(swing[44:75, 0]).max() > 0.1
    assert np.abs(swing[-10:]).max() < 0.01 * np.abs(swing).max()


def test_truth_pose_is_mapped_into_the_aligned_frames():
    from talkinghead.data import faces
    from talkinghead.data.preprocess import aligned_pose

    template = faces.face_template()
    raw_pose = np.array([[0.1, -0.3, 0.2, 140.0, 80.0, 0.3]])
    raw = faces.project(template, raw_pose[0], 46.0)
    angle, k = 0.25, 1.3  # an alignment: rotation, scale, shift
    m = np.array([[k * np.cos(angle), -k * np.sin(angle), 7.0], [k * np.sin(angle), k * np.cos(angle), -11.0]])
    aligned_points = faces.apply_affine(raw, m)
    np.testing.assert_allclose(aligned_pose(raw_pose, m[None], 46.0)[0],
                               faces.estimate_head_pose(aligned_points[None])[0], atol=1e-3)


def test_talkinghead_data_writes_the_nodding_variant_only_when_asked():
    from talkinghead.cli import DATA_VARIANTS, DEFAULT_DATA_VARIANTS, build_parser

    assert build_parser().parse_args(["data"]).layouts == list(DEFAULT_DATA_VARIANTS)
    assert "vox2-large-nods" not in DEFAULT_DATA_VARIANTS and DATA_VARIANTS["vox2-large-nods"][1] == "large-nods"
    assert build_parser().parse_args(["data", "--layouts", "vox2-large-nods"]).layouts == ["vox2-large-nods"]
