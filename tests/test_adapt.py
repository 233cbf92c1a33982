"""Adaptation to a new camera network (reid_core.adapt, `python -m reid_core adapt`, ReID.adapted / bn_adapted)."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_market

ROOT = Path(__file__).resolve().parent.parent


def shifted(px: torch.Tensor) -> torch.Tensor:
    """Another camera network: half the contrast, a brighter exposure (uint8 still)."""
    return (px.float() * 0.5 + 100).round().clamp(0, 255).to(torch.uint8)


def test_bn_statistics_undo_a_domain_shift(market: Path) -> None:
    """Crops of the shifted network embed like their source versions once BatchNorm has seen the new network,
    unlabeled, and not before: the measured gain of the first rung, on a shift it should undo."""
    from reid_core.adapt.batchnorm import adapt_bn
    from reid_core.adapt.targets import pixel_batches, target_records
    from reid_core.model.network import ModelConfig, create_model

    torch.manual_seed(0)  # timm's 0.37 M-parameter test_resnet: BatchNorm's rule, not resnet18's size, is checked
    model = create_model(ModelConfig(backbone="test_resnet", height=64, width=32, embed_dim=32)).eval()
    px = torch.cat(list(pixel_batches(target_records(market), (64, 32), 64, progress=False)))
    adapt_bn(model, [px])  # the "source" model: statistics of the source network
    source = model.embed(px)
    before = float((model.embed(shifted(px)) * source).sum(1).mean())
    adapted = copy.deepcopy(model)
    seen = adapt_bn(adapted, [shifted(px)[i:i + 16] for i in range(0, len(px), 16)])
    after = float((adapted.embed(shifted(px)) * source).sum(1).mean())
    assert seen == len(px)
    assert after > before + 0.3, (before, after)
    assert not adapted.training and not any(m.training for m in adapted.modules())
    # only the chosen layers move: the BNNeck alone leaves every backbone statistic as it was
    neck = copy.deepcopy(model)
    adapt_bn(neck, [shifted(px)], layers="neck")
    assert torch.equal(neck.backbone.bn1.running_mean, model.backbone.bn1.running_mean)
    assert not torch.equal(neck.bnneck.running_mean, model.bnneck.running_mean)


@pytest.mark.parametrize(("backbone", "last_stride", "stages"), [("resnet18", 2, 2), ("resnet18", 1, 1),
                                                                ("efficientnet_lite0", 2, 2),
                                                                ("efficientnet_lite0", 1, 3)])
def test_the_split_model_is_the_model(backbone: str, last_stride: int, stages: int) -> None:
    """Self-training runs the top of the network on cached trunk maps: top(trunk(x)) must be the model."""
    from reid_core.adapt.split import Split
    from reid_core.model.network import ModelConfig, create_model

    torch.manual_seed(0)
    model = create_model(ModelConfig(backbone=backbone, height=64, width=32, last_stride=last_stride)).eval()
    x = torch.randint(0, 256, (3, 3, 64, 32), dtype=torch.uint8)
    split = Split(model, stages)
    with torch.no_grad():
        assert torch.allclose(split(split.trunk_map(x))["emb"], model(x)["emb"], atol=1e-5)
    with pytest.raises(ValueError, match="train_stages must be 1"):
        Split(model, 99)


def test_jaccard_core_matches_the_reference_loop() -> None:
    """kreciprocal_jaccard (vectorised by column) against the reference's per-row loop (Zhong et al.'s code)."""
    from reid_core.evaluation.metrics import kreciprocal_jaccard

    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 8))[rng.integers(0, 10, 80)] + 0.4 * rng.normal(size=(80, 8))
    d = np.linalg.norm(x[:, None] - x[None], axis=2).astype(np.float32)
    k1, k2, n = 8, 3, len(d)
    rank = np.argsort(d, axis=1)[:, : k1 + 1]
    v = np.zeros((n, n), np.float32)
    half = int(np.around(k1 / 2)) + 1
    for i in range(n):
        fwd = rank[i]
        recip = fwd[(rank[fwd] == i).any(1)]
        expanded = recip
        for c in recip:
            c_fwd = rank[c, :half]
            c_recip = c_fwd[(rank[c_fwd, :half] == c).any(1)]
            if len(np.intersect1d(c_recip, recip)) > 2 / 3 * len(c_recip):
                expanded = np.append(expanded, c_recip)
        expanded = np.unique(expanded)
        w = np.exp(-d[i, expanded])
        v[i, expanded] = w / w.sum()
    v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    want = np.zeros((n, n), np.float32)
    for i in range(n):
        tmin = np.minimum(v[i][None], v).sum(1)
        want[i] = 1 - tmin / (2 - tmin)
    got = kreciprocal_jaccard(d, k1, k2)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got[0, 0] < 1e-5 and (got >= -1e-6).all()


def test_target_folder_reads_no_labels(market: Path, people_folder: Path, tmp_path: Path) -> None:
    from reid_core.adapt.targets import target_records
    from reid_core.data.datasets import DatasetError

    recs = target_records(market)  # a dataset: its training images, pids dropped, cameras kept
    assert len(recs) == 8 * 3 * 2 and {r.pid for r in recs} == {-1} and {r.camid for r in recs} == {0, 1, 2}
    plain = target_records(people_folder)  # any folder: every image below it (the broken one too: skipped later)
    assert len(plain) == 13 and {r.pid for r in plain} == {-1}
    with pytest.raises(DatasetError, match="not a folder"):
        target_records(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        target_records(tmp_path / "empty")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reid_core", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)


@pytest.mark.slow
def test_adapt_cli_errors_are_one_line(tmp_path: Path, tiny_weights: Path) -> None:
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "missing", tmp_path / "empty"):
        r = run_cli("adapt", "--data", str(folder), "--out", str(tmp_path / "a.safetensors"),
                    "--weights", str(tiny_weights), "--engine", "fp32")
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), r.stderr
        assert str(folder) in r.stderr
    target = make_market(tmp_path / "target", n_train=4, n_test=2)  # refused before its "before" evaluation
    r = run_cli("adapt", "--data", str(target), "--out", str(tmp_path / "a.safetensors"), "--weights",
                str(tiny_weights), "--engine", "fp32", "--evaluate", "--train-stages", "9")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "train_stages must be 1..4" in r.stderr, r.stderr
    assert not (tmp_path / "a.safetensors").exists()


@pytest.mark.slow
def test_adapted_weights_load_everywhere(tmp_path: Path, tiny_weights: Path) -> None:
    """CLI bn + self-train on a synthetic network; the file records what was done and loads in the API, the
    ONNX engine and a gallery built by the source weights (re-embedded on the weights change)."""
    from reid_core import ReID

    target = make_market(tmp_path / "target", n_train=20, n_test=4, per_cam=2, cams=2)
    out = tmp_path / "adapted.safetensors"
    r = run_cli("adapt", "--data", str(target), "--out", str(out), "--weights", str(tiny_weights), "--engine", "fp32",
                "--rounds", "1", "--epochs", "1", "--p", "4", "--k", "2", "--min-samples", "2", "--k1", "6",
                "--eps", "0.7", "--keep", "last", "--evaluate")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^round 1/1 done: \d+ clusters holding \d+ crops, loss [\d.]+, [\d.]+ min", r.stderr, re.M)
    cfg = json.loads(out.with_suffix(".json").read_text())
    rec = cfg["extra"]["adapted"]
    assert rec["method"] == "self-train" and rec["target"] == "target" and rec["target_images"] == 20 * 2 * 2
    assert rec["bn_images"] == 20 * 2 * 2 and {"rank1", "flip_mAP", "centred_mAP"} <= set(rec["figures"]["after"])
    assert "; centred: R1 " in r.stderr and "; flip + centred: R1 " in r.stderr
    assert rec["source_weights"] == str(tiny_weights) and rec["settings"]["rounds"] == 1 and len(rec["rounds"]) == 1
    assert set(rec["figures"]) == {"before", "after", "evaluated_on"} and 0 <= rec["figures"]["after"]["mAP"] <= 1
    assert rec["kept"] == "round 1" and rec["why"].startswith("the last round (")
    assert 0 <= rec["rounds"][0]["agreement"] <= 1
    assert "metrics" not in cfg["extra"]  # the source's figures are not this model's
    assert rec["thresholds_from"].startswith("chosen anew on the target's held-out pairs")  # --evaluate: labels
    assert cfg["extra"]["thresholds"]["flip_pair"] is not None
    base, adapted = ReID.load(tiny_weights, engine="fp32"), ReID.load(out, engine="fp32")
    assert base.weights_id != adapted.weights_id
    changed = [k for k, v in adapted.model.state_dict().items() if not torch.equal(v, base.model.state_dict()[k])]
    assert any("running_mean" in k for k in changed) and any("layer4" in k and "weight" in k for k in changed)
    frozen = [k for k in changed if k.startswith(("backbone.layer1", "backbone.conv1"))]
    assert all("running" in k or "num_batches" in k for k in frozen), frozen  # statistics only
    crops = sorted((target / "query").glob("*.jpg"))
    onnx = ReID.load(out, engine="onnx")
    np.testing.assert_allclose(onnx.embed(crops), adapted.embed(crops), atol=1e-4)
    g = base.gallery(tmp_path / "g.sqlite")
    g.add_files([str(p) for p in crops])
    before = g.search(base.embed(crops[0]), k=1)[0]
    g2 = adapted.gallery(tmp_path / "g.sqlite")  # other weights: the stored rows are re-embedded
    after = g2.search(adapted.embed(crops[0]), k=1)[0]
    assert len(g2) == len(crops) and before.name == after.name and after.score == pytest.approx(1.0, abs=1e-4)


def test_adapted_weights_say_their_thresholds_are_the_source_cameras(tmp_path: Path, tiny_weights: Path,
                                                                     market: Path) -> None:
    """Without labels the adapted weights keep the source's thresholds and calibration, and their JSON says
    they were chosen on the source cameras, not these."""
    from reid_core.cli import main as cli

    out = tmp_path / "bn.safetensors"
    assert cli(["adapt", "--data", str(market), "--out", str(out), "--weights", str(tiny_weights), "--engine",
                "fp32", "--method", "bn"]) == 0
    extra = json.loads(out.with_suffix(".json").read_text())["extra"]
    source = json.loads(tiny_weights.with_suffix(".json").read_text())["extra"]
    assert extra["adapted"]["thresholds_from"].startswith("the source weights': chosen on the source cameras'")
    assert extra.get("pair_threshold") == source.get("pair_threshold")


def test_bn_adapted_in_memory_leaves_the_source_alone(small_weights: Path, market: Path) -> None:
    from reid_core import ReID

    base = ReID.load(small_weights, engine="fp32")
    crops = sorted((market / "bounding_box_test").glob("*.jpg"))[:12]
    before = base.embed(crops)
    adapted = base.bn_adapted([p.read_bytes() for p in crops])
    np.testing.assert_array_equal(base.embed(crops), before)
    assert not np.allclose(adapted.embed(crops), before) and adapted.weights_id != base.weights_id


def test_bad_settings_are_one_line_before_any_work() -> None:
    from reid_core.adapt.config import AdaptConfig

    for bad, match in (({"max_images": -5}, "max_images must be at least 0"), ({"temperature": 0.0}, "temperature"),
                       ({"batch_size": 0}, "batch_size"), ({"eps": float("nan")}, "eps"),
                       ({"momentum": 2.0}, "momentum"), ({"method": "magic"}, "method must be one of")):
        with pytest.raises(ValueError, match=match):
            AdaptConfig(**bad)


def test_a_handle_left_behind_by_a_reopen_refuses_work(tmp_path: Path, small_weights: Path, market: Path) -> None:
    """After a session's gallery is re-opened for another model, nothing done through the old handle may mix
    the two models' embeddings: the old handle refuses in one line, the new one serves."""
    from reid_core import GalleryError, ReID, ServerLimits
    from space.sessions import Sessions

    base = ReID.load(small_weights, engine="fp32")
    crops = sorted((market / "bounding_box_test").glob("*.jpg"))[:12]
    adapted = base.bn_adapted(crops)
    sessions = Sessions(tmp_path, lambda path: base.gallery(path), ServerLimits())
    with sessions.use("visitor", create=True) as old:
        old.add_files([str(p) for p in crops])
    new = sessions.reopen("visitor", lambda path: adapted.gallery(path))
    with sessions.use("visitor") as now:
        assert now is new and len(new) == len(crops)
    for call in (lambda: old.search(base.embed(crops[0]), 1), lambda: old.add_files([str(crops[0])])):
        with pytest.raises(GalleryError):
            call()
    stale = base.gallery(tmp_path / "stale.sqlite")
    stale.add_files([str(crops[0])])
    other = adapted.gallery(tmp_path / "stale.sqlite")  # another process re-embeds the file under stale's feet
    with pytest.raises(GalleryError, match="re-embedded for another model"):
        stale.search(base.embed(crops[0]), 1)
    assert other.search(adapted.embed(crops[0]), 1)[0].score == pytest.approx(1.0, abs=1e-4)


