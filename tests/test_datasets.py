from pathlib import Path

import pytest
from conftest import person

from reid_core.datasets import DatasetError, load_dataset


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


def test_cuhk03_layout(tmp_path: Path) -> None:
    root = tmp_path / "cuhk03"
    root.mkdir()
    for pid in range(1, 11):
        for k in range(1, 11):
            person(pid, int(k > 5), k).save(root / f"{pid:04d}_{k:02d}.jpg")
    d = load_dataset(root)
    assert d.name == "cuhk03"
    train_ids, test_ids = d.num_train_pids, len({r.pid for r in d.query})
    assert train_ids + test_ids == 10 and test_ids == 5
    assert len(d.query) == 2 * test_ids  # one query per camera per test identity
    assert {r.camid for r in d.query} == {0, 1}
    q_paths = {r.path for r in d.query}
    assert not q_paths & {r.path for r in d.gallery}
    assert len(d.gallery) == 8 * test_ids


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
