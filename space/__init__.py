"""The Space: what a public demo needs beyond the library, and the app's tabs. reid_core knows nothing of visitors;
app.py assembles the page from the tabs' layout functions and launches it.

- `host`: what every tab shares (settings, the model, the fair lane, the galleries' sessions, output pictures);
- `requests`: one request's plumbing (who asks, what they uploaded, their turn, a mistake said in one line);
- `compare`, `search`, `videos`, `curves`, `model_card`: one tab each, its handlers and its `build_*_tab` layout;
- `sessions`: private galleries per browser session, bounded per client and in total, in memory and on disk;
- `fair`: the model's work taken in turn across clients, so one cannot stall the others;
- `params`: endpoint parameters checked (type, range, finite) and user strings made text.
"""