def test_flip_embeddings_use_their_own_recorded_threshold(tiny_weights: Path, tmp_path: Path) -> None:
    import shutil

    from reid_core import ReID

    w = tmp_path / "w.safetensors"
    shutil.copy(tiny_weights, w)
    cfg = json.loads(tiny_weights.with_suffix(".json").read_text())
    cfg["extra"].update(pair_threshold=0.3, metrics={"flip_pair_threshold": 0.4})
    w.with_suffix(".json").write_text(json.dumps(cfg))
    assert ReID.load(w, engine="fp32").threshold == pytest.approx(0.4)
    assert ReID.load(w, engine="fp32", flip=False).threshold == pytest.approx(0.3)
    flipped, plain = ReID.load(w, engine="fp32"), ReID.load(w, engine="fp32", flip=False)
    assert flipped.embedding_id == plain.embedding_id + "+flip"


def test_each_round_says_where_the_run_is() -> None:
    """Per-round progress with an estimate: the rounds left at the mean time of those done."""
    import time

    from reid_core.adapt.config import Round
    from reid_core.adapt.self_training import round_done

    done = [Round(1, 180, 5000, 1.234, 120.0), Round(2, 200, 5200, 1.1, 180.0)]
    line = round_done(done, 4, time.time() - 330)
    assert line.startswith("round 2/4 done: 200 clusters holding 5200 crops, loss 1.100, 3.0 min (5.5 min in all)")
    assert line.endswith("; about 5.0 min left for 2 more rounds")
    assert round_done(done, 2, time.time()).endswith("min in all)")  # the last round: nothing left to estimate


