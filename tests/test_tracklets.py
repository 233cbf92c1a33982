"""Tracks -> tracklets (crops chosen, embedding, fragments joined), people across cameras, and their storage."""

import numpy as np
import pytest
from PIL import Image
from sklearn.cluster import AgglomerativeClustering

from reid_core.video.people import cannot_link, cluster_people
from reid_core.video.store import TrackletGallery, pack_pngs, unpack_pngs
from reid_core.video.tracklets import (
    MAX_CANDIDATES,
    Tracklet,
    TrackletBuilder,
    crop_quality,
    embed_tracklets,
    in_domain_cut,
    join_fragments,
    unit,
)


def _scene(seed: int = 0) -> np.ndarray:
    """A 480x640 frame of texture (sharp), so crops have detail."""
    return np.random.default_rng(seed).integers(0, 256, (480, 640, 3), dtype=np.uint8)


def test_crop_quality_prefers_whole_sharp_unoverlapped_people():
    rgb = _scene()
    box = np.array([200, 100, 260, 260.0])  # 60 x 160: a person's proportions, inside the frame
    whole, crop = crop_quality(rgb, box, np.zeros((0, 4)))
    cut, _ = crop_quality(rgb, np.array([0, 100, 60, 260.0]), np.zeros((0, 4)))  # touches the left edge
    squat, _ = crop_quality(rgb, np.array([200, 100, 360, 160.0]), np.zeros((0, 4)))  # wider than tall
    covered, _ = crop_quality(rgb, box, np.array([[210, 110, 270, 270.0]]))
    blurred = rgb.copy()
    blurred[100:260, 200:260] = blurred[100:260, 200:260].mean(axis=(0, 1)).astype(np.uint8)
    flat, _ = crop_quality(blurred, box, np.zeros((0, 4)))
    assert crop.size == (60, 160)
    assert whole > 0.5 and whole > cut and whole > squat and whole > covered and whole > 10 * flat


def _feed(builder: TrackletBuilder, frames: range, tracks_of, fps: float = 25.0) -> None:
    rgb = _scene()
    for f in frames:
        tr = tracks_of(f)
        builder.add(f, f / fps, rgb, np.array(tr, np.float64).reshape(-1, 5))


def test_builder_drops_short_tracks_and_spreads_crops_over_time():
    b = TrackletBuilder("cam1", crops=4, sample_every_s=0.2, min_frames=8)
    _feed(b, range(100), lambda f: [[100 + f, 100, 160 + f, 260, 1]] + ([[400, 50, 450, 200, 2]] if f < 5 else []))
    (t,) = b.finish()
    assert t.track == 1 and t.camera == "cam1" and len(t.boxes) == 100
    assert len(t.crops) == 4 and t.start_s == 0.0 and t.end_s == pytest.approx(99 / 25)
    # candidates every 0.2 s = 5 frames -> 20; 4 stretches of 5, the best of each: one crop per 25 frames
    assert len(b.candidates[1]) == 20


def test_builder_memory_is_bounded_on_long_tracks():
    b = TrackletBuilder("cam1", crops=8, sample_every_s=0.04, min_frames=1)
    _feed(b, range(3000), lambda f: [[100, 100, 160, 260, 7]])
    assert len(b.candidates[7]) <= MAX_CANDIDATES
    times = [c.time_s for c in b.candidates[7]]
    assert times[-1] > 100  # still sampling at the end of the two minutes


def _tracklet(track: int, frames: range, emb: np.ndarray, camera: str = "c", weights=(1.0,)) -> Tracklet:
    boxes = np.array([[f, 0, 0, 10, 20, f / 25] for f in frames], np.float64)
    crops = [Image.new("RGB", (8, 16), (track * 30 % 255, 0, 0)) for _ in weights]
    return Tracklet(camera, track, boxes, crops, np.array(weights), unit(np.asarray(emb, np.float64)), [track])


def test_embedding_is_the_quality_weighted_mean_of_the_crops():
    t = _tracklet(1, range(10), [1, 0], weights=(3.0, 1.0))
    t.crops = [Image.new("RGB", (8, 16), (255, 0, 0)), Image.new("RGB", (8, 16), (0, 0, 255))]
    embed = lambda crops: np.array([[1.0, 0.0] if c.getpixel((0, 0))[0] else [0.0, 1.0] for c in crops])  # noqa: E731
    embed_tracklets([t], embed)
    assert np.allclose(t.embedding, unit(np.array([3.0, 1.0])))


def test_fragments_join_by_appearance_never_across_one_moment():
    a = _tracklet(1, range(0, 10), [1, 0, 0])
    b = _tracklet(2, range(20, 30), [0.99, 0.14, 0])  # a's person, back after an occlusion
    c = _tracklet(3, range(5, 15), [0.95, 0.0, 0.31])  # alike, but seen beside a: another person
    d = _tracklet(4, range(40, 50), [0, 0, 1])  # someone else
    out = join_fragments([a, b, c, d], threshold=0.9)
    groups = sorted(sorted(t.fragments) for t in out)
    assert groups == [[1, 2], [3], [4]]
    ab = next(t for t in out if t.track == 1)
    assert len(ab.boxes) == 20 and ab.start_s == 0 and ab.end_s == pytest.approx(29 / 25)


