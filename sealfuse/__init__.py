"""sealfuse: an air-gapped face-swap appliance."""

__version__ = "0.1.0"
