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
    # Pictures on pages (feature-map tiles, filters, heatmaps, overlays) are served by URL (/pictures/<key>.png),
    # rendered on first request: the rendered PNGs and the arrays waiting to be rendered are each kept in an LRU
    # bounded in bytes. A picture evicted before the browser asked for it answers 404 and the page says reload.
    picture_cache_bytes: int = 64 * 1024 * 1024
    picture_pending_bytes: int = 64 * 1024 * 1024
    # Explanations: traced layer lists (one per model, weights and input shape) and forward MACs per model, in LRUs
    # of at most this many entries (a layer list is a few kB; a MACs figure a few bytes).
    explain_layer_cache_entries: int = 16
    explain_macs_cache_entries: int = 512
    # Decoded images (float32 working copies) kept in memory, and their full-resolution statistics: LRUs in bytes.
    image_cache_bytes: int = 256 * 1024 * 1024
    image_stats_cache_bytes: int = 2 * 1024 * 1024
    # ... and at most this many bytes of their weights (VGG-19 is 548 MiB, ResNet-50 98 MiB); the least recently
    # used go first. Building a zoo model costs its weights once (up to max_zoo_parameters x 4 bytes).
    max_loaded_model_bytes: int = 1536 * 1024 * 1024
    default_model: str = "nodule-cnn"
    # torchvision downloads run as jobs with this limit; offline classrooms never wait longer.
    download_timeout_seconds: float = 120.0
    # Worker threads for long jobs (occlusion, Score-CAM, downloads, training).
    job_workers: int = 2
    # Finished jobs are forgotten after this many seconds.
    job_ttl_seconds: float = 3600.0
    # Torch intra-op threads; 0 keeps torch's default.
    torch_threads: int = 0

    # --- What one request may cost (issue 9). Each limit is checked from the input *before* the work starts,
    # and a refusal names the limit (its setting) and the estimate that exceeded it.
    # Request bodies that are not file uploads (JSON): bytes read before parsing stops.
    max_body_bytes: int = 1024 * 1024
    # Uploaded images: the longer side may be at most this many times the shorter one.
    max_aspect_ratio: float = 50.0
    # Any single intermediate tensor built while preparing a model's input (elements, not bytes).
    max_preprocess_elements: int = 16_000_000
    # The filter lab: output values over all feature maps of one request, and numbers in a JSON answer.
    max_filter_output_values: int = 16_000_000
    max_json_values: int = 2_000_000
    # Images larger than this (longer side, px) are downsampled before filtering unless max_side says otherwise.
    filter_display_side: int = 1024
    # Uploaded (custom) models, computed from the description before anything is allocated.
    max_model_parameters: int = 60_000_000
    # float32 outputs of every layer for one image; the feature-map view peaks at about twice this (it copies
    # every output): measured +960 MiB for a model estimated at 483 MiB, hence 256 MiB rather than 512.
    max_model_activation_bytes: int = 256 * 1024 * 1024
    max_model_macs: int = 20_000_000_000
    # Jobs: estimated from the input (multiply-accumulates / assumed_macs_per_second) before queueing.
    # Measured on the 2-core reference machine (torch, 2 threads, batch 16, channels-last): ResNet-18 80,
    # VGG-19 50-80, DenseNet-121 55, AlexNet 67, ViT-B/16 22-34, MobileNet-v2 / EfficientNet-B0 17-20 GMAC/s.
    # 25 G is below every large network's figure, so the estimate of a long job errs long, not short.
    assumed_macs_per_second: float = 25e9
    max_job_seconds: float = 600.0
    max_queued_jobs: int = 16
    max_queued_jobs_per_client: int = 3
    # Jobs (defect 4): a job's forwards run in batches of about this many seconds of estimated work (at least
    # one image); cancellation and the time limit act between batches. Larger batches run faster (VGG-19 on
    # 2 cores: 1 image per forward is ~1.7x slower than 4) but answer DELETE later.
    job_batch_seconds: float = 1.0
    # Work a request would do inline (a comparison of fast CAM methods with its deletion/insertion curves) that is
    # estimated past this many seconds runs as a job instead (202 + progress + cancel), not in a request thread.
    max_request_seconds: float = 20.0
    # The model zoo: torchvision models past either limit are listed as unavailable (with the reason) and refused
    # before anything is built. Checked from the weights' metadata (parameters; torchvision's GFLOPS figure for
    # one image at the model's input size). The defaults keep every lecture milestone (VGG-19: 144 M, 19.6) and
    # leave out ConvNeXt-Large, EfficientNetV2-L, ViT-L/16, ViT-L/32, ViT-H/14 and RegNetY-128GF.
    max_zoo_parameters: int = 150_000_000
    max_zoo_gflops: float = 40.0

    # --- Training (issue 11): checked from the request before anything is generated or built.
    # Training jobs running or queued at once (the rest of the job workers stay free for the pages' jobs).
    max_training_jobs: int = 1
    max_train_epochs: int = 100
    max_train_batch_size: int = 512
    # Training + validation images, and their float32 bytes at the model's input size (held in memory).
    max_train_images: int = 20_000
    max_train_dataset_bytes: int = 256 * 1024 * 1024
    # One batch's activations (per-image estimate x batch size x 3: outputs, their gradients, the optimiser's).
    max_train_batch_activation_bytes: int = 1024 * 1024 * 1024
    # Training runs far below the forward-pass figure above (small layers, backward pass, optimiser step):
    # measured 1.3 G (digits CNN, 290 k MACs an image, 1 thread, ~1500 images/s with backward = 3 forwards).
    training_macs_per_second: float = 1e9

    # --- Web hardening.
    # Host headers accepted (DNS rebinding): loopback by default; add the server's name when exposing it.
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost", "[::1]", "::1", "testserver"]
    )
    # When set, every /api request and every upload must carry it (Authorization: Bearer <token>, or the
    # convscope_token cookie that /login sets). Required when serving beyond loopback unless allow_open is true.
    access_token: str | None = None
    allow_open: bool = False
    # Behind a reverse proxy that sets X-Forwarded-For: take the client address from it (the per-client job cap
    # counts by address). Off by default: without a proxy, anyone could claim any address with that header.
    trust_proxy: bool = False

    # --- The filter lab (issue 9, defect 2): estimated peak bytes of one /api/v1/filter or /filters request
    # (image, planes, padded input, conv2d bands, maps, and the answer's encoding), checked before decoding.
    max_filter_working_bytes: int = 200 * 1024 * 1024

    # --- Large images (issue 9): models, explanations, network views, thumbnails and display PNGs work on a
    # copy whose longer side is at most working_image_side (area-averaged while decoding; every model's input
    # is 518 px or less), and a full-resolution .npy download may hold at most max_npy_values numbers
    # (float32: 4 bytes each); past it the answer is 422 and names the max_side query parameter.
    working_image_side: int = 2048
    max_npy_values: int = 16_000_000

    def ensure_dirs(self) -> None:
        """Create the data directory and its sub-folders; a clear error when that is impossible.

        Folders that exist already are fine even when read-only (the image store then serves read-only).
        """
        for sub in ("images", "tmp"):
            try:
                (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RuntimeError(
                    f"The data directory {self.data_dir} cannot be used: cannot create {sub}/ ({exc.strerror}). "
                    "Set CONVSCOPE_DATA_DIR to a folder ConvScope can write to, or fix its permissions."
                ) from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own Settings instead)."""
    return Settings()