def test_cameras_from_folder_names(tmp_path: Path) -> None:
    """A folder whose file names carry no camera takes it from camera folders (the innermost); others are -1."""
    from conftest import person

    from reid_core.adapt.targets import camera_folder, target_records

    net = tmp_path / "net"
    for cam in ("cam_a", "cam_b", "cam_b/day2", "campus"):
        (net / cam).mkdir(parents=True)
        person(1, 0, 0).save(net / cam / "crop.jpg")
    cams = {Path(r.path).parent.relative_to(net).as_posix(): r.camid for r in target_records(net)}
    assert cams == {"cam_a": 0, "cam_b": 1, "cam_b/day2": 1, "campus": -1}
    assert [camera_folder(Path(p)) for p in ("site/Camera-2/x.jpg", "cam1/day/x.jpg", "camA/x.jpg")] == ["2", "1", None]


def test_clustering_support_names_what_is_missing() -> None:
    from reid_core.adapt.clustering import clustering_support
    from reid_core.adapt.config import AdaptConfig

    cfg = AdaptConfig(p=4)
    pairs = np.repeat(np.arange(20), 2)  # 20 clusters of 2 crops, one in each camera
    cams = np.tile([0, 1], 20)
    assert clustering_support(pairs, cams, cfg) is None
    assert "only 3 clusters" in clustering_support(np.r_[np.arange(3), np.full(37, -1)], cams, cfg)
    sparse = np.r_[np.repeat(np.arange(4), 1), np.full(36, -1)]
    assert "4 of 40 crops (10%) fall in clusters" in clustering_support(sparse, cams, cfg)
    one_camera = np.repeat(np.arange(20), 2)
    assert "0% of the 20 clusters span two cameras" in clustering_support(one_camera, np.repeat([0, 1], 20), cfg)
    assert clustering_support(one_camera, None, cfg) is None  # cameras unknown: not asked


