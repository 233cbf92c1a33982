"""What the app and the `plots` verb draw: Plotly figures of training logs and model curves, pictures of crops."""
