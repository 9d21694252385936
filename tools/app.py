"""A web page for trained generators: type a sentence, get images of every stage, attention maps or masks, scores.

`python -m tools.app --run output/demo/<model>_rnn [--run <another run folder> ...]` serves the page on
http://127.0.0.1:8000 (`--host`, `--port`); a run folder gives its `config.yml` (written by main.py), its newest
generator and the DAMSM encoders the config names. `--cfg FILE --set TRAIN.NET_G=...` names a model without a run
folder (and `--cfg` is the config of run folders written before main.py saved one). Several `--run` give a picker.
`--screenshot out.png` renders the page for the first example sentence in headless Chromium and exits.

The server is Python's own `http.server`: one static page (tools/app_static) and a JSON API, `GET /api/info` and
`POST /api/generate` ({model, sentence, variants, seed, truncation} -> images as PNG data URLs). Models are loaded
once at start; one lock queues the requests, so they never run in parallel. Nothing the browser sends names a
file or a config key; sentence length, word count and the number of variants are bounded.
"""
from __future__ import annotations

import argparse
import base64
import difflib
import io
import json
import math
import os
import shutil
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
import torch.nn.functional as F
from PIL import Image

from datasets import build_dataset
from miscc.config import RUN_CONFIG, add_config_arguments, config_from_args, load_config, parse_overrides
from miscc.errors import InputError, MissingFileError, run_cli
from miscc.text import cut_sentence, tokenize_caption
from miscc.vis import attention_tile, image_grid, to_uint8
from models.registry import get_family
from trainers.common import load_damsm
from trainers.runtime import setup_runtime
from trainers.sampling import example_entries, sample_sentences

MAX_CHARS = 300  # sentence length the page accepts
MAX_VARIANTS = 16
MAX_BODY = 16 * 1024  # bytes of a request
MAX_EXAMPLES = 40  # example sentences listed on the page
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "app_static")


class RequestError(ValueError):
    """A request the page can explain: HTTP 400 with `message` and, for sentences, what happened to the words."""

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.details = details


def png_data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # fast: these travel once over localhost
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _pil(image: torch.Tensor, min_size: int = 0) -> Image.Image:
    """One [3, H, W] image in [-1, 1] as a PIL image, upscaled (bilinear) to at least `min_size`."""
    out = Image.fromarray(to_uint8(image[None])[0])
    if out.width < min_size:
        out = out.resize((min_size, min_size), Image.BILINEAR)
    return out


