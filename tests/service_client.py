"""Clients of the service for tests: an in-process app on the real components, and the error-shape check."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def make_client(tmp_path: Path, model_dir: Path, **overrides) -> TestClient:
    """A TestClient on the real app serving `model_dir`, its feedback store in `tmp_path`, admin token `TOKEN`."""
    from app.main import create_app
    from app.settings import Settings

    values = {"model_path": model_dir, "feedback_db": tmp_path / "feedback.db", "reload_interval_s": 0,
              "admin_token": TOKEN, **overrides}
    return TestClient(create_app(Settings(**values)), raise_server_exceptions=False)


def assert_error(response, status: int) -> str:
    """Check the one-line JSON error shape with `status`; return its detail."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["detail"] and isinstance(body["detail"], str) and body["detail"]
    assert "Traceback" not in body["detail"] and "\n" not in body["detail"]
    return body["detail"]
