"""What a public Space needs beyond the library: each visitor's gallery and share of the server, work taken in
turn, and every parameter checked. app.py wires these to Gradio; reid_core knows nothing of visitors.

- `sessions`: private galleries per browser session, bounded per client and in total, in memory and on disk;
- `fair`: the model's work taken in turn across clients, so one cannot stall the others;
- `params`: endpoint parameters checked (type, range, finite) and user strings made text.
"""
