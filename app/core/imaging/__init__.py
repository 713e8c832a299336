"""Images in and pictures out: decoding, preprocessing for a model, synthetic images, rendering."""