@dataclass
class AppModel:
    """One generator with its text and image encoders, vocabulary and example sentences, loaded once."""
    name: str
    cfg: dict  # the EasyDict of miscc.config
    net_g: str
    device: torch.device
    spec: object = field(init=False)

    def __post_init__(self):
        cfg = self.cfg
        self.spec = get_family(cfg.MODEL)
        if not self.spec.uses_text_dataset(cfg):
            raise InputError(f"{self.name}: this {self.spec.title} model reads precomputed "
                             f"{self.spec.text_source(cfg)} embeddings, so it cannot encode typed sentences")
        self.dataset = build_dataset(cfg, "test", augment=False, cache_images=0)  # the vocabulary / tokenizer
        self.net, self.net_g = self.spec.open_generator(cfg, self.net_g, self.device)
        self.text_encoder, self.image_encoder = load_damsm(cfg, self.dataset.n_words, self.device)
        self.words_num = cfg.TEXT.WORDS_NUM
        self.vocabulary = sorted(w for w in self.dataset.wordtoix if w != "<end>") \
            if self.dataset.bert_tokenizer is None else []
        self.examples = self._examples()

    def _examples(self) -> list[str]:
        try:
            entries = example_entries(self.dataset.data_dir)
        except FileNotFoundError as e:
            warnings.warn(f"{self.name}: no example sentences ({e})")
            return []
        return [s for _, sentences, _ in entries for s in sentences][:MAX_EXAMPLES]

    def info(self) -> dict:
        return {"name": self.name, "family": self.spec.title, "text_encoder": self.cfg.TEXT.ENCODER,
                "generator": os.path.basename(self.net_g), "words_num": self.words_num, "examples": self.examples}

    def prepare(self, sentence: str) -> tuple[str, dict]:
        """(text to encode, report): out-of-vocabulary words dropped with the closest vocabulary words, the
        sentence cut to TEXT.WORDS_NUM; a RequestError when nothing is left."""
        with warnings.catch_warnings(record=True) as caught:  # cut_sentence warns; the page shows it
            warnings.simplefilter("always")
            sentence = cut_sentence(sentence, self.words_num, "The sentence")
        notes = [str(w.message) for w in caught]
        tokenizer = self.dataset.bert_tokenizer
        tokens = tokenizer.tokenize(sentence) if tokenizer is not None else tokenize_caption(sentence)
        if not tokens:
            raise RequestError("Type a sentence: this one has no words.", dropped=[], warnings=[])
        known, dropped = tokens, []  # WordPiece has no unknown words
        if tokenizer is None:
            known = [w for w in tokens if w in self.dataset.wordtoix]
            dropped = [{"word": w, "suggestions": difflib.get_close_matches(w, self.vocabulary, n=3, cutoff=0.6)}
                       for w in tokens if w not in self.dataset.wordtoix]
        if not known:
            raise RequestError(f"None of the words is in this model's vocabulary ({len(self.vocabulary)} words from "
                               "its training captions), so there is nothing to draw. Try the suggestions or an "
                               "example sentence.", dropped=dropped, warnings=notes)
        text = tokenizer.convert_tokens_to_string(known) if tokenizer is not None else " ".join(known)
        return text, {"dropped": dropped, "warnings": notes}

    def _views(self, noise, sent_emb, words_emb, mask):
        """(stage images, attention maps, masks) of the family's generator."""
        if self.spec.generate_masks is not None:
            stages, masks = self.spec.generate_masks(self.net, noise, sent_emb, words_emb, mask)
            return stages, [], masks
        stages, att_maps = self.spec.generate_stages(self.net, noise, sent_emb, words_emb, mask)
        return stages, att_maps, []

    @torch.no_grad()
    def generate(self, sentence: str, variants: int, seed: int, truncation: float | None) -> dict:
        """The page's answer for one sentence: per variant its stage images, maps and DAMSM score, and a grid."""
        text, report = self.prepare(sentence)
        (stages, att_maps, masks), enc = sample_sentences(
            self._views, self.text_encoder, self.dataset, [text] * variants, z_dim=self.cfg.GAN.Z_DIM,
            device=self.device, seed=seed, truncation=truncation, source="the page")
        image_code = self.image_encoder(stages[-1].float())[1].float()
        scores = F.cosine_similarity(image_code, enc.sent_emb, dim=1).tolist()
        words = enc.words[0]
        first_att = len(stages) - len(att_maps)  # attention map k is drawn on the image of stage first_att + k
        out = []
        for i in range(variants):
            item = {"index": i, "score": scores[i], "attention": [], "masks": [],
                    "stages": [{"label": f"stage {k + 1} · {s.size(-1)}×{s.size(-1)}",
                                "png": png_data_url(_pil(s[i]))} for k, s in enumerate(stages)]}
            for k, att in enumerate(att_maps):
                stage = first_att + k
                base = _pil(stages[stage][i], min_size=64)
                item["attention"].append({
                    "label": f"word attention of stage {stage + 1} ({stages[stage].size(-1)} px)",
                    "maps": [{"word": w, "png": png_data_url(attention_tile(base, att[i, t]))}
                             for t, w in enumerate(words)]})
            for m in masks:
                grey = (m[i, 0].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
                item["masks"].append({"label": f"mask {m.size(-1)}×{m.size(-1)}",
                                      "png": png_data_url(Image.fromarray(grey))})
            out.append(item)
        grid = image_grid(stages[-1].float().cpu(), [f"#{i + 1}  DAMSM {s:.3f}" for i, s in enumerate(scores)],
                          ncol=min(4, variants), title=f'"{sentence.strip()}" ({self.name}, seed {seed})')
        return {"model": self.name, "sentence": sentence, "used": text, "words": words, **report,
                "seed": seed, "truncation": truncation, "variants": out, "grid": png_data_url(grid)}


def _integer(payload: dict, key: str, low: int, high: int, default: int) -> int:
    value = payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"{key} must be a whole number from {low} to {high}, got {value!r}")
    return value


