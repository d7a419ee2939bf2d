"""Build and sign bundles on a connected host."""