@pytest.mark.slow
def test_one_crop_per_person_per_camera_keeps_the_bn_rung(tmp_path: Path) -> None:
    """Two cameras as folders, one crop of each person in each: DBSCAN's 4 neighbours cannot be found, so
    self-training keeps the BatchNorm rung and says why in one line, instead of training on noise."""
    from conftest import person

    from reid_core.adapt.config import AdaptConfig
    from reid_core.adapt.recipe import adapt_model
    from reid_core.adapt.targets import target_records
    from reid_core.model.network import ModelConfig, create_model

    for cam, folder in enumerate(("cam_a", "cam_b")):
        (tmp_path / folder).mkdir()
        for pid in range(30):
            person(pid, cam, 0).save(tmp_path / folder / f"{pid:03d}.jpg")
    torch.manual_seed(0)
    model = create_model(ModelConfig(backbone="resnet18", height=64, width=32, embed_dim=32)).eval()
    records = target_records(tmp_path)
    assert {r.camid for r in records} == {0, 1}
    adapted, report = adapt_model(model, records, AdaptConfig(epochs=1), progress=False)
    assert report.kept == "bn" and report.rounds == [] and "cannot teach" in report.reason, report.reason
    assert report.bn_agreement is not None and "\n" not in report.reason
    bn_only, _ = adapt_model(model, records, AdaptConfig(method="bn"), progress=False)
    for k, v in bn_only.state_dict().items():
        assert torch.equal(v, adapted.state_dict()[k]), k