class App:
    """The request handler: validates the page's JSON and runs one generation at a time (a lock queues them)."""

    def __init__(self, models: list[AppModel], max_variants: int = MAX_VARIANTS):
        if not models:
            raise ValueError("no model to serve")
        self.models = models
        self.max_variants = max_variants
        self.lock = threading.Lock()

    def info(self) -> dict:
        return {"models": [m.info() for m in self.models], "max_variants": self.max_variants,
                "max_chars": MAX_CHARS}

    def parse(self, payload) -> tuple[AppModel, dict]:
        """(model, generate() keyword arguments) of a request, or a RequestError saying what is wrong."""
        if not isinstance(payload, dict):
            raise RequestError("the request must be a JSON object")
        allowed = {"model", "sentence", "variants", "seed", "truncation"}
        extra = sorted(set(payload) - allowed)
        if extra:
            raise RequestError(f"unknown request fields {extra}; the page sends only {sorted(allowed)}")
        model = self.models[_integer(payload, "model", 0, len(self.models) - 1, 0)]
        sentence = payload.get("sentence")
        if not isinstance(sentence, str):
            raise RequestError("sentence must be text")
        if len(sentence) > MAX_CHARS:
            raise RequestError(f"The sentence has {len(sentence)} characters; the page takes at most {MAX_CHARS}.")
        truncation = payload.get("truncation")
        if truncation is not None and (isinstance(truncation, bool) or not isinstance(truncation, (int, float))
                                       or not math.isfinite(truncation) or not 0 < truncation <= 2):
            raise RequestError(f"truncation must be empty (off) or a number in (0, 2], got {truncation!r}")
        variants = _integer(payload, "variants", 1, self.max_variants, min(8, self.max_variants))
        return model, {"sentence": sentence, "variants": variants,
                       "seed": _integer(payload, "seed", 0, 2 ** 31 - 1, 0),
                       "truncation": None if truncation is None else float(truncation)}

    def handle(self, payload) -> tuple[int, dict]:
        """(HTTP status, JSON answer) of one generate request; the lock makes concurrent requests wait their turn."""
        try:
            model, kwargs = self.parse(payload)
            with self.lock:
                start = time.perf_counter()
                answer = model.generate(**kwargs)
            answer["elapsed_ms"] = round((time.perf_counter() - start) * 1000)
            return 200, answer
        except RequestError as e:
            return 400, {"error": str(e), **e.details}
        except Exception as e:  # a bug or a broken model: the page shows the message, the console the traceback
            traceback.print_exc()
            return 500, {"error": f"generation failed: {type(e).__name__}: {e}"}


def _static_files() -> dict[str, tuple[bytes, str]]:
    types = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
             "app.css": "text/css; charset=utf-8"}
    files = {}
    for name, kind in types.items():
        with open(os.path.join(STATIC, name), "rb") as f:
            files["/" if name == "index.html" else "/" + name] = (f.read(), kind)
    return files


