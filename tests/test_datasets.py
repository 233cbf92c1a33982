import json
from pathlib import Path

import pytest
from conftest import person

from reid_core.data.datasets import DatasetError, combine, cuhk03_camera, load_cuhk03_splits, load_dataset


def make_cuhk03(folder: Path, n_ids: int = 10) -> Path:
    """NNNN_KK.jpg crops, KK 00..09 as in the release: 00-04 from camera 1, 05-09 from camera 2."""
    folder.mkdir(parents=True)
    for pid in range(1, n_ids + 1):
        for k in range(10):
            person(pid, int(k >= 5), k, size=(16, 32)).save(folder / f"{pid:04d}_{k:02d}.jpg")
    return folder


def test_market_layout(market: Path) -> None:
    d = load_dataset(market)
    assert d.name == "market1501"
    assert len(d.train) == 8 * 3 * 2 and d.num_train_pids == 8
    assert sorted({r.pid for r in d.train}) == list(range(8))  # relabelled 0..N-1
    assert {r.camid for r in d.train} == {0, 1, 2}
    assert len(d.query) == 6 and {r.pid for r in d.query} == set(range(9, 15))  # original pids kept
    assert all(r.pid != -1 for r in d.gallery)  # junk dropped
    assert sum(r.pid == 0 for r in d.gallery) == 1  # distractor kept as a negative
    assert len(d.gallery) == 6 * 3 * 2 + 1


def test_duke_name(tmp_path: Path, market: Path) -> None:
    duke = tmp_path / "DukeMTMC-reID"
    duke.symlink_to(market, target_is_directory=True)
    assert load_dataset(duke).name == "dukemtmc-reid"


def test_msmt17_layout(tmp_path: Path) -> None:
    root = tmp_path / "MSMT17"
    lists = {"list_train.txt": ("train", [0, 1]), "list_val.txt": ("train", [2]),
             "list_query.txt": ("test", [5, 6]), "list_gallery.txt": ("test", [5, 6, 7])}
    for name, (folder, pids) in lists.items():
        lines = []
        for pid in pids:
            for cam in (1, 4):
                rel = f"{pid:04d}/{pid:04d}_{name[5:8]}_{cam:02d}_0303morning_0015_0.jpg"
                (root / folder / rel).parent.mkdir(parents=True, exist_ok=True)
                person(pid, cam, 0).save(root / folder / rel)
                lines.append(f"{rel} {pid}")
        (root / name).write_text("\n".join(lines) + "\n")
    d = load_dataset(root)
    assert d.name == "msmt17"
    assert d.num_train_pids == 3 and len(d.train) == 6  # val ids join train
    assert {r.camid for r in d.train} == {0, 3}
    assert len(d.query) == 4 and len(d.gallery) == 6
    assert all(Path(r.path).exists() for r in d.train + d.query + d.gallery)


def test_cuhk03_camera_index_is_zero_based() -> None:
    assert [cuhk03_camera(k) for k in range(10)] == [0] * 5 + [1] * 5  # 05 is camera 2's first image


def test_cuhk03_layout(tmp_path: Path) -> None:
    root = make_cuhk03(tmp_path / "cuhk03")
    d = load_dataset(root)
    assert d.name == "cuhk03"
    for r in d.train + d.query + d.gallery:
        assert r.camid == (0 if int(Path(r.path).stem[-2:]) <= 4 else 1), r.path
    assert {Path(r.path).stem[-2:] for r in d.query} == {"00", "05"}  # first image of each camera
    train_ids, test_ids = d.num_train_pids, len({r.pid for r in d.query})
    assert train_ids + test_ids == 10 and test_ids == 5
    assert len(d.query) == 2 * test_ids  # one query per camera per test identity
    assert {r.camid for r in d.query} == {0, 1}
    q_paths = {r.path for r in d.query}
    assert not q_paths & {r.path for r in d.gallery}
    assert len(d.gallery) == 8 * test_ids


def test_cuhk03_images_subfolder(tmp_path: Path) -> None:
    """The release folder: images/NNNN_KK.jpg with a README.md beside it, not one folder per identity."""
    root = tmp_path / "cuhk03"
    make_cuhk03(root / "images", n_ids=4)
    (root / "README.md").write_text("CUHK03\n")
    d = load_dataset(root)
    assert d.name == "cuhk03" and d.num_train_pids + len({r.pid for r in d.query}) == 4
    assert all(Path(r.path).parent == root / "images" for r in d.train + d.query + d.gallery)


