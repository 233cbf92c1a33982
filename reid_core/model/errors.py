"""One-line errors shared by modules that must not import each other (a weights file is read by the model
and found by the offline-ImageNet lookup)."""


class WeightsError(ValueError):
    """A weights file that cannot be used; one line that names the file and the reason."""
