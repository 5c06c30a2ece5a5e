"""cnn-ocr-app: handwritten-digit OCR with a tracked, versioned ML lifecycle."""

__version__ = "0.1.0"
