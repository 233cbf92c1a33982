"""Dataset layouts -> records.

Every layout is parsed into the same three lists of `Record(path, pid, camid)`: train (pids relabelled
0..N-1 so they index the ID classifier), query and gallery (original pids, so the Market protocol can
compare them). Junk images (pid -1) are dropped; Market's pid 0 distractors stay in the gallery as negatives.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}  # data.FORMATS' usual names

LAYOUTS = "auto | market | duke | msmt17 | cuhk03[-new|-classic][-detected|-labeled] | folders"  # for --layout
LAYOUT_HELP = (
    "expected one of: Market-1501 / DukeMTMC-reID (bounding_box_train/, query/, bounding_box_test/ with "
    "PPPP_cC*.jpg names), MSMT17 (list_train.txt, list_query.txt, list_gallery.txt + train/, test/), "
    "CUHK03 (NNNN_KK.jpg files, directly or in images/; or torchreid's cuhk03 folder: images_detected/ or "
    "images_labeled/ + splits_*.json) or one sub-folder of images per identity"
)


class DatasetError(ValueError):
    """A folder that is not a re-id dataset; the message names the folder and the expected layout."""


@dataclass(frozen=True)
class Record:
    path: str
    pid: int
    camid: int
    track: int = -1  # the tracklet it was cut from (video: same track, same person), -1 none


@dataclass
class ReIDData:
    """One dataset split three ways. `train` pids are 0..num_train_pids-1."""

    name: str
    root: str
    train: list[Record] = field(default_factory=list)
    query: list[Record] = field(default_factory=list)
    gallery: list[Record] = field(default_factory=list)

    @property
    def num_train_pids(self) -> int:
        return len({r.pid for r in self.train})

    def summary(self) -> str:
        def line(name: str, recs: list[Record]) -> str:
            return f"  {name:8s} {len({r.pid for r in recs}):6d} ids {len(recs):7d} images"

        return "\n".join([f"{self.name} at {self.root}", line("train", self.train),
                          line("query", self.query), line("gallery", self.gallery)])


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def relabel(records: list[Record]) -> list[Record]:
    """Map pids to 0..N-1 in sorted order, as the ID classifier needs."""
    mapping = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
    return [Record(r.path, mapping[r.pid], r.camid) for r in records]


# --- Market-1501 / DukeMTMC-reID -------------------------------------------------------------------------
_MARKET_RE = re.compile(r"^(-?\d{1,9})_c(\d{1,9})")  # bounded: int() of a 4,300-digit id raises


_NAMED_RE = re.compile(r"^(.+?)_c(?:am)?(\d{1,9})(?!\d)")
NAMED_ID_BASE = 10**9  # ids from text labels start here: above any numeric id parse_market_name can give


def parse_identity(name: str) -> tuple[int, int] | None:
    """(identity, camera) from any file name that carries them: Market/Duke `PPPP_cC...`, or `LABEL_cC...` /
    `LABEL_camC...` with a text label (`person-A_c1.png`), whose id is a stable code at or above
    NAMED_ID_BASE, so it never equals a dataset's numeric id. None if the name carries none."""
    if parsed := parse_market_name(name):
        return parsed
    m = _NAMED_RE.match(Path(name).name)
    if not m or m.group(1).lstrip("-").isdigit():  # a number too long for an id is no id
        return None
    return NAMED_ID_BASE + zlib.crc32(m.group(1).encode()) % NAMED_ID_BASE, int(m.group(2))


