"""Draw synthetic pedestrian crops for the app's examples: no real people, no dataset licence.

Each identity has fixed hair/skin/shirt/trouser colours (and maybe a bag); each camera changes the
background, lighting and pose a little. Names say who and which camera (`person-A_c1.png`) so the app can
mark right/wrong matches, with text ids that never equal a real dataset's numeric ids (a Market `0001_c1...`
name would count real person 0001 as a match). Run: python examples/make_examples.py  (writes examples/people/)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

SIZE = (80, 160)  # width, height: the 1:2 aspect of pedestrian crops
PEOPLE = {  # pid: (hair, skin, shirt, trousers, bag)
    1: ((40, 30, 20), (224, 180, 150), (200, 40, 40), (40, 50, 90), None),
    2: ((20, 20, 20), (150, 105, 80), (40, 120, 200), (60, 60, 60), (120, 80, 30)),
    3: ((180, 140, 60), (235, 200, 170), (250, 220, 60), (30, 30, 30), None),
    4: ((90, 50, 30), (200, 150, 110), (40, 150, 70), (170, 150, 120), (30, 30, 30)),
    5: ((60, 60, 60), (110, 75, 55), (240, 240, 240), (90, 30, 90), None),
    6: ((130, 60, 20), (230, 190, 160), (230, 120, 30), (35, 80, 60), (150, 20, 20)),
}
BACKGROUNDS = {1: (175, 180, 170), 2: (120, 125, 135), 3: (200, 190, 160)}  # camera -> backdrop colour
LIGHT = {1: 1.0, 2: 0.8, 3: 1.15}


def draw_person(pid: int, cam: int, k: int = 0) -> Image.Image:
    """One crop of identity `pid` as seen by camera `cam`; `k` varies the pose slightly."""
    hair, skin, shirt, trousers, bag = PEOPLE[pid]
    rng = np.random.default_rng([pid, cam, k])
    w, h = SIZE
    img = Image.new("RGB", SIZE, BACKGROUNDS[cam])
    d = ImageDraw.Draw(img)
    d.rectangle([0, int(h * 0.85), w, h], fill=tuple(int(c * 0.8) for c in BACKGROUNDS[cam]))  # floor
    cx = w // 2 + int(rng.integers(-5, 6))
    stride = int(rng.integers(2, 8))
    d.ellipse([cx - 9, 8, cx + 9, 28], fill=skin)  # head
    d.chord([cx - 10, 5, cx + 10, 25], 180, 360, fill=hair)  # hair
    d.rounded_rectangle([cx - 16, 30, cx + 16, 84], radius=6, fill=shirt)  # torso
    d.rectangle([cx - 22, 34, cx - 16, 78], fill=shirt)  # arms
    d.rectangle([cx + 16, 34, cx + 22, 78], fill=shirt)
    d.ellipse([cx - 23, 76, cx - 15, 84], fill=skin)  # hands
    d.ellipse([cx + 15, 76, cx + 23, 84], fill=skin)
    d.polygon([(cx - 15, 84), (cx - 1, 84), (cx - 3 - stride, 146), (cx - 14 - stride, 146)], fill=trousers)
    d.polygon([(cx + 1, 84), (cx + 15, 84), (cx + 14 + stride, 146), (cx + 3 + stride, 146)], fill=trousers)
    d.rectangle([cx - 16 - stride, 146, cx - 3 - stride, 152], fill=(25, 25, 25))  # shoes
    d.rectangle([cx + 3 + stride, 146, cx + 16 + stride, 152], fill=(25, 25, 25))
    if bag:
        d.rounded_rectangle([cx + 12, 50, cx + 28, 74], radius=3, fill=bag)
        d.line([cx + 14, 50, cx - 8, 30], fill=bag, width=2)
    return ImageEnhance.Brightness(img).enhance(LIGHT[cam]).filter(ImageFilter.GaussianBlur(0.6))


def example_name(pid: int, cam: int) -> str:
    return f"person-{chr(ord('A') + pid - 1)}_c{cam}.png"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "people"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for pid in PEOPLE:
        for cam in BACKGROUNDS:
            draw_person(pid, cam).save(out / example_name(pid, cam), optimize=True)
    print(f"wrote {len(PEOPLE) * len(BACKGROUNDS)} images to {out}")


if __name__ == "__main__":
    main()