def test_camera_proxies_are_per_cluster_and_camera_and_pull_crops_to_them() -> None:
    from reid_core.train.proxies import CameraProxies

    torch.manual_seed(0)
    emb = F.normalize(torch.randn(12, 8), dim=1)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, -1, 2, 2, 2])
    cams = torch.tensor([0, 0, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1])
    p = CameraProxies(emb, labels, cams)
    assert len(p.bank) == 6 and p.proxy_of[8] == -1  # (cluster, camera) pairs seen; an outlier has none
    first = p.proxy_of[0]
    assert p.proxy_of[1] == first and p.proxy_of[2] != first and p.proxy_cam[first] == 0
    torch.testing.assert_close(p.bank[first], F.normalize(emb[0] + emb[1], dim=0))
    idx = torch.tensor([0, 2, 4, 5, 9, 11])
    at_proxies = CameraProxies(emb, labels, cams).loss(p.bank[p.proxy_of[idx]].clone(), idx)
    wrong = CameraProxies(emb, labels, cams).loss(p.bank[p.proxy_of[idx.flip(0)]].clone(), idx)
    assert at_proxies < wrong
    # intra-camera term by hand for one crop: its proxy against the proxies of its own camera only
    q = CameraProxies(emb, labels, cams, inter_weight=0.0)
    x = emb[4:5].clone().requires_grad_(True)
    mine = (q.proxy_cam == 0).nonzero().squeeze(1)
    s = (F.normalize(x, dim=1) @ q.bank.T / 0.07)[0]
    want = -(s[q.proxy_of[4]] - torch.logsumexp(s[mine], 0))
    got = q.loss(x, torch.tensor([4]))
    torch.testing.assert_close(got, want)
    got.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_a_large_trunk_map_cache_is_a_memory_mapped_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past CACHE_IN_MEMORY bytes the cache is a temporary file mapped into memory (unlinked at once), written and
    read like the in-memory one; a cache the disk cannot hold is refused before any work."""
    from reid_core.adapt import split

    small = split.empty_cache((2, 3, 4, 5))
    assert small.dtype == torch.float16 and small.shape == (2, 3, 4, 5)
    monkeypatch.setattr(split, "CACHE_IN_MEMORY", 100)
    big = split.empty_cache((2, 30, 4, 5))
    assert big.dtype == torch.float16 and big.shape == (2, 30, 4, 5)
    maps = Path("/proc/self/maps")
    if maps.exists():  # Linux: the mapping is a deleted temporary file, not anonymous memory
        assert any("reid-trunk-maps-" in line and "(deleted)" in line for line in maps.read_text().splitlines())
    big[1, 7] = 0.5
    assert float(big[1, 7].float().mean()) == 0.5 and float(big[0, 7].float().abs().sum()) == 0.0
    with pytest.raises(ValueError, match="caches .* GiB of trunk maps"):
        split.check_cache_room(1 << 60)


def test_mean_teacher_follows_its_student_by_its_momentum() -> None:
    from reid_core.train.mean_teacher import MeanTeacher

    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    teacher = MeanTeacher(student, 0.9)
    start = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    assert not any(p.requires_grad for p in teacher.model.parameters())
    student[1].weight.requires_grad_(False)  # frozen: it never moves in training, so the teacher skips it
    with torch.no_grad():
        student[0].weight.add_(1.0)
        student[1].weight.add_(1.0)
    student.train()(torch.randn(8, 4))  # moves the BatchNorm statistics and its batch count
    teacher.update(student)
    got, now = teacher.model.state_dict(), student.state_dict()
    for k in ("0.weight", "1.running_mean", "1.running_var"):
        torch.testing.assert_close(got[k], 0.9 * start[k] + 0.1 * now[k])
    assert torch.equal(got["1.weight"], start["1.weight"])
    assert got["1.num_batches_tracked"] == now["1.num_batches_tracked"] == 1
    with pytest.raises(ValueError, match="momentum must be in"):
        MeanTeacher(student, 1.0)


def three_camera_target(folder: Path) -> torch.nn.Module:
    """24 synthetic people x 3 cameras x 2 crops written to `folder`, and a tiny random model to adapt to them."""
    from conftest import person

    from reid_core.model.network import ModelConfig, create_model

    for pid in range(24):
        for cam in range(3):
            for k in range(2):
                person(pid, cam, k).save(folder / f"{pid:04d}_c{cam + 1}s1_{k:06d}_00.png")
    torch.manual_seed(0)
    return create_model(ModelConfig(backbone="test_resnet", height=64, width=32, embed_dim=16)).eval()


def test_self_training_with_a_mean_teacher_keeps_the_teachers_weights(tmp_path: Path) -> None:
    """With --teacher-momentum the clusters and the kept model are the teacher's: a round's kept weights are
    the average, not the student's last step."""
    from reid_core.adapt.config import AdaptConfig, Round
    from reid_core.adapt.recipe import adapt_model
    from reid_core.adapt.targets import target_records

    model = three_camera_target(tmp_path)
    seen: list[dict[str, torch.Tensor]] = []

    def on_round(r: Round, m: torch.nn.Module) -> None:
        seen.append({k: v.clone() for k, v in m.state_dict().items()})

    cfg = AdaptConfig(rounds=1, epochs=2, p=4, k=2, min_samples=2, keep="last", teacher_momentum=0.5)
    adapted, report = adapt_model(model, target_records(tmp_path), cfg, progress=False, on_round=on_round)
    assert report.kept == "round 1" and len(seen) == 1
    for k, v in adapted.state_dict().items():
        assert torch.equal(v, seen[0][k]), k  # the kept model is the one scored: the teacher
    cfg.teacher_momentum = 0.0  # the same student alone (the teacher never changes what the student learns)
    student, _ = adapt_model(model, target_records(tmp_path), cfg, progress=False)
    a, b = adapted.state_dict(), student.state_dict()
    assert torch.equal(a["backbone.layer1.0.conv1.weight"], b["backbone.layer1.0.conv1.weight"])  # frozen trunk
    assert not torch.equal(a["backbone.layer4.0.conv1.weight"], b["backbone.layer4.0.conv1.weight"])  # averaged
    with pytest.raises(ValueError, match="teacher_momentum must be in"):
        AdaptConfig(teacher_momentum=1.0)


