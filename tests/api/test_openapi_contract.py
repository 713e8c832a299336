"""The OpenAPI schema tells the truth (issue 9, defect 11).

- Every documented error of /api/v1 has the app's error body, and binary answers have their media types.
- Strict request fields: JSON false is not 0, 0 is not false, "2" is not 2.
- Schemathesis runs every /api/v1 operation in-process against the schema (a bounded number of examples,
  reproducible) and finds no 5xx, no undocumented status, no wrong content type and no body off its schema.
"""

from __future__ import annotations

import copy
import io
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from PIL import Image
from schemathesis import GenerationMode
from schemathesis import checks as st_checks
from schemathesis.python import asgi

from app.config import Settings
from app.main import create_app

API = "/api/v1"
BUILTINS = ("digit-cnn", "nodule-cnn")
MISSING_IMAGE = "0" * 64
MISSING_MODEL = "no-such-model"
BINARY_ROUTES = {
    ("get", "/api/v1/images/{image_id}/pixels"),
    ("get", "/api/v1/predict/input"),
    ("get", "/api/v1/jobs/{job_id}/artifacts/{name}"),
    ("get", "/api/v1/models/{name}/filters"),
    ("post", "/api/v1/features"),
    ("post", "/api/v1/receptive-field"),
    ("post", "/api/v1/explain/cam"),
    ("post", "/api/v1/filter"),
}


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _rgb() -> np.ndarray:
    yy, xx = np.mgrid[0:48, 0:40]
    rgb = np.stack([xx * 5, yy * 5, np.full_like(xx, 90)], axis=2).astype(np.uint8)
    rgb[12:30, 10:28] = 250
    return rgb


def _api_operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in schema["paths"].items():
        if path.startswith(API):
            for method, operation in operations.items():
                yield method, path, operation


# --- the schema itself ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    application = create_app(Settings(data_dir=tmp_path_factory.mktemp("schema-data")))
    return application.openapi()


def test_every_api_error_is_documented_with_the_error_body(openapi: dict[str, Any]) -> None:
    error_ref = "#/components/schemas/ErrorResponse"
    for method, path, operation in _api_operations(openapi):
        responses = operation["responses"]
        # The security middleware can refuse any request (bad Host, missing token, foreign Origin).
        assert {"400", "401", "403"} <= set(responses), (method, path)
        if operation.get("parameters") or operation.get("requestBody"):
            assert "422" in responses, (method, path)
        for status, response in responses.items():
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": error_ref}, (method, path, status)
        if "503" in responses:
            assert "Retry-After" in responses["503"]["headers"], (method, path)
    error = openapi["components"]["schemas"]["ErrorOut"]
    assert {"code", "message", "field"} <= set(error["required"])


def test_statuses_where_they_happen(openapi: dict[str, Any]) -> None:
    def statuses(method: str, path: str) -> set[str]:
        return set(openapi["paths"][path][method]["responses"])

    assert {"404", "409", "413", "422"} <= statuses("post", "/api/v1/predict")
    assert {"413", "415", "422", "507"} <= statuses("post", "/api/v1/images")
    assert {"413", "415", "422", "507"} <= statuses("post", "/api/v1/models")
    for path in ("/api/v1/explain/occlusion", "/api/v1/explain/cam", "/api/v1/explain/compare"):
        assert {"404", "409", "413", "422", "503"} <= statuses("post", path), path
    assert {"404", "503"} <= statuses("post", "/api/v1/models/{name}/weights/download")
    assert "404" in statuses("get", "/api/v1/jobs/{job_id}")
    assert "404" in statuses("get", "/api/v1/images/{image_id}")


def test_binary_answers_have_their_media_types(openapi: dict[str, Any]) -> None:
    for method, path in BINARY_ROUTES:
        content = openapi["paths"][path][method]["responses"]["200"]["content"]
        assert {"image/png", "application/octet-stream"} <= set(content), (method, path)
    # The model input is only ever a PNG or .npy: no JSON promised.
    assert (
        "application/json"
        not in (openapi["paths"]["/api/v1/predict/input"]["get"]["responses"]["200"]["content"])
    )