def make_torchreid_cuhk03(root: Path, writer: str = "/home/someone/reid-data/cuhk03") -> Path:
    """torchreid's cuhk03 folder in small: 6 people of camera pair 1, views 1 and 2, both box kinds, and the
    new-protocol (people 1-3 train, 4-6 test) and classic (two splits) files with the writer's absolute paths."""
    def name(pid: int, view: int, k: int) -> str:
        return f"1_{pid:03d}_{view}_{k:02d}.png"

    def recs(boxes: str, pids: range, ks: tuple[int, ...] = (1, 2, 6, 7), pid0: int = 0) -> list:
        return [[f"{writer}/images_{boxes}/{name(p, 1 + (k > 5), k)}", p - pid0, int(k > 5)] for p in pids for k in ks]

    for boxes in ("detected", "labeled"):
        (root / f"images_{boxes}").mkdir(parents=True)
        for pid in range(1, 7):
            for view, k in ((1, 1), (1, 2), (2, 6), (2, 7)):
                person(pid, view, k, size=(16, 32)).save(root / f"images_{boxes}" / name(pid, view, k))
        new = [{"train": recs(boxes, range(1, 4), pid0=1), "query": recs(boxes, range(4, 7), (1, 6)),
                "gallery": recs(boxes, range(4, 7), (2, 7)), "num_train_pids": 3}]  # torchreid relabels train
        classic = [{"train": recs(boxes, train), "query": recs(boxes, test), "gallery": recs(boxes, test),
                    "num_train_pids": len(train)}
                   for train, test in ((range(1, 5), range(5, 7)), (range(3, 7), range(1, 3)))]
        (root / f"splits_new_{boxes}.json").write_text(json.dumps(new))
        (root / f"splits_classic_{boxes}.json").write_text(json.dumps(classic))
    return root


@pytest.mark.parametrize(("layout", "name", "boxes", "n_train", "n_query", "n_gallery"), [
    ("auto", "cuhk03-new-detected", "detected", 3, 6, 6),
    ("cuhk03", "cuhk03-new-detected", "detected", 3, 6, 6),
    ("cuhk03-labeled", "cuhk03-new-labeled", "labeled", 3, 6, 6),
    ("cuhk03-classic", "cuhk03-classic-detected", "detected", 4, 8, 8),
    ("cuhk03-classic-labeled", "cuhk03-classic-labeled", "labeled", 4, 8, 8),
])
def test_cuhk03_torchreid_layout(tmp_path: Path, layout: str, name: str, boxes: str, n_train: int, n_query: int,
                                 n_gallery: int) -> None:
    root = make_torchreid_cuhk03(tmp_path / "cuhk03")
    d = load_dataset(root, layout)
    assert d.name == name
    assert d.num_train_pids == n_train and sorted({r.pid for r in d.train}) == list(range(n_train))
    assert len(d.query) == n_query and len(d.gallery) == n_gallery and len(d.train) == 4 * n_train
    for r in d.train + d.query + d.gallery:  # found by file name here, not at the writer's path
        assert Path(r.path).parent == root / f"images_{boxes}" and Path(r.path).is_file()
        assert r.camid == int(Path(r.path).stem.split("_")[2]) - 1
    assert {r.camid for r in d.query} == {0, 1}
    if "classic" not in name:  # the new protocol keeps test ids as written; split 0 holds out people 4-6
        assert {r.pid for r in d.query} == {r.pid for r in d.gallery} == {4, 5, 6}


def test_cuhk03_torchreid_split_id(tmp_path: Path) -> None:
    d = load_cuhk03_splits(make_torchreid_cuhk03(tmp_path / "cuhk03"), "classic", "labeled", split_id=1)
    assert {int(Path(r.path).stem.split("_")[1]) for r in d.query} == {1, 2}  # the second split's test people
    assert sorted({r.pid for r in d.train}) == [0, 1, 2, 3]


def test_cuhk03_torchreid_windows_paths(tmp_path: Path) -> None:
    root = make_torchreid_cuhk03(tmp_path / "cuhk03", writer="C:\\data\\cuhk03")
    d = load_dataset(root)
    assert all(Path(r.path).is_file() for r in d.train + d.query + d.gallery)