def test_lr_step_trains_the_later_rounds_at_a_tenth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--lr-step R: rounds before R train at lr, R and after at lr / 10 (Cluster Contrast's step schedule)."""
    from reid_core.adapt import self_training
    from reid_core.adapt.config import AdaptConfig
    from reid_core.adapt.recipe import adapt_model
    from reid_core.adapt.targets import target_records

    model = three_camera_target(tmp_path)
    rates: list[float] = []
    real = self_training.train_round
    monkeypatch.setattr(self_training, "train_round",
                        lambda split, cache, labels, emb, opt, *a: rates.append(opt.param_groups[0]["lr"]) or real(
                            split, cache, labels, emb, opt, *a))
    cfg = AdaptConfig(rounds=3, epochs=1, p=4, k=2, min_samples=2, keep="last", lr=1e-3, lr_step=2)
    adapt_model(model, target_records(tmp_path), cfg, progress=False)
    assert rates == pytest.approx([1e-3, 1e-4, 1e-4])
    with pytest.raises(ValueError, match="lr_step must be at least 0"):
        AdaptConfig(lr_step=-1)
    with pytest.raises(ValueError, match="lr_step must be at most rounds"):
        AdaptConfig(rounds=4, lr_step=5)


def test_a_round_trains_at_most_max_steps(tmp_path: Path) -> None:
    """A round's epochs are cut short at max_steps (its bar says so), so a large network's rounds stop growing."""
    from reid_core import listening
    from reid_core.adapt.config import AdaptConfig
    from reid_core.adapt.recipe import adapt_model
    from reid_core.adapt.targets import target_records

    model = three_camera_target(tmp_path)
    bars: dict[str, tuple[int, int | None]] = {}
    for steps in (1000, 5):
        cfg = AdaptConfig(rounds=1, epochs=3, p=4, k=2, min_samples=2, keep="last", max_steps=steps)
        with listening(lambda desc, done, total: bars.__setitem__(desc, (done, total))):
            adapt_model(model, target_records(tmp_path), cfg)
        done, total = bars.pop("round 1/1 training")
        assert done == total and (total > 5 if steps == 1000 else total == 5), (steps, done, total)


def test_the_kept_rung_is_the_last_within_the_signals_noise_of_the_best() -> None:
    from reid_core.adapt.clustering import kept_rung

    # CUHK03's training half (7,060 crops), a second run of the default recipe: the rounds' share dipped 0.007 below
    # the BatchNorm rung's (two standard errors: 0.0099) while Rank-1 went 8 -> 16 -> 20: round 2 is kept
    assert kept_rung([0.221, 0.2142, 0.2142], 7060) == 2
    assert kept_rung([0.221, 0.222, 0.225], 7060) == 2  # the first run: rising
    assert kept_rung([0.221, 0.19, 0.18], 7060) == 0  # every round worse beyond the noise: the BatchNorm rung
    assert kept_rung([0.20, 0.26, 0.21], 7060) == 1  # a round that fell back beyond the noise is not kept
    assert kept_rung([0.20, 0.26, 0.21], 100) == 2  # ... unless so few crops cannot tell them apart