# --- strict request fields ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        ("/explain/occlusion/patch", {"y": 3, "x": False}),
        ("/explain/occlusion/patch", {"y": "3", "x": 4}),
        ("/explain/occlusion/patch", {"y": 3.0, "x": 4}),
        ("/explain/occlusion/patch", {"y": 3, "x": 4, "k": True}),
        ("/explain/occlusion/patch", {"y": 3, "x": 4, "target": "1"}),
        ("/explain/compare", {"methods": ["gradcam"], "images": 0}),
        ("/explain/compare", {"methods": ["gradcam"], "steps": "8"}),
        ("/explain/cam", {"format": "json", "opacity": True}),
        ("/explain/cam", {"format": "json", "k": "3"}),
        ("/predict", {"k": False}),
        ("/predict", {"k": "2"}),
        ("/features", {"overlay": 1}),
        ("/features", {"per_page": "4"}),
        ("/receptive-field", {"layer": "features.0", "y": False, "x": 0}),
        ("/receptive-field", {"layer": "features.0", "y": 0, "x": "0"}),
    ],
)
def test_strict_fields_refuse_lookalikes(
    client: TestClient, sample_image_id: str, path: str, extra: dict[str, Any]
) -> None:
    body = {"image_id": sample_image_id, "model": "digit-cnn", **extra}
    response = client.post(API + path, json=body)
    assert response.status_code == 422, (path, extra, response.status_code, response.text[:300])
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["field"] in extra


def test_strict_fields_still_take_the_real_types(client: TestClient, sample_image_id: str) -> None:
    base = {"image_id": sample_image_id, "model": "digit-cnn"}
    assert client.post(f"{API}/predict", json={**base, "k": 2}).status_code == 200
    patch = client.post(f"{API}/explain/occlusion/patch", json={**base, "y": 3, "x": 4, "target": 1})
    assert patch.status_code == 200, patch.text
    # Floats take integers (1 is a fine opacity); the booleans take JSON true/false.
    cam = client.post(f"{API}/explain/cam", json={**base, "format": "json", "opacity": 1})
    assert cam.status_code == 200, cam.text
    features = client.post(f"{API}/features", json={**base, "overlay": False, "per_page": 4})
    assert features.status_code == 200, features.text


