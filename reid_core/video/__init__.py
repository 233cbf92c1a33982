"""From footage to people: decode a video (or a folder of frames), detect people, track them within the video.

Light on purpose: importing `reid_core.video` loads nothing heavy (no OpenCV, no ONNX Runtime); import the module
you need (`reid_core.video.frames`, `.tracker`, `.detector`). DESIGN.md says
which module holds what.
"""