def parse_market_name(name: str) -> tuple[int, int] | None:
    """(pid, camera number as written, 1-based) from a Market/Duke name `PPPP_cC...`, or None."""
    m = _MARKET_RE.match(Path(name).name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _parse_market_dir(folder: Path, train: bool) -> list[Record]:
    out = []
    for p in _images(folder):
        parsed = parse_market_name(p.name)
        if parsed is None:
            continue
        pid, cam = parsed[0], parsed[1] - 1
        if pid == -1 or (train and pid == 0):  # junk; distractors carry no identity to learn
            continue
        out.append(Record(str(p), pid, cam))
    return out


def load_market(root: Path) -> ReIDData:
    name = "dukemtmc-reid" if "duke" in root.name.lower() else "market1501"
    return ReIDData(name, str(root), relabel(_parse_market_dir(root / "bounding_box_train", True)),
                    _parse_market_dir(root / "query", False),
                    _parse_market_dir(root / "bounding_box_test", False))


# --- MSMT17 ----------------------------------------------------------------------------------------------
def _parse_msmt_list(root: Path, list_name: str, img_dir: str) -> list[Record]:
    out = []
    for line in (root / list_name).read_text().splitlines():
        if not line.strip():
            continue
        rel, pid = line.split()[:2]
        camid = int(Path(rel).name.split("_")[2]) - 1  # 0000_000_01_0303morning_0015_0.jpg -> camera 01
        out.append(Record(str(root / img_dir / rel), int(pid), camid))
    return out


def load_msmt17(root: Path) -> ReIDData:
    train_dir = "train" if (root / "train").is_dir() else "mask_train_v2"
    test_dir = "test" if (root / "test").is_dir() else "mask_test_v2"
    train = _parse_msmt_list(root, "list_train.txt", train_dir)
    if (root / "list_val.txt").exists():  # the official val ids are train ids too
        train += _parse_msmt_list(root, "list_val.txt", train_dir)
    return ReIDData("msmt17", str(root), relabel(train), _parse_msmt_list(root, "list_query.txt", test_dir),
                    _parse_msmt_list(root, "list_gallery.txt", test_dir))


# --- CUHK03 (NNNN_KK.jpg, KK a 0-based image index: 00-04 from camera 1, 05-09 from camera 2) ------------
_CUHK_RE = re.compile(r"^(\d+)_(\d+)$")


def cuhk03_camera(k: int) -> int:
    """0-based camera of CUHK03 image index KK (0-based: 00-04 camera 1 -> 0, 05-09 camera 2 -> 1)."""
    return 0 if k <= 4 else 1


def _split_ids(by_pid: dict[int, list[Record]], test_fraction: float, seed: int, one_query: bool = False) -> ReIDData:
    """Hold out a seeded fraction of identities; for each, the first image of each camera is a query
    (or just the first image when cameras are unknown), the rest is gallery."""
    pids = sorted(by_pid)
    rng = random.Random(seed)
    test_pids = set(rng.sample(pids, max(1, round(len(pids) * test_fraction)))) if len(pids) > 1 else set()
    data = ReIDData("", "")
    train = []
    for pid in pids:
        recs = by_pid[pid]
        if pid not in test_pids:
            train += recs
            continue
        if one_query:
            data.query.append(recs[0])
            data.gallery += recs[1:]
            continue
        seen_cams: set[int] = set()
        for r in recs:
            (data.gallery if r.camid in seen_cams else data.query).append(r)
            seen_cams.add(r.camid)
    data.train = relabel(train)
    return data


def load_cuhk03(root: Path, files: list[Path], test_fraction: float = 0.5, seed: int = 0) -> ReIDData:
    by_pid: dict[int, list[Record]] = {}
    for p in files:
        pid, k = (int(g) for g in _CUHK_RE.match(p.stem).groups())
        by_pid.setdefault(pid, []).append(Record(str(p), pid, cuhk03_camera(k)))
    data = _split_ids(by_pid, test_fraction, seed)
    data.name, data.root = "cuhk03", str(root)
    return data


def _cuhk03_files(root: Path) -> list[Path]:
    """The NNNN_KK images of a CUHK03 folder, directly in `root` or in `root/images`; [] if it is not one."""
    for folder in (root, root / "images"):
        files = _images(folder) if folder.is_dir() else []
        if files and all(_CUHK_RE.match(p.stem) for p in files):
            return files
    return []


# --- CUHK03 as torchreid prepares it (images_detected/, images_labeled/, splits_{new,classic}_*.json) -------
# layout name -> (protocol, boxes); plain "cuhk03" is the field's default, new protocol on detected boxes
CUHK03_VARIANTS = {f"cuhk03{p}{b}": (p[1:] or "new", b[1:] or "detected")
                   for p in ("", "-new", "-classic") for b in ("", "-detected", "-labeled")}


def _is_torchreid_cuhk03(root: Path) -> bool:
    return any((root / f"images_{b}").is_dir() for b in ("detected", "labeled")) and any(root.glob("splits_*.json"))


def load_cuhk03_splits(root: Path, protocol: str = "new", boxes: str = "detected", split_id: int = 0) -> ReIDData:
    """One split of torchreid's CUHK03: the new protocol (767 train / 700 test ids) or one of the 20 classic
    splits, on detected or hand-labelled boxes. The json holds paths of the machine that wrote it, so each image
    is found by file name in this folder's images_<boxes>/."""
    path, images = root / f"splits_{protocol}_{boxes}.json", root / f"images_{boxes}"
    if not path.is_file():
        found = ", ".join(sorted(p.name for p in root.glob("splits_*.json"))) or "none"
        raise DatasetError(f"{path}: missing CUHK03 split file (found: {found}); pick the layout "
                           f"cuhk03[-new|-classic][-detected|-labeled] that matches")
    try:
        split = json.loads(path.read_text())[split_id]
        train, query, gallery = ([Record(str(images / PureWindowsPath(p).name), int(pid), int(cam))
                                  for p, pid, cam in split[part]] for part in ("train", "query", "gallery"))
    except (OSError, ValueError, LookupError, TypeError) as e:
        raise DatasetError(f"{path}: not a torchreid CUHK03 split file with split {split_id} "
                           f"({type(e).__name__}: {e})") from e
    missing = [r.path for r in train + query + gallery if not Path(r.path).is_file()]
    if missing:
        raise DatasetError(f"{images}: {len(missing)} images listed in {path.name} are missing, "
                           f"e.g. {Path(missing[0]).name}")
    return ReIDData(f"cuhk03-{protocol}-{boxes}", str(root), relabel(train), query, gallery)


# --- one folder per identity -----------------------------------------------------------------------------
OWN_CAMERA = 1000  # a crop whose name gives no camera: image i of an identity is camera OWN_CAMERA + i


def known_cameras(records: Sequence[Record]) -> bool:
    """Whether every record's camera is a real one: not -1 (unknown) nor an OWN_CAMERA stand-in."""
    return all(0 <= r.camid < OWN_CAMERA for r in records)


def _folder_records(root: Path, pid_of: dict[str, int]) -> dict[int, list[Record]]:
    """Camera ids come from Market-style names (`_c3`) when present, else each image is its own camera (OWN_CAMERA
    + its place in the folder: the protocol then drops none of its identity's other crops as same-camera)."""
    by_pid: dict[int, list[Record]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = _images(d)
        if not files:
            continue
        pid = pid_of.setdefault(d.name, len(pid_of))
        for i, p in enumerate(files):
            m = re.search(r"_c(\d+)", p.stem)
            by_pid.setdefault(pid, []).append(Record(str(p), pid, int(m.group(1)) - 1 if m else OWN_CAMERA + i))
    return by_pid


def load_folders(root: Path, test_fraction: float = 0.2, seed: int = 0) -> ReIDData:
    """`root/<id>/*.jpg`, or `root/{train,query,gallery}/<id>/*.jpg` for a fixed split."""
    if (root / "train").is_dir() and (root / "query").is_dir() and (root / "gallery").is_dir():
        pid_of: dict[str, int] = {}
        parts = [_folder_records(root / s, pid_of) for s in ("train", "query", "gallery")]
        train, query, gallery = ([r for recs in part.values() for r in recs] for part in parts)
        return ReIDData("folders", str(root), relabel(train), query, gallery)
    data = _split_ids(_folder_records(root, {}), test_fraction, seed, one_query=True)
    data.name, data.root = "folders", str(root)
    return data


# --- entry point -----------------------------------------------------------------------------------------
def detect_layout(root: Path) -> str:
    if (root / "bounding_box_train").is_dir() and (root / "query").is_dir():
        return "market"
    if (root / "list_train.txt").exists() and (root / "list_query.txt").exists():
        return "msmt17"
    if _cuhk03_files(root) or _is_torchreid_cuhk03(root):
        return "cuhk03"
    if any(p.is_dir() and _images(p) for p in root.iterdir()) or (root / "train").is_dir():
        return "folders"
    raise DatasetError(f"{root}: no re-id dataset found; {LAYOUT_HELP}")


def load_dataset(root: str | Path, layout: str = "auto", seed: int = 0) -> ReIDData:
    """Parse any supported layout. Raises DatasetError (one line) for a wrong, missing or empty folder."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; {LAYOUT_HELP}")
    layout = detect_layout(root) if layout == "auto" else layout
    loaders = {
        "market": lambda: load_market(root),
        "duke": lambda: load_market(root),
        "msmt17": lambda: load_msmt17(root),
        **{name: (lambda v=v: load_cuhk03_splits(root, *v)) for name, v in CUHK03_VARIANTS.items()},
        # plain "cuhk03" (listed last so it wins): torchreid's folder when present, else NNNN_KK files
        "cuhk03": lambda: (load_cuhk03_splits(root) if _is_torchreid_cuhk03(root)
                           else load_cuhk03(root, _cuhk03_files(root), seed=seed)),
        "folders": lambda: load_folders(root, seed=seed),
    }
    if layout not in loaders:
        raise DatasetError(f"unknown layout {layout!r}; choose from auto, {', '.join(loaders)}")
    try:
        data = loaders[layout]()
    except DatasetError:
        raise  # already one line naming the file at fault
    except (OSError, ValueError, IndexError) as e:
        raise DatasetError(f"{root}: could not parse as {layout} ({e}); {LAYOUT_HELP}") from e
    if not data.train and not data.query:
        raise DatasetError(f"{root}: no images found for layout {layout}; {LAYOUT_HELP}")
    return data


def combine(datasets: list[ReIDData]) -> ReIDData:
    """Joint training on several datasets: their training identities are kept apart (each dataset's pids are
    offset past the previous ones, so person 1 of Market and person 1 of CUHK03 stay two people); query and
    gallery are the first dataset's, so the evaluation stays that dataset's standard protocol."""
    if len(datasets) == 1:
        return datasets[0]
    train, offset = [], 0
    for d in datasets:
        train += [Record(r.path, r.pid + offset, r.camid) for r in d.train]
        offset += max((r.pid for r in d.train), default=-1) + 1
    first = datasets[0]
    return ReIDData("+".join(d.name for d in datasets), first.root, train, first.query, first.gallery)