def test_non_finite_floats_are_refused(client: TestClient, sample_image_id: str) -> None:
    # json.loads accepts NaN and Infinity; they must not reach the colour scale.
    response = client.post(
        f"{API}/features",
        content=f'{{"image_id": "{sample_image_id}", "model": "digit-cnn", "vmin": NaN}}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "vmin"


# --- schemathesis ----------------------------------------------------------------------------------------------

# Operations bounded here, and why:
# - every model is a tiny built-in (digit-cnn 28x28, nodule-cnn 128x128) or an unknown name: the zoo's
#   large networks are the zoo walk's business, and would make each example cost seconds;
# - ids (images, jobs) are real ones or one missing id, so requests reach the code behind the 404;
# - jobs (occlusion, slow CAM methods, compare, weight downloads) run for real, but on the tiny models; the
#   per-client queue limit answers 503 when they pile up, which is documented;
# - weight downloads cannot reach the network (tests refuse outside connections): the job fails, fast.
MAX_EXAMPLES = 25
# Each compare runs up to nine CAM methods plus deletion/insertion curves of up to 100 steps.
FEWER_EXAMPLES = {"POST /api/v1/explain/compare": 10}
# Operations whose generated requests (almost) never succeed: random matrices, kernels and architecture
# files fail validation (so does a random training `architecture`, and `model` must be one trained here). They are
# still checked for 5xx and for schema conformance of their refusals.
NO_SUCCESS_EXPECTED = {
    "POST /api/v1/convolve",
    "POST /api/v1/filter",
    "POST /api/v1/models",
    "POST /api/v1/train",
}
NEGATIVE_EXAMPLES = 15


def _narrow(schema: dict[str, Any], field: str, values: list[Any]) -> dict[str, Any]:
    """A copy of a string (or nullable string) schema whose values are `values` (plus null where allowed)."""
    nullable = any(option.get("type") == "null" for option in schema.get("anyOf", []))
    narrowed: dict[str, Any] = {"enum": [*values, None] if nullable else list(values)}
    for key in ("title", "description", "default"):
        if key in schema:
            narrowed[key] = schema[key]
    return narrowed


def _homogeneous_tuples(node: Any) -> None:
    """`prefixItems` of one repeated type (e.g. ModelInfo.input_size) as `items`, min/maxItems kept.

    The same set of valid documents; needed because schemathesis 4.32 rewrites prefixItems into an `items`
    array when it validates a response and then rejects its own rewrite as an invalid 3.1 schema.
    """
    if isinstance(node, dict):
        prefix = node.get("prefixItems")
        if isinstance(prefix, list) and prefix and all(item == prefix[0] for item in prefix):
            node["items"] = node.pop("prefixItems")[0]
        for value in node.values():
            _homogeneous_tuples(value)
    elif isinstance(node, list):
        for value in node:
            _homogeneous_tuples(value)


def narrowed_schema(
    raw: dict[str, Any],
    choices: dict[str, list[Any]],
    artifacts: list[str],
    maxima: dict[str, int],
) -> dict[str, Any]:
    """The app's schema, /api/v1 only, with ids and names narrowed to real ones (plus a missing one each),
    and unit coordinates capped (`maxima`) so that most requests land inside the layer's grid.

    Only request parameters and request bodies change; every response stays as the app documents it.
    """
    schema = copy.deepcopy(raw)
    schema["paths"] = {p: ops for p, ops in schema["paths"].items() if p.startswith(API)}
    _homogeneous_tuples(schema)
    request_components: set[str] = set()
    for _, path, operation in _api_operations(schema):
        # `name` is a model in /models/{name}/..., an artifact in /jobs/{job_id}/artifacts/{name}.
        local = {**choices, "name": artifacts} if path.startswith(API + "/jobs") else choices
        for parameter in operation.get("parameters", []):
            if parameter["name"] in local:
                parameter["schema"] = _narrow(
                    parameter["schema"], parameter["name"], local[parameter["name"]]
                )
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body and "$ref" in body["schema"]:
            request_components.add(body["schema"]["$ref"].rsplit("/", 1)[-1])
    components = schema["components"]["schemas"]
    for name in request_components:
        properties = components[name].get("properties", {})
        for field, values in choices.items():
            if field in properties:
                properties[field] = _narrow(properties[field], field, values)
        for field, maximum in maxima.items():
            if properties.get(field, {}).get("type") == "integer":
                properties[field]["maximum"] = maximum
        if "methods" in properties and "method" in choices:
            properties["methods"]["items"] = {"enum": choices["method"]}
    return schema


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, Any]]:
    """The narrowed schema bound to an app on a temp data dir, with real images, models, layers and a job."""
    data_dir: Path = tmp_path_factory.mktemp("contract-data")
    # Queue caps out of the way: schemathesis starts hundreds of jobs from one client, and a 503 is a "server
    # error" to it even when documented (the caps' 503 + Retry-After is tested in tests/limits/test_job_limits.py).
    application = create_app(
        Settings(
            data_dir=data_dir,
            model_cache_size=4,
            job_workers=1,
            max_queued_jobs=100_000,
            max_queued_jobs_per_client=100_000,
        )
    )
    # The app's lifespan runs for the whole module (a TestClient held open); schemathesis reaches the app
    # through an ASGI session that is not "entered", so its pytest plugin, which ends the lifespans it
    # started after every test, leaves this one (and the job made here) alone.
    with TestClient(application) as client:
        image_ids = []
        for name, pixels in (("square.png", _rgb()), ("grey.png", _rgb()[..., 0].copy())):
            uploaded = client.post(API + "/images", files={"file": (name, _png(pixels), "image/png")})
            assert uploaded.status_code == 201, uploaded.text
            image_ids.append(uploaded.json()["id"])
        # One sample too (another size and source).
        image_ids.append(client.get(API + "/samples").json()["images"][0]["id"])
        layers: set[str] = set()
        for model in BUILTINS:
            rows = client.get(f"{API}/models/{model}/layers").json()["layers"]
            layers.update(row["name"] for row in rows)
        methods = [m["key"] for m in client.get(API + "/explain/methods").json()]
        # The first model listing reads torchvision's registry (seconds); do it once outside the examples.
        assert client.get(API + "/models").status_code == 200
        job = client.post(
            API + "/explain/occlusion",
            json={"image_id": image_ids[0], "model": "digit-cnn", "window": 8, "stride": 8},
        )
        assert job.status_code == 202, job.text
        job_id = job.json()["job_id"]
        deadline = time.monotonic() + 60
        while client.get(f"{API}/jobs/{job_id}").json()["status"] not in ("done", "failed", "cancelled"):
            assert time.monotonic() < deadline, "the setup job did not finish"
            time.sleep(0.05)
        artifacts = client.get(f"{API}/jobs/{job_id}").json()["artifacts"]
        choices: dict[str, list[Any]] = {
            "image_id": [*image_ids, MISSING_IMAGE],
            "model": [*BUILTINS, MISSING_MODEL],
            "name": [*BUILTINS, MISSING_MODEL],
            "layer": [*sorted(layers - {""}), "no.such.layer"],
            "method": [*methods, "no-such-method"],
            "job_id": [job_id, "no-such-job"],
        }
        maxima = {"y": 31, "x": 31}
        narrowed = narrowed_schema(application.openapi(), choices, [*artifacts, "no-such-artifact"], maxima)
        loaded = schemathesis.openapi.from_dict(narrowed)
        loaded.app = application
        # Negative examples break the app's own schema, not the maxima above: they only keep positive (y, x)
        # inside the smallest input, and y = 32 is a valid row of a 128-px model (issue 10: found by a new field).
        wide = schemathesis.openapi.from_dict(
            narrowed_schema(application.openapi(), choices, [*artifacts, "no-such-artifact"], {})
        )
        wide.app = application
        yield loaded, asgi.get_client(application), wide


CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    st_checks.response_headers_conformance,
]


def _operation_labels() -> list[str]:
    # Only the paths are needed at collection: an app that is never started (no data directory is touched).
    raw = create_app(Settings(data_dir=Path("/nonexistent-convscope-data"))).openapi()
    return [f"{method.upper()} {path}" for method, path, _ in _api_operations(raw)]


# One pytest test per operation (schemathesis' lazy pytest loader does not run under pytest 9, so the
# operations are driven through their Hypothesis strategies directly).
@pytest.mark.slow
@pytest.mark.parametrize("label", _operation_labels())
def test_api_conforms_to_its_schema(api_schema: tuple[Any, Any, Any], label: str) -> None:
    loaded, session, _ = api_schema
    operation = loaded.find_operation_by_label(label)
    assert operation is not None, label
    statuses: list[int] = []

    @settings(
        max_examples=FEWER_EXAMPLES.get(label, MAX_EXAMPLES),
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        # A generous read timeout: the machine is shared, and correctness (not speed) is checked here.
        response = case.call_and_validate(session=session, checks=CHECKS, timeout=120)
        statuses.append(response.status_code)

    run()
    print(label, sorted(Counter(statuses).items()))
    # The examples reach the code behind validation and lookups, not only the 404s and 422s.
    if label not in NO_SUCCESS_EXPECTED:
        assert any(200 <= status < 300 for status in statuses), (label, Counter(statuses))


# Requests that break the schema (wrong types, out of range, missing fields, malformed JSON) are refused with
# a documented 4xx and the error body, never a 5xx. Limited to the JSON bodies with strict models here.
# (Schemathesis forgives type mutations that its own serialisation could make valid, so lookalikes such as
# "2" for 2 or 0 for false are pinned by test_strict_fields_refuse_lookalikes above.)
STRICT_BODIES = [
    "POST /api/v1/predict",
    "POST /api/v1/explain/cam",
    "POST /api/v1/explain/occlusion",
    "POST /api/v1/explain/occlusion/patch",
    "POST /api/v1/explain/compare",
    "POST /api/v1/features",
    "POST /api/v1/receptive-field",
]


@pytest.mark.slow
@pytest.mark.parametrize("label", STRICT_BODIES)
def test_api_refuses_what_its_schema_does_not_allow(api_schema: tuple[Any, Any, Any], label: str) -> None:
    _, session, loaded = api_schema
    operation = loaded.find_operation_by_label(label)
    assert operation is not None, label
    statuses: list[int] = []

    @settings(
        max_examples=NEGATIVE_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    def run(case: Any) -> None:
        response = case.call_and_validate(
            session=session, checks=[*CHECKS, st_checks.negative_data_rejection], timeout=120
        )
        statuses.append(response.status_code)

    run()
    print(label, sorted(Counter(statuses).items()))


def test_the_schema_documents_the_api_only(openapi: dict[str, Any]) -> None:
    """Pages and partials answer HTML with form bodies: listing them with a bare 200 told less than the truth (QA)."""
    assert openapi["paths"], "no paths at all"
    assert all(path.startswith("/api/v1/") for path in openapi["paths"]), [
        p for p in openapi["paths"] if not p.startswith("/api/v1/")
    ]
