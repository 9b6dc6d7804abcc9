"""`vitkit serve`: the JSON API's statuses, its results against the offline pipeline's, micro-batching, the
queue limit, the body limit and static-file containment (FastAPI's TestClient; a real uvicorn on loopback
where a client library would get in the way)."""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from live_server import live_server, raw_request  # noqa: E402

import vitkit  # noqa: E402
from vitkit.cli.main import main  # noqa: E402
from vitkit.config import PreprocessConfig  # noqa: E402
from vitkit.errors import UsageError  # noqa: E402
from vitkit.models import VisionTransformer, ViTConfig  # noqa: E402
from vitkit.serve import ServeConfig, Service, create_app, load_service  # noqa: E402

LABELS = ("cat", "dog", "bird")


def png_bytes(h: int = 20, w: int = 24, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    """A tiny 3-class ViT classifier checkpoint."""
    cfg = ViTConfig(image_size=(16, 16), patch_size=4, num_classes=3, dim=32, depth=2, num_heads=2,
                    preprocess=PreprocessConfig(label_names=LABELS))
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "classifier"
    model = VisionTransformer(cfg)
    torch.nn.init.normal_(model.head.weight, std=0.5)  # a zero-initialised head scores every class alike
    vitkit.save_pretrained(model, path)
    return path


@pytest.fixture(scope="module")
def service(classifier) -> Service:
    return load_service(classifier, device="cpu", engine="torch")  # exact parity with the torch pipeline


def upload(client: TestClient, endpoint: str, image: bytes, **fields) -> object:
    return client.post(f"/v1/{endpoint}", files={"image": ("x.png", image, "image/png")},
                       data={k: str(v) for k, v in fields.items()})


def test_classify_equals_the_offline_pipeline(service, classifier, tmp_path):
    image = png_bytes()
    (tmp_path / "x.png").write_bytes(image)
    offline = vitkit.pipeline("image-classification", classifier, device="cpu")(tmp_path / "x.png", top_k=3)
    with TestClient(create_app(service)) as client:
        form = upload(client, "classify", image, top_k=3)
        as_json = client.post("/v1/classify", json={"image": base64.b64encode(image).decode(), "top_k": 3})
    for response in (form, as_json):
        assert response.status_code == 200, response.text
        body = response.json()
        assert [p["label"] for p in body["predictions"]] == [r["label"] for r in offline]
        assert [p["index"] for p in body["predictions"]] == [r["index"] for r in offline]
        np.testing.assert_allclose([p["score"] for p in body["predictions"]], [r["score"] for r in offline],
                                   rtol=0, atol=1e-6)
        assert body["latency_ms"] > 0 and body["options"] == {"top_k": 3}


def test_classify_on_onnx_equals_the_onnx_pipeline(classifier):
    """engine auto on the CPU: classify runs on onnxruntime, attention on torch; results equal the offline
    onnx pipeline's (1e-6) and the torch pipeline's (1e-4)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    image = png_bytes(seed=3)
    with TestClient(create_app(load_service(classifier, device="cpu"))) as client:
        info = client.get("/v1/model").json()
        body = upload(client, "classify", image, top_k=3).json()
        assert upload(client, "attention", image).status_code == 200
    assert info["engines"] == {"classify": "onnx", "attention": "torch"}
    got = body["predictions"]
    for engine, tol in (("onnx", 1e-6), ("torch", 1e-4)):
        pipe = vitkit.pipeline("image-classification", classifier, device="cpu", engine=engine)
        want = pipe(image, top_k=3)
        assert [p["index"] for p in got] == [r["index"] for r in want]
        np.testing.assert_allclose([p["score"] for p in got], [r["score"] for r in want], rtol=0, atol=tol)


def test_onnx_engine_mistakes_are_refused(classifier, monkeypatch):
    import sys

    with pytest.raises(UsageError, match="float32 only"):
        load_service(classifier, device="cpu", dtype="bfloat16", engine="onnx")
    assert load_service(classifier, device="cpu", dtype="bfloat16").info["engines"]["classify"] == "torch"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: refused, not left out
    with pytest.raises(UsageError, match=r"pip install 'vitkit\[onnx\]'"):
        load_service(classifier, device="cpu", engine="onnx")


def test_model_and_health(service):
    with TestClient(create_app(service)) as client:
        info = client.get("/v1/model").json()
        health = client.get("/healthz").json()
    assert info["labels"] == list(LABELS) and info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["endpoints"] == ["classify", "attention"] == health["endpoints"]
    assert info["engines"] == {"classify": "torch", "attention": "torch"} and info["engine"] == "torch"
    assert info["encoder"] == {"depth": 2, "num_heads": 2} and info["parameters"] > 0
    assert info["preprocessing"]["image_size"] == [16, 16]
    assert info["config"]["depth"] == 2 and info["config"]["patch_size"] == 4


def test_an_endpoint_the_model_lacks_is_a_404_naming_what_it_answers(service):
    with TestClient(create_app(service)) as client:
        depth = upload(client, "depth", png_bytes())
        unknown = upload(client, "nope", png_bytes())
        page = client.get("/nope")
    assert depth.status_code == 404 and "classify, attention" in depth.json()["error"]
    assert unknown.status_code == 404 and "no endpoint /v1/nope" in unknown.json()["error"]
    assert page.status_code == 404 and page.json() == {"error": "Not Found"}


@pytest.mark.parametrize(("fields", "says"), [
    ({"top_k": 0}, "top_k"), ({"top_k": "many"}, "top_k"), ({"topk": 2}, "topk: unknown option"),
])
def test_bad_options_are_422(service, fields, says):
    with TestClient(create_app(service)) as client:
        response = upload(client, "classify", png_bytes(), **fields)
    assert response.status_code == 422 and says in response.json()["error"]


@pytest.mark.parametrize(("fields", "says"), [
    ({"method": "heads"}, "method"), ({"method": "cls", "layer": 2}, "layer: 2 is out of range"),
    ({"head": 0}, "give them with method=cls"),
    ({"method": "cls", "layer": -3}, "out of range"),
    ({"method": "cls", "head": 2}, "head: 2 is out of range"),
])
def test_bad_attention_options_are_422(service, fields, says):
    with TestClient(create_app(service)) as client:
        response = upload(client, "attention", png_bytes(), **fields)
    assert response.status_code == 422 and says in response.json()["error"]


def test_bad_images_and_bodies_are_422(service):
    truncated = png_bytes(40, 40)[:200]
    with TestClient(create_app(service, ServeConfig(max_pixels=30 * 30))) as client:
        cases = {
            "not an image": upload(client, "classify", b"hello, not an image"),
            "truncated": upload(client, "classify", truncated),
            "empty": upload(client, "classify", b""),
            "too many pixels": upload(client, "classify", png_bytes(40, 40)),
            "no image field": client.post("/v1/classify", data={"top_k": "2"},
                                          files={"other": ("a.txt", b"x", "text/plain")}),
            "no image in JSON": client.post("/v1/classify", json={"top_k": 2}),
            "bad base64": client.post("/v1/classify", json={"image": "%%%"}),
            "JSON not an object": client.post("/v1/classify", json=[1, 2]),
            "broken JSON": client.post("/v1/classify", content=b"{",
                                       headers={"content-type": "application/json"}),
        }
    for what, response in cases.items():
        assert response.status_code == 422, (what, response.text)
        assert set(response.json()) == {"error"}
    assert "limit of 900" in cases["too many pixels"].json()["error"]


def test_a_decompression_bomb_is_refused_before_decoding(service):
    buffer = io.BytesIO()
    Image.new("L", (6000, 6000)).save(buffer, format="PNG")  # 36 MP of zeros in ~40 KB
    with TestClient(create_app(service)) as client:
        response = upload(client, "classify", buffer.getvalue())
    assert response.status_code == 422 and "36000000 pixels" in response.json()["error"]


def test_wrong_content_type_is_415(service):
    with TestClient(create_app(service)) as client:
        plain = client.post("/v1/classify", content=b"abc", headers={"content-type": "text/plain"})
        none = client.post("/v1/classify", content=b"abc")
    assert plain.status_code == 415 and "text/plain" in plain.json()["error"]
    assert none.status_code == 415


def test_a_declared_body_over_the_limit_is_413(service):
    with TestClient(create_app(service, ServeConfig(max_upload_mb=0.01))) as client:
        response = upload(client, "classify", b"\0" * 20_000)
    assert response.status_code == 413 and "limit" in response.json()["error"]


def test_a_streamed_body_is_cut_off_at_the_limit(service):
    """Chunked, no Content-Length, and never finished: a server that read the whole body first would wait
    forever; this one answers 413 once the limit is passed."""
    head = (b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
    chunk = b"\0" * 4096
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5))  # 20 KB, no final 0-chunk
    with live_server(create_app(service, ServeConfig(max_upload_mb=0.01))) as url:
        reply = raw_request(url, head + body, timeout=10, wait_for_close=False)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]


def test_a_full_queue_is_503_with_retry_after(service):
    entered, release = threading.Event(), threading.Event()

    def blocking(images, top_k=5):
        entered.set()
        release.wait(10)
        return [[{"label": "cat", "index": 0, "score": 1.0}] for _ in images]

    blocked = Service({"classify": blocking}, service.info, what="a test model")
    app = create_app(blocked, ServeConfig(max_batch=1, batch_window_ms=0, queue_size=1))
    with TestClient(app) as client:
        replies = {}
        first = threading.Thread(target=lambda: replies.update(a=upload(client, "classify", png_bytes())))
        first.start()
        assert entered.wait(10)  # the model is busy with the first request
        second = threading.Thread(target=lambda: replies.update(b=upload(client, "classify", png_bytes())))
        second.start()
        deadline = time.monotonic() + 10
        while app.state.batcher.waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        third = upload(client, "classify", png_bytes())  # the queue (1) is full
        release.set()
        first.join(10)
        second.join(10)
    assert third.status_code == 503 and int(third.headers["retry-after"]) >= 1
    assert "busy" in third.json()["error"]
    assert replies["a"].status_code == replies["b"].status_code == 200


class Gate:
    """A pipeline wrapper that counts calls and holds the first one until released, so that the requests
    sent meanwhile all wait in the queue: how they are then batched does not depend on timing."""

    def __init__(self, pipe) -> None:
        self.pipe, self.calls = pipe, []
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, images, **options):
        self.calls.append((len(images), options))
        if len(self.calls) == 1:
            self.entered.set()
            self.release.wait(30)
        return self.pipe(images, **options)


def while_busy(client: TestClient, app, gate: Gate, requests: list[tuple[bytes, dict]],
               endpoint: str = "classify") -> list[dict]:
    """Send the first request; once the model holds it, send the others; once they all wait, release the
    model. Returns the JSON replies in order."""
    replies = [None] * len(requests)

    def ask(i: int) -> None:
        image, fields = requests[i]
        replies[i] = upload(client, endpoint, image, **fields)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(requests))]
    threads[0].start()
    assert gate.entered.wait(30)
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 30
    while app.state.batcher.waiting < len(requests) - 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.release.set()
    for t in threads:
        t.join(30)
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    return [r.json() for r in replies]


def test_concurrent_requests_run_as_one_batch(classifier, service):
    pipe = vitkit.pipeline("image-classification", classifier, device="cpu")
    gate = Gate(pipe)
    images = [png_bytes(seed=i) for i in range(8)]
    app = create_app(Service({"classify": gate}, service.info), ServeConfig(max_batch=8))
    with TestClient(app) as client:
        requests = [(png_bytes(), {"top_k": 1})] + [(b, {"top_k": 2}) for b in images]
        replies = while_busy(client, app, gate, requests)
    assert gate.calls == [(1, {"top_k": 1}), (8, {"top_k": 2})]  # 9 requests, 2 model calls
    assert [r["batch_size"] for r in replies] == [1] + [8] * 8
    for image, got in zip(images, replies[1:], strict=True):
        want = pipe(Image.open(io.BytesIO(image)), top_k=2)  # one image alone
        np.testing.assert_allclose([p["score"] for p in got["predictions"]], [w["score"] for w in want],
                                   atol=1e-6)
        assert [p["index"] for p in got["predictions"]] == [w["index"] for w in want]


def test_requests_with_different_options_are_not_batched_together(classifier, service):
    gate = Gate(vitkit.pipeline("image-classification", classifier, device="cpu"))
    app = create_app(Service({"classify": gate}, service.info), ServeConfig(max_batch=8))
    with TestClient(app) as client:
        while_busy(client, app, gate, [(png_bytes(), {"top_k": k}) for k in (3, 1, 2, 1, 2)])
    assert sorted((n, o["top_k"]) for n, o in gate.calls[1:]) == [(2, 1), (2, 2)]


def test_a_failure_inside_the_server_says_nothing_about_it(service):
    def broken(images, **options):
        raise RuntimeError("cannot open /srv/secret/weights.bin")

    app = create_app(Service({"classify": broken}, service.info))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = upload(client, "classify", png_bytes())
    assert response.status_code == 500
    assert "/srv" not in response.text and "Traceback" not in response.text
    assert response.json() == {"error": "internal server error (the server's log has the details)"}


def test_static_files_cannot_escape_their_folder(service):
    attempts = [b"/static/../../etc/passwd", b"/static/%2e%2e%2fetc/passwd",
                b"/static/..%2f..%2fetc%2fpasswd",
                b"/static/%2e%2e/%2e%2e/etc/passwd", b"/static/app.js/../../../etc/passwd",
                b"/static/..\\..\\etc\\passwd", b"/static//etc/passwd"]
    with live_server(create_app(service)) as url:
        for path in attempts:
            reply = raw_request(url, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert reply.startswith(b"HTTP/1.1 404"), (path, reply[:100])
            assert b"root:" not in reply
        page = raw_request(url, b"GET /static/app.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert page.startswith(b"HTTP/1.1 200") and b"text/javascript" in page


def test_responses_carry_security_headers(service):
    with TestClient(create_app(service)) as client:
        for response in (client.get("/"), client.get("/v1/model"), upload(client, "classify", b"x")):
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
            assert "default-src 'none'" in response.headers["content-security-policy"]
        page = client.get("/").text
    assert "http://" not in page and "https://" not in page  # nothing loads from elsewhere


def test_cli_serve_help_and_a_missing_extra(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "default: 127.0.0.1" in capsys.readouterr().out
    monkeypatch.setitem(__import__("sys").modules, "uvicorn", None)
    assert main(["serve", "--checkpoint", "x"]) == 2
    assert "pip install 'vitkit[serve]'" in capsys.readouterr().err


def test_cli_serve_warns_off_loopback(classifier, monkeypatch, capsys):
    import uvicorn

    ran = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(kw))
    assert main(["serve", "--checkpoint", str(classifier), "--device", "cpu"]) == 0
    assert ran["host"] == "127.0.0.1" and "warning" not in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(classifier), "--device", "cpu", "--host", "0.0.0.0"]) == 0
    assert ran["host"] == "0.0.0.0" and "warning: listening on 0.0.0.0" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(classifier), "--max-batch", "0"]) == 2


# ---- every endpoint against its pipeline -------------------------------------------------------------------
def decode_png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny random MAE and DPT (depth, segmentation) checkpoints."""
    root = tmp_path_factory.mktemp("models")
    paths = {}
    for kind, name in {"mae": "mae_vit_tiny_patch4_32", "depth": "dpt_tiny_depth",
                       "segment": "dpt_tiny_segment"}.items():
        torch.manual_seed(0)
        paths[kind] = vitkit.save_pretrained(vitkit.create_model(name), root / kind)
    return paths


def test_attention_equals_the_offline_pipeline(service, classifier):
    image = png_bytes(30, 40)
    pipe = vitkit.pipeline("attention", classifier, device="cpu")
    with TestClient(create_app(service)) as client:
        rollout = upload(client, "attention", image).json()
        head = upload(client, "attention", image, method="cls", layer=0, head=1).json()
    pil = Image.open(io.BytesIO(image))
    for got, options in ((rollout, {}), (head, {"method": "cls", "layer": 0, "head": 1})):
        want = pipe(pil, **options)
        np.testing.assert_array_equal(decode_png(got["overlay"]), want["overlay"])
        np.testing.assert_allclose(decode_png(got["map"]) / 255, want["map"], atol=0.5 / 255 + 1e-6)
        assert got["grid"] == want["grid"] and got["titles"] == want["titles"]
        assert got["prediction"]["index"] == want["prediction"]["index"]
    assert "head 1" in head["titles"][0]


def test_reconstruct_requests_batch_with_their_own_seeds(checkpoints):
    pipe = vitkit.pipeline("mae-reconstruction", checkpoints["mae"], device="cpu")
    service = load_service(checkpoints["mae"], device="cpu")
    assert list(service.pipelines) == ["reconstruct", "attention"]
    gate = Gate(service.pipelines["reconstruct"])
    app = create_app(Service({**service.pipelines, "reconstruct": gate}, service.info),
                     ServeConfig(max_batch=8))
    images = [png_bytes(32, 32, seed=i) for i in range(4)]
    seeds = [7, 3, 7, 0]
    with TestClient(app) as client:
        assert client.get("/v1/model").json()["config"]["mask_ratio"] == 0.75
        requests = [(png_bytes(32, 32, seed=9), {"mask_ratio": 0.25, "seed": 1})]
        requests += [(image, {"mask_ratio": 0.5, "seed": s}) for image, s in zip(images, seeds, strict=True)]
        replies = while_busy(client, app, gate, requests, endpoint="reconstruct")
        classify = upload(client, "classify", images[0])
    assert classify.status_code == 404 and "reconstruct, attention" in classify.json()["error"]
    # 5 requests, 2 model calls: mask_ratio groups requests, each image keeps its own seed
    (n0, first), (n1, second) = gate.calls
    assert (n0, first, n1, second["mask_ratio"]) == (1, {"mask_ratio": 0.25, "seed": [1]}, 4, 0.5)
    assert sorted(second["seed"]) == sorted(seeds)  # in arrival order, which the threads decide
    assert [r["batch_size"] for r in replies] == [1, 4, 4, 4, 4]
    for image, seed, got in zip(images, seeds, replies[1:], strict=True):
        assert got["options"] == {"mask_ratio": 0.5, "seed": seed}
        want = pipe(Image.open(io.BytesIO(image)), mask_ratio=0.5, seed=seed)  # the image alone, offline
        for key in ("original", "masked"):
            np.testing.assert_array_equal(decode_png(got[key]), want[key])
        for key in ("reconstruction", "reconstruction_visible"):  # a batch of 4 may round a pixel otherwise
            np.testing.assert_allclose(decode_png(got[key]), want[key], atol=1)
        assert got["loss"] == pytest.approx(want["loss"], abs=1e-6)
    assert not np.array_equal(decode_png(replies[1]["masked"]), decode_png(replies[2]["masked"]))


def test_depth_equals_the_pipeline_within_its_16_bit_encoding(checkpoints):
    image = png_bytes(40, 56)
    pipe = vitkit.pipeline("depth-estimation", checkpoints["depth"], device="cpu")
    want = pipe(Image.open(io.BytesIO(image)))
    with TestClient(create_app(load_service(checkpoints["depth"], device="cpu"))) as client:
        got = upload(client, "depth", image).json()
    raw = got["depth"]
    lo, hi = raw["min"], raw["max"]
    depth = lo + decode_png(raw["png"]).astype(np.float64) / 65535 * (hi - lo)
    assert raw["shape"] == [40, 56] and got["kind"] == want["kind"]
    assert lo == pytest.approx(float(want["depth"].min())) and hi == pytest.approx(float(want["depth"].max()))
    np.testing.assert_allclose(depth, want["depth"], atol=(hi - lo) / 65535)
    assert decode_png(got["image"]).shape == (40, 56, 3)
    assert len(got["legend"]["colors"]) == 11 and got["legend"]["min"] == lo


def test_large_images_are_reduced_before_dense_endpoints(checkpoints):
    image = png_bytes(40, 56)
    pipe = vitkit.pipeline("depth-estimation", checkpoints["depth"], device="cpu")
    app = create_app(load_service(checkpoints["depth"], device="cpu"), ServeConfig(max_side=28))
    with TestClient(app) as client:
        got = upload(client, "depth", image).json()
    assert got["resized_from"] == [40, 56] and got["depth"]["shape"] == [20, 28]
    reduced = Image.open(io.BytesIO(image)).convert("RGB").resize((28, 20), Image.Resampling.BICUBIC)
    assert got["depth"]["max"] == pytest.approx(float(pipe(reduced)["depth"].max()))


def test_segment_equals_the_pipeline(checkpoints):
    image = png_bytes(40, 56)
    want = vitkit.pipeline("image-segmentation", checkpoints["segment"], device="cpu")(
        Image.open(io.BytesIO(image)))
    with TestClient(create_app(load_service(checkpoints["segment"], device="cpu"))) as client:
        got = upload(client, "segment", image).json()
    np.testing.assert_array_equal(decode_png(got["mask"]), want["labels"])
    np.testing.assert_array_equal(decode_png(got["overlay"]), want["overlay"])
    assert [c["name"] for c in got["classes"]] == want["present"]
    assert sum(c["fraction"] for c in got["classes"]) == pytest.approx(1.0, abs=1e-4)
    assert all(c["color"].startswith("#") and len(c["color"]) == 7 for c in got["classes"])
