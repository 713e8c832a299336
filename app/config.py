"""One settings object for the whole app, read from CONVSCOPE_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from platformdirs import user_data_dir
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Runtime configuration. Every field can be set as CONVSCOPE_<FIELD> in the environment."""

    model_config = SettingsConfigDict(env_prefix="CONVSCOPE_", protected_namespaces=())

    data_dir: Path = Field(default_factory=lambda: Path(user_data_dir("convscope")))
    templates_dir: Path = PROJECT_ROOT / "templates"
    static_dir: Path = PROJECT_ROOT / "static"
    builtin_models_dir: Path = PROJECT_ROOT / "models"

    # Upload limits: bytes on the wire, decoded pixels (decompression bombs), and decode time.
    max_upload_bytes: int = 32 * 1024 * 1024
    max_image_pixels: int = 36_000_000
    max_decode_seconds: float = 20.0
    # Uploaded model weights (.safetensors) can be larger than images.
    max_model_bytes: int = 256 * 1024 * 1024

    # Models: how many stay loaded at once, which one pages open with when nothing is chosen.
    model_cache_size: int = 4
    default_model: str = "nodule-cnn"
    # torchvision downloads run as jobs with this limit; offline classrooms never wait longer.
    download_timeout_seconds: float = 120.0
    # Worker threads for long jobs (occlusion, Score-CAM, downloads, training).
    job_workers: int = 2
    # Finished jobs are forgotten after this many seconds.
    job_ttl_seconds: float = 3600.0
    # Torch intra-op threads; 0 keeps torch's default.
    torch_threads: int = 0

    def ensure_dirs(self) -> None:
        """Create the data directory and its sub-folders."""
        for sub in ("images", "tmp"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own Settings instead)."""
    return Settings()
