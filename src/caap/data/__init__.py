"""Images and datasets: image files, folders with labels and masks, the controlled-evidence generator."""

from caap.data import datasets, images, synthetic
from caap.data.datasets import ImageFolder, Item, Subset, Synthetic
from caap.data.images import load_image

__all__ = ["ImageFolder", "Item", "Subset", "Synthetic", "datasets", "images", "load_image", "synthetic"]