@pytest.mark.parametrize("fault", ["missing", "not json", "no splits", "no train", "missing images"])
def test_cuhk03_torchreid_bad_split_file(tmp_path: Path, fault: str) -> None:
    root = make_torchreid_cuhk03(tmp_path / "cuhk03")
    bad = root / "splits_new_detected.json"
    if fault == "missing":
        bad.unlink()
    elif fault == "not json":
        bad.write_text("{not json")
    elif fault == "no splits":
        bad.write_text("[]")
    elif fault == "no train":
        bad.write_text(json.dumps([{"query": [], "gallery": []}]))
    else:
        for p in (root / "images_detected").iterdir():
            p.unlink()
    with pytest.raises(DatasetError) as e:
        load_dataset(root)
    msg = str(e.value)
    assert ("images_detected" if fault == "missing images" else str(bad)) in msg and "\n" not in msg
    if fault == "missing":
        assert "splits_new_labeled.json" in msg  # says what is there instead


def test_combine_keeps_identities_apart(tmp_path: Path, market: Path) -> None:
    a, b = load_dataset(market), load_dataset(make_cuhk03(tmp_path / "cuhk03", n_ids=6))
    both = combine([a, b])
    assert both.name == "market1501+cuhk03"
    assert len(both.train) == len(a.train) + len(b.train)
    assert both.num_train_pids == a.num_train_pids + b.num_train_pids
    assert sorted({r.pid for r in both.train}) == list(range(both.num_train_pids))  # dense 0..N-1
    pids_a = {r.pid for r in both.train if r.path.startswith(str(market))}
    pids_b = {r.pid for r in both.train if r.path.startswith(str(tmp_path))}
    assert pids_a == set(range(a.num_train_pids)) and not pids_a & pids_b
    assert both.query == a.query and both.gallery == a.gallery and both.root == a.root
    assert combine([a]) is a


def test_folder_per_identity(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    for i, name in enumerate(["alice", "bob", "carol", "dave", "erin"]):
        (root / name).mkdir(parents=True)
        for k in range(4):
            person(i, k % 2, k).save(root / name / f"{k}.png")
    d = load_dataset(root)
    assert d.name == "folders"
    assert d.num_train_pids == 4 and len(d.train) == 16  # 20% of identities held out
    assert len(d.query) == 1 and len(d.gallery) == 3  # first image queries, the rest is its gallery
    assert d.query[0].pid == d.gallery[0].pid


def test_folder_fixed_split(tmp_path: Path) -> None:
    root = tmp_path / "split"
    for split, names in (("train", ["a", "b"]), ("query", ["c"]), ("gallery", ["c", "d"])):
        for n in names:
            (root / split / n).mkdir(parents=True)
            person(ord(n), 0, 0).save(root / split / n / f"{n}_c1_0.jpg")
            person(ord(n), 1, 1).save(root / split / n / f"{n}_c2_1.jpg")
    d = load_dataset(root)
    assert d.num_train_pids == 2 and len(d.query) == 2 and len(d.gallery) == 4
    assert {r.pid for r in d.query} <= {r.pid for r in d.gallery}  # same name -> same pid across splits
    assert {r.camid for r in d.query} == {0, 1}


@pytest.mark.parametrize("setup", ["missing", "empty", "wrong", "file"])
def test_bad_folders_name_folder_and_layout(tmp_path: Path, setup: str) -> None:
    root = tmp_path / "data"
    if setup == "empty":
        root.mkdir()
    elif setup == "wrong":
        root.mkdir()
        (root / "notes.txt").write_text("hello")
    elif setup == "file":
        root.write_text("not a folder")
    with pytest.raises(DatasetError) as e:
        load_dataset(root)
    msg = str(e.value)
    assert str(root) in msg and "bounding_box_train" in msg and "\n" not in msg


def test_unknown_layout_name(market: Path) -> None:
    with pytest.raises(DatasetError, match="unknown layout"):
        load_dataset(market, layout="viper")


def test_parse_identity_keeps_text_ids_apart_from_dataset_ids() -> None:
    from reid_core.data.datasets import NAMED_ID_BASE, parse_identity

    assert parse_identity("0001_c2s1_000151_01.jpg") == (1, 2) and parse_identity("-1_c3s1_1.jpg") == (-1, 3)
    a1, a2 = parse_identity("person-A_c1.png"), parse_identity("person-A_cam2.jpg")
    b1 = parse_identity("person-B_c1.png")
    assert a1[0] == a2[0] != b1[0] and a1[0] >= NAMED_ID_BASE and (a1[1], a2[1]) == (1, 2)
    assert parse_identity("john_doe_c3.jpg") == (parse_identity("john_doe_c1.jpg")[0], 3)
    for none in ("snapshot.png", "my_cat.png", "9" * 4400 + "_c1s1_000001_00.png", "person-A.png"):
        assert parse_identity(none) is None, none
