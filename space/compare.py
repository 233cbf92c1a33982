"""The Compare tab: two crops -> the library's verdict (Comparison.verdict), the scores, and a picture of which
horizontal stripes match. Endpoint /compare."""

from __future__ import annotations

from typing import Any

import gradio as gr
from PIL import Image

from reid_core import ImageError, parts_picture, person_warning

from .host import Host
from .requests import RAW, note, upload

# real Market-1501 test crops (examples/README.md): same person across cameras, and different people; the shipped
# weights answer every pair right (tests/test_app.py), as examples/make_examples.py checked when it chose them
EXAMPLE_PAIRS = [("person-A_c1.png", "person-A_c2.png"), ("person-A_c1.png", "person-B_c1.png"),
                 ("person-D_c3.png", "person-D_c2.png"), ("person-C_c1.png", "person-F_c3.png"),
                 ("person-E_c1.png", "person-E_c3.png"), ("person-B_c2.png", "person-E_c2.png")]


def image_input(label: str, elem_id: str, height: int) -> gr.Image:
    """A crop's upload box (Compare's two, Search's query): a file path, judged by the handler, not by Gradio."""
    return gr.Image(label=label, type="filepath", image_mode=None, height=height, elem_id=elem_id, min_width=140)


class Compare:
    """The tab's handlers (layout: build_compare_tab)."""

    def __init__(self, host: Host):
        self.host = host

    def compare(self, a: Any, b: Any, request: gr.Request | None = None) -> tuple[float, str, float, str]:
        """(pair score, verdict, cosine, parts picture) for two crops: the /compare endpoint, whose caller gets
        a one-line error for a missing or unusable image."""
        self.host.require_model()
        with self.host.work(request) as turn, turn():
            (ia, _), (ib, _) = self.host.image(a, "the first image"), self.host.image(b, "the second image")
            return self.explained(ia, ib)

    def explained(self, ia: Image.Image, ib: Image.Image) -> tuple[float, str, float, str]:
        """One backbone pass over both crops (ReID.compare_parts): the verdict and the stripe picture saying why."""
        c, parts = self.host.reid.compare_parts(ia, ib)
        verdict = c.verdict  # the library's sentence: a probability only where the weights are calibrated
        doubts = [f"{who} {why}" for who, img in (("Person A", ia), ("Person B", ib)) if (why := person_warning(img))]
        if doubts:
            verdict += ". Warning: " + "; ".join(doubts) + ", so this verdict means little."
        return round(c.score, 4), verdict, round(c.cosine, 4), self.host.picture_file(parts_picture(ia, ib, parts))

    def compare_view(self, a: Any, b: Any, note_a: str = "", note_b: str = "", request: gr.Request | None = None,
                     ) -> tuple[Any, ...]:
        """The Compare button: compare's outputs, then a note under each input. A user's mistake (no image, an
        unreadable one) is said in the note of the input it concerns and stays there until that input changes
        (an input emptied because its file was unreadable keeps saying why); the outputs are emptied (no stale
        verdict, no error badge on them, no toast that closes by itself)."""
        if self.host.reid is None:
            return None, f"⚠️ {self.host.error}", None, None, "", ""
        with self.host.work(request) as turn, turn():
            crops, notes = [], []
            for payload, who, old in ((a, "Person A", note_a), (b, "Person B", note_b)):
                try:
                    crops.append(self.host.read_upload(payload, f"an image of {who}")[0])
                    notes.append("")
                except ImageError as e:
                    said = note(e)
                    kept = isinstance(old, str) and len(old) < 1000 and upload(payload) is None
                    notes.append(old if old and kept else said)
            if any(notes):
                return None, "", None, None, *notes
            return *self.explained(*crops), "", ""

    def compare_input(self, payload: Any, request: gr.Request | None = None) -> tuple[Any, ...]:
        """A Compare input changed: the old verdict goes, and the input is checked (Host.checked_input)."""
        return *self.host.checked_input(payload, request), None, "", None, None


def build_compare_tab(compare: Compare, examples: dict[str, str]) -> None:
    """The tab's layout, inside the app's gr.Tabs; `examples`: example crops by file name."""
    reid, model = compare.host.reid, compare.host.model_events
    with gr.Tab("Compare"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=280):
                with gr.Row():
                    with gr.Column(min_width=140):
                        img_a = image_input("Person A", "img-a", 300)
                        note_a = gr.Markdown(elem_id="note-a", elem_classes="input-note")
                    with gr.Column(min_width=140):
                        img_b = image_input("Person B", "img-b", 300)
                        note_b = gr.Markdown(elem_id="note-b", elem_classes="input-note")
                compare_btn = gr.Button("Compare", variant="primary", elem_id="compare-btn")
            with gr.Column(scale=2, min_width=280):
                verdict = gr.Textbox(label="Verdict", elem_id="verdict", interactive=False, lines=2)
                with gr.Row():
                    # text fields, empty until a comparison: an empty gr.Number shows a 0, which reads as
                    # a result (the API's /compare gives numbers, through the hidden fields below)
                    prob = gr.Textbox(label="Same-person probability" if reid and reid.calibration
                                      else "Pair score (not a probability)", interactive=False, max_lines=1,
                                      min_width=120, placeholder="—", elem_id="score")
                    cos = gr.Textbox(label="Cosine similarity", interactive=False, max_lines=1, min_width=120,
                                     placeholder="—", elem_id="cosine")
                gr.Markdown("**Which parts match**: each bar says how alike the two crops are in one "
                            "horizontal stripe, head to feet (cosine of the stripe's features).",
                            elem_id="parts-help")
                parts = gr.Image(label="Which parts match", show_label=False, type="filepath",
                                 interactive=False, buttons=[], height=240, elem_id="parts")
        pairs = [(a, b) for a, b in EXAMPLE_PAIRS if a in examples and b in examples]
        if pairs:
            gr.Examples([[examples[a], examples[b]] for a, b in pairs], [img_a, img_b],
                        label="Example pairs (real crops from Market-1501's test split)",
                        elem_id="compare-examples")
        compare_out = [prob, verdict, cos, parts]
        compare_btn.click(compare.compare_view, [img_a, img_b, note_a, note_b], [*compare_out, note_a, note_b],
                          api_visibility="private", **model, **RAW)
        # /compare for API clients, who get a one-line error instead of the notes (no button on the page)
        api_numbers = [gr.Number(visible=False, precision=4) for _ in range(2)]
        gr.Button(visible=False).click(compare.compare, [img_a, img_b],
                                       [api_numbers[0], verdict, api_numbers[1], parts], api_name="compare",
                                       **model, **RAW)
        for img, note_box in ((img_a, note_a), (img_b, note_b)):  # a new input: no verdict of the old ones
            img.change(compare.compare_input, img, [img, note_box, *compare_out], api_visibility="private",
                       show_progress="hidden", **model, **RAW)
