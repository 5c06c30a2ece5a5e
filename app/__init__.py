"""The OCR web service: FastAPI app, model store, routes, metrics and the draw-a-digit page."""