def make_server(app: App, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """An HTTP server for `app` (not started; port 0 picks a free one). Requests naming another host than the
    one served are refused (DNS rebinding), and POSTs must be JSON (a cross-site form cannot send one)."""
    static = _static_files()
    loopback = host in ("127.0.0.1", "localhost", "::1")

    class Handler(BaseHTTPRequestHandler):
        server_version = "t2i-app"

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: dict) -> None:
            self._send(status, json.dumps(obj).encode("utf-8"), "application/json")

        def _host_ok(self) -> bool:
            name = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
            if loopback and name not in ("127.0.0.1", "localhost", "::1"):
                self._json(403, {"error": f"this server answers for {host}, not {name!r}"})
                return False
            return True

        def do_GET(self):
            if not self._host_ok():
                return
            path = self.path.split("?", 1)[0]
            if path == "/api/info":
                self._json(200, app.info())
            elif path in static:
                self._send(200, *static[path])
            else:
                self._json(404, {"error": f"no page {path}"})

        def do_POST(self):
            if not self._host_ok():
                return
            if self.path != "/api/generate":
                return self._json(404, {"error": f"no API {self.path}"})
            if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
                return self._json(415, {"error": "send the request as application/json"})
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self._json(411, {"error": "Content-Length is required"})
            if not 0 <= length <= MAX_BODY:
                return self._json(413, {"error": f"request larger than {MAX_BODY} bytes"})
            try:
                payload = json.loads(self.rfile.read(length).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                return self._json(400, {"error": f"the request is not JSON: {e}"})
            status, answer = app.handle(payload)
            if status == 200:
                print(f"{answer['model']}: {len(answer['variants'])} variants of {answer['used']!r} in "
                      f"{answer['elapsed_ms']} ms", flush=True)
            self._json(status, answer)

        def log_message(self, fmt, *args):  # requests are summarised above; errors still reach stderr
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def run_config(run_dir: str, cfg_file: str | None, overrides: dict) -> tuple[dict, str]:
    """(config, generator path) of a run folder: its config.yml (else `cfg_file`) with `overrides`, and
    TRAIN.NET_G if overridden, else the newest snapshot in `Model/`. An SSA-GAN that fine-tuned its text encoder
    is sampled with the encoder saved with that snapshot, as main.py does."""
    model_dir = os.path.join(run_dir, "Model")
    if not os.path.isdir(model_dir):
        raise MissingFileError(f"{run_dir} is not a run folder of main.py: it has no Model/ folder of snapshots")
    saved = os.path.join(run_dir, RUN_CONFIG)
    if os.path.isfile(saved):
        cfg = load_config(saved, overrides)
    elif cfg_file:
        cfg = load_config(cfg_file, overrides)
    else:
        raise MissingFileError(f"{saved} not found: main.py writes it when it trains; for an older run folder "
                                "give the config it was trained with, --cfg FILE")
    family = get_family(cfg.MODEL)
    net_g = cfg.TRAIN.NET_G if "TRAIN.NET_G" in overrides else family.latest_generator(model_dir)
    family.use_trained_text_encoder(cfg, net_g)
    return cfg, net_g


def load_models(args) -> list[AppModel]:
    """The models the command line names: every `--run`, or the `--cfg`/`--set` config with TRAIN.NET_G."""
    if not args.run:
        if not args.cfg_file:
            raise InputError("give a run folder (--run output/demo/<model>_rnn) or a config (--cfg FILE --set "
                             "TRAIN.NET_G=...)")
        cfg = config_from_args(args)
        if not cfg.TRAIN.NET_G:
            raise InputError("--cfg without --run needs the generator: --set TRAIN.NET_G=<netG file>")
        specs = [(cfg.CONFIG_NAME or os.path.splitext(os.path.basename(args.cfg_file))[0], cfg, cfg.TRAIN.NET_G)]
    else:
        overrides = parse_overrides(args.overrides)
        for key, value in (("GPU_ID", args.gpu_id), ("DATA_DIR", args.data_dir), ("SEED", args.manualSeed)):
            if value is not None:
                overrides[key] = value
        if "TRAIN.NET_G" in overrides and len(args.run) > 1:
            raise InputError("TRAIN.NET_G names one generator; give one --run with it")
        specs = [(os.path.basename(os.path.normpath(r)), *run_config(r, args.cfg_file, overrides)) for r in args.run]
    names = [name for name, _, _ in specs]
    models = []
    for name, cfg, net_g in specs:
        label = name if names.count(name) == 1 else f"{name} ({len(models) + 1})"
        models.append(AppModel(label, cfg, net_g, setup_runtime(cfg.GPU_ID).device))
        print(f"loaded {label}: {get_family(cfg.MODEL).title}, {net_g}", flush=True)
    return models


def find_chromium() -> tuple[str, str] | None:
    """(browser, chromedriver) executables of the system (Debian's chromium and chromium-driver), or None."""
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def headless_chromium(width: int = 1280, height: int = 900):
    """A Selenium driver for the system's headless Chromium; Selenium Manager is never asked to download one."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_chromium()
    if found is None:
        raise RuntimeError("chromium and chromedriver not found (Debian: apt-get install chromium chromium-driver)")
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width},{height}", "--disable-extensions", "--no-first-run"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=found[1]), options=options)


def screenshot(app: App, path: str, sentence: str | None = None, variants: int = 3) -> str:
    """Serve `app` on a free port, generate `sentence` (default: the first example) in headless Chromium, and save
    the page as a PNG at `path` (the README's picture)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    sentence = sentence or (app.models[0].examples or ["a red circle"])[0]
    server = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    driver = headless_chromium(1100, 900)
    try:
        driver.get(f"http://127.0.0.1:{server.server_address[1]}/")
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
        box = driver.find_element(By.ID, "sentence")
        box.clear()
        box.send_keys(sentence)
        driver.find_element(By.ID, "variants").clear()
        driver.find_element(By.ID, "variants").send_keys(str(variants))
        driver.find_element(By.ID, "generate").click()
        WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".variant") and d.execute_script(
            "return [...document.images].every(i => i.complete)"))
        height, chrome = driver.execute_script("return [document.documentElement.scrollHeight, "
                                               "window.outerHeight - window.innerHeight]")
        driver.set_window_size(1100, min(int(height) + int(chrome) + 4, 3000))
        png = driver.get_screenshot_as_png()
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(path, optimize=True)  # a small file for git
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", default=[], metavar="FOLDER",
                        help="a run folder of main.py (repeat for a model picker)")
    add_config_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (0: a free one)")
    parser.add_argument("--max_variants", type=int, default=MAX_VARIANTS, help="most variants per request")
    parser.add_argument("--screenshot", metavar="PNG", help="save a picture of the page in use and exit")
    parser.add_argument("--sentence", help="the sentence of --screenshot (default: the first example)")
    args = parser.parse_args(argv)
    if not 1 <= args.max_variants <= 64:
        parser.error("--max_variants must be from 1 to 64")
    app = App(load_models(args), args.max_variants)
    if args.screenshot:
        print(f"wrote {screenshot(app, args.screenshot, args.sentence)}")
        return 0
    server = make_server(app, args.host, args.port)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: other machines can reach this page", flush=True)
    host, port = server.server_address[:2]
    print(f"serving on http://{'[' + host + ']' if ':' in host else host}:{port}/ (Ctrl+C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