def test_people_match_sklearn_average_linkage_without_constraints():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16))
    emb = np.stack([unit(centres[i % 5] + 0.3 * rng.normal(size=16)) for i in range(40)])
    spans = np.stack([np.arange(40) * 10.0, np.arange(40) * 10.0 + 1]).T  # no overlaps
    cams = [f"cam{i % 3}" for i in range(40)]
    ours = cluster_people(emb, cams, spans, threshold=0.5)
    ref = AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage="average",
                                  distance_threshold=0.5).fit_predict(1 - emb @ emb.T)
    same_ours = ours[:, None] == ours[None, :]
    same_ref = ref[:, None] == ref[None, :]
    assert (same_ours == same_ref).all() and len(set(ours)) == len(set(ref))


def test_people_never_join_two_tracklets_seen_at_one_moment_in_one_camera():
    emb = np.stack([unit(np.array([1.0, 0])), unit(np.array([1.0, 0.05])), unit(np.array([1.0, 0.02]))])
    spans = np.array([[0, 10], [5, 15], [0, 10.0]])
    assert cannot_link(["a", "a", "b"], spans).tolist() == [[False, True, False], [True, False, False],
                                                            [False, False, False]]
    labels = cluster_people(emb, ["a", "a", "b"], spans, threshold=0.5)
    assert labels[0] != labels[1] and len(set(labels)) == 2


def _gallery(tmp_path, embed, weights_id="w1"):
    return TrackletGallery(tmp_path / "g.sqlite", embed, weights_id)


def _colour_embed(crops):
    return np.array([[c.getpixel((0, 0))[0] / 255 + 0.1, c.getpixel((0, 0))[1] / 255 + 0.1, 0.1] for c in crops])


def test_tracklets_are_stored_searched_cleared_and_reembedded_from_their_crops(tmp_path):
    g = _gallery(tmp_path, _colour_embed)
    ts = [_tracklet(1, range(0, 10), [1, 0, 0]), _tracklet(2, range(5, 30), [0, 1, 0], weights=(1.0, 2.0))]
    ts[1].crops = [Image.new("RGB", (8, 16), (0, 255, 0)), Image.new("RGB", (8, 16), (255, 255, 0))]
    assert g.add_tracklets(ts, "cam.mp4", "video-1") == 2
    assert g.add_tracklets(ts, "cam.mp4", "video-1") == 0  # the same video again adds nothing
    hits = g.search_tracklets(np.array([0, 1.0, 0]), k=2, pictures=1)
    assert [h.track for h in hits] == [2, 1] and hits[0].camera == "c" and hits[0].end_s == pytest.approx(29 / 25)
    assert hits[0].thumbnail.getpixel((0, 0)) == (255, 255, 0)  # the best crop (weight 2)
    # other weights: each tracklet re-embedded from its stored crops, quality-weighted
    g2 = _gallery(tmp_path, lambda crops: _colour_embed(crops)[:, ::-1], "w2")
    e2 = dict(zip((e["id"] for e in g2.entries()), g2.embeddings(), strict=True))
    expect = unit(np.average(_colour_embed(ts[1].crops)[:, ::-1] / np.linalg.norm(_colour_embed(ts[1].crops), axis=1,
                                                                                    keepdims=True), axis=0,
                             weights=[1.0, 2.0]))
    assert np.allclose(e2[hits[0].id], expect, atol=1e-6)
    assert g2.clear() == 2 and g2.tracklet_count() == 0  # the trigger takes the tracklet rows along


def test_a_failed_store_leaves_nothing(tmp_path):
    g = _gallery(tmp_path, _colour_embed)
    t = _tracklet(1, range(10), [1, 0, 0])
    t.embedding = None
    with pytest.raises(ValueError, match="embed the tracklets first"):
        g.add_tracklets([t], "cam.mp4", "v")
    assert len(g) == 0 and g.tracklet_count() == 0


def test_people_are_stored_for_annotation(tmp_path):
    g = _gallery(tmp_path, _colour_embed)
    g.add_tracklets([_tracklet(1, range(0, 10), [1, 0, 0], "cam1"), _tracklet(5, range(0, 10), [0, 0, 1], "cam1")],
                    "cam1.mp4", "v1")
    g.add_tracklets([_tracklet(3, range(50, 60), [0.98, 0.2, 0], "cam2")], "cam2.mp4", "v2")
    people = g.people(threshold=0.8)
    assert len(people) == 2 and people[0].cameras == ["cam1", "cam2"]
    video, tracks = g.boxes("cam2")
    assert video == "cam2.mp4" and tracks[0][0] == people[0].label and tracks[0][1] == 3


def test_crops_pack_losslessly():
    imgs = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (20, 10, 3), dtype=np.uint8)) for i in range(3)]
    back = unpack_pngs(pack_pngs(imgs))
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(imgs, back, strict=True))


def test_slivers_are_never_chosen_and_a_track_of_slivers_gives_no_tracklet():
    rgb = _scene()
    assert crop_quality(rgb, np.array([0, 0, 22, 256.0]), np.zeros((0, 4)))[0] == 0.0  # cut by the frame's edge
    b = TrackletBuilder("cam1", crops=4, sample_every_s=0.0, min_frames=2)
    _feed(b, range(20), lambda f: [[0, 100, 20, 400, 3]])
    assert b.finish() == []


def test_the_cut_rises_to_the_most_alike_pair_known_to_be_two_people():
    sim = np.array([[1.0, 0.7, 0.2], [0.7, 1.0, 0.9], [0.2, 0.9, 1.0]])
    different = np.array([[False, True, False], [True, False, False], [False, False, False]])
    assert in_domain_cut(sim, different, 0.6) == 0.7  # 0 and 1 were seen together: strangers reach 0.7 here
    assert in_domain_cut(sim, different, 0.8) == 0.8
    assert in_domain_cut(sim, np.zeros((3, 3), bool), 0.6) == 0.6
